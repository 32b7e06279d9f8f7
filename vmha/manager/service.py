"""The vmha-agent service: the virt driver, the journal and the outbox.

Start-up order: open the journal (a damaged or unwritable database stops
the agent with a readable error), start the outbox sender (notifications
left undelivered by the last run go out first), connect to libvirt and
start dispatching events to the listeners, then run the power-state
audit at once, which compares every domain with what the journal knew
before the restart.  On SIGTERM or SIGINT: stop dispatching (held-back
STOPPED events are dropped and logged), stop the audit, then the sender;
rows it could not send stay in the outbox for the next start.

``vmha.agent.build`` wires the service: this module runs what it is
given and knows nothing of the surfaces (HTTP, RPC) that reach it.
"""

import logging
import signal
import threading

LOG = logging.getLogger(__name__)


class AgentService:
    """Runs one virt driver and its listeners until told to stop.

    :param driver: a ``vmha.virt.driver.VirtDriver``
    :param host: this compute host's name
    :param sender: the ``OutboxSender``, or None for no notifications
    :param listeners: callables registered on the driver, in order
    :param audit: the ``PowerStateAudit``, or None
    :param guest_monitor: the ``GuestAgentMonitor``, or None
    :param heartbeat_monitor: the ``HeartbeatMonitor``, or None (it is
        in ``monitors`` too; this is for the actions and the metrics)
    :param monitors: every ``monitor.Monitor`` to start and stop (by
        default the guest-agent monitor)
    :param actions: the ``action_runner.ActionRunner`` (lifecycle
        actions over RPC), or None
    """

    def __init__(self, driver, host, sender=None, listeners=(), audit=None,
                 guest_monitor=None, reporter=None, inventory=None,
                 health=None, metrics=None, monitors=None,
                 heartbeat_monitor=None, actions=None):
        self.driver = driver
        self.host = host
        self.sender = sender
        self.audit = audit
        self.guest_monitor = guest_monitor
        self.heartbeat_monitor = heartbeat_monitor
        self.reporter = reporter
        self.inventory = inventory
        self.health = health
        self.metrics = metrics
        self.actions = actions
        # The monitor.Monitor s: started after the audit, stopped in
        # reverse before the driver's cleanup (see vmha.manager.monitor).
        if monitors is None:
            monitors = [guest_monitor] if guest_monitor else []
        self.monitors = list(monitors)
        # Started after the monitors, stopped before them: the HTTP
        # endpoint, the RPC server, the systemd watchdog.
        self.surfaces = []
        self._listeners = list(listeners)
        self._stopped = threading.Event()

    def health_report(self):
        """The /healthz body."""
        return dict(self.health.report(), host=self.host)

    def status(self):
        """The /status body (and the RPC API's ``get_status``)."""
        return {'host': self.host, 'health': self.health_report(),
                'instances': self.inventory.instances()}

    def describe(self):
        """One line for systemd's STATUS."""
        dispatch = self.driver.dispatch_stats()
        return 'watching on %s: %d event(s) dispatched, %d decision(s)' % (
            self.host, dispatch.dispatched,
            self.reporter.decisions_total if self.reporter else 0)

    def start(self):
        if self.inventory is not None:
            self.inventory.load()
        if self.sender is not None:
            depth = self.sender.outbox.depth()
            if depth:
                LOG.info('%d notification(s) left undelivered by the last '
                         'run are sent first', depth)
            self.sender.start()
        self.driver.register_event_listener(self._log_event)
        for listener in self._listeners:
            self.driver.register_event_listener(listener)
        self.driver.init_host()
        instances = self.driver.list_instances()
        LOG.info('vmha-agent on %s watching %d domain(s)', self.host,
                 len(instances))
        if self.audit is not None:
            self.audit.start()
        for monitor in self.monitors:
            monitor.start()
        for surface in self.surfaces:
            surface.start()

    def _log_event(self, event):
        LOG.info('%s', event.describe())

    def handle_signals(self):
        """Stop on SIGTERM or SIGINT from now on (before ``start``: a
        signal while starting must not kill the process half-way)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def wait(self):
        """Until a signal or ``stop``; then stop."""
        while not self._stopped.wait(1):
            pass
        self.stop()

    def _on_signal(self, signum, frame):
        LOG.info('Signal %d received; stopping', signum)
        self._stopped.set()

    def stop(self):
        self._stopped.set()
        for surface in reversed(self.surfaces):
            surface.stop()
        self.surfaces = []
        for monitor in reversed(self.monitors):
            monitor.stop()
        self.driver.cleanup()
        if self.audit is not None:
            self.audit.stop()
        if self.sender is not None:
            self.sender.stop()
            self.sender.sink.close()
