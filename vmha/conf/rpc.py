"""Options of the [rpc] group: the agent's RPC server."""

from oslo_config import cfg

from vmha.conf import base

rpc_group = cfg.OptGroup('rpc', title='RPC API')

rpc_opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help="""
Serve the RPC API (``vmha.rpcapi``) on topic ``vmha-agent``, server
``[DEFAULT] host``.

It lists the monitored instances, runs an audit on demand, and enables or
disables the monitoring of one instance.  The server needs
``[DEFAULT] transport_url``; without it the RPC API is off whatever this
option says.

Related options:

* ``[DEFAULT] transport_url``
* ``[DEFAULT] host``
* ``allow_changes``
"""),
    cfg.BoolOpt('allow_changes',
                default=True,
                help="""
Let RPC clients change what the agent monitors (``set_monitoring``).

Each change is journaled with an ``instance.monitoring`` notification
naming who asked (the user, project and request id of the RPC context).

Possible values:

* true (default): ``set_monitoring`` enables or disables the monitoring
  of one instance.
* false: the RPC API is read-only; ``set_monitoring`` is refused with
  ``ChangesRefused`` and changes nothing.  Listing, status and audits
  still work.

Related options:

* ``enabled``
"""),
]


def register_opts(conf):
    base.register_group(conf, rpc_group, rpc_opts)


def list_opts():
    return {rpc_group: rpc_opts}
