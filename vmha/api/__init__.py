"""What operators and other services call: the local HTTP endpoint and
the RPC server.  Both show ``vmha.manager.inventory`` rows and
``vmha.manager.health`` checks; neither decides anything."""
