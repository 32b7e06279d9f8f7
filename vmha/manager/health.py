"""Is the agent itself alive?  The answer behind /healthz and the
systemd watchdog.

A monitor can wedge silently while its process looks fine (a listener
blocked forever, a libvirt call that never returns): the worst field
failure of the peers.  Every loop of vmha (``vmha.supervision``) wakes
at least once a second even when idle, so each keeps a "last turned
over" time; one older than ``stall_timeout`` means a wedged loop.
``HealthCheck`` reads them from a list: one check per loop.

* ``dispatcher``, ``audit`` and ``guest_agent`` (and every monitor to
  come): turned over within ``stall_timeout``.  They gate the systemd
  watchdog (``turning_over``): restarting the agent is the cure.
* ``outbox_sender``: the same bound; /healthz only, since a slow sink
  holds it and a restart would not speed the sink up.
* ``journal``: the last write committed.  While writes fail, decisions
  wait in memory (``pending``) and are retried; an agent that cannot
  record what it decides is not healthy, so this gates the watchdog too.
* ``libvirt``: not disconnected for longer than
  ``disconnected_timeout``.  Only /healthz fails on it: a restart would
  not bring libvirtd back.
"""

from vmha import supervision


class DispatcherLoop(supervision.SupervisedLoop):
    """The event dispatcher as health sees it, through the virt driver
    (which runs it below the manager)."""

    check_name = 'dispatcher'
    description = 'event dispatcher'

    def __init__(self, driver):
        self._driver = driver

    def turnover_age(self):
        return self._driver.dispatch_stats().turnover_age

    def health_details(self):
        return {'queue_depth': self._driver.dispatch_stats().queue_depth}


class HealthCheck:
    """:param driver: the virt driver (``dispatch_stats``,
        ``connection_stats``)
    :param loops: the ``SupervisedLoop`` s besides the dispatcher, in
        the order of their checks (the audit, the monitors, the outbox
        sender)
    :param journal: the ``Journal``, or None
    :param writers: the components that keep the writes the journal
        refused (the failure monitor, the guest-agent monitor)
    :param stall_timeout: seconds a loop may go without turning over
    :param disconnected_timeout: seconds libvirt may stay lost
    """

    def __init__(self, driver, loops, stall_timeout, disconnected_timeout,
                 journal=None, writers=()):
        self._driver = driver
        self._loops = [DispatcherLoop(driver)] + list(loops)
        self._journal = journal
        # What keeps writes the journal refused (``pending_writes()``).
        self._writers = list(writers)
        self._stall_timeout = stall_timeout
        self._disconnected_timeout = disconnected_timeout

    def checks(self):
        """``{name: {'ok': bool, ...}}`` for every check."""
        checks = {}
        for loop in self._loops:
            age = loop.turnover_age()
            checks[loop.check_name] = dict(
                {'ok': age <= self._stall_timeout, 'age': round(age, 3)},
                **loop.health_details())
        if self._journal is not None:
            failing_for = self._journal.write_failing_for()
            checks['journal'] = {
                'ok': failing_for is None,
                'failing_for': (None if failing_for is None
                                else round(failing_for, 1)),
                'error': (None if failing_for is None
                          else self._journal.last_write_error),
                'pending': sum(writer.pending_writes()
                               for writer in self._writers)}
        connection = self._driver.connection_stats()
        lost_for = connection.disconnected_for
        checks['libvirt'] = {
            'ok': connection.connected or lost_for is None
            or lost_for <= self._disconnected_timeout,
            'connected': connection.connected,
            'disconnected_for': (None if lost_for is None
                                 else round(lost_for, 1)),
            'reconnects': connection.reconnects}
        return checks

    def report(self):
        """The /healthz body: ``{'status': 'ok'|'unhealthy', 'checks'}``."""
        checks = self.checks()
        healthy = all(check['ok'] for check in checks.values())
        return {'status': 'ok' if healthy else 'unhealthy', 'checks': checks}

    def turning_over(self):
        """True while every loop turns over and the journal takes
        writes: what the systemd watchdog is fed on."""
        checks = self.checks()
        gating = [loop.check_name for loop in self._loops
                  if loop.gates_watchdog] + ['journal']
        return all(checks[name]['ok'] for name in gating if name in checks)

    def problems(self, checks=None):
        """One readable phrase per failing check."""
        checks = checks if checks is not None else self.checks()
        phrases = []
        for loop in self._loops:
            check = checks.get(loop.check_name)
            if check is not None and not check['ok']:
                phrases.append('%s has not turned over for %.1fs'
                               % (loop.description, check['age']))
        journal = checks.get('journal')
        if journal is not None and not journal['ok']:
            phrases.append('journal cannot be written for %.1fs, %d '
                           'write(s) waiting: %s'
                           % (journal['failing_for'], journal['pending'],
                              journal['error']))
        libvirt = checks['libvirt']
        if not libvirt['ok']:
            phrases.append('libvirt disconnected for %.0fs'
                           % libvirt['disconnected_for'])
        return phrases
