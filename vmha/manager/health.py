"""Is the agent itself alive?  The answer behind /healthz and the
systemd watchdog.

A monitor can wedge silently while its process looks fine (a listener
blocked forever, a libvirt call that never returns): the worst field
failure of the peers.  vmha's event dispatcher, its audit loop and the
guest-agent monitor's loop wake at least once a second even when idle,
so each keeps a "last turned over" time; one older than
``stall_timeout`` means a wedged loop.

* ``dispatcher``, ``audit`` and ``guest_agent``: turned over within
  ``stall_timeout``.  They gate the systemd watchdog (``turning_over``):
  restarting the agent is the cure.
* ``journal``: the last write committed.  While writes fail, decisions
  wait in memory (``pending``) and are retried; an agent that cannot
  record what it decides is not healthy, so this gates the watchdog too.
* ``libvirt``: not disconnected for longer than
  ``disconnected_timeout``.  Only /healthz fails on it: a restart would
  not bring libvirtd back.
"""

import time

_LOOPS = (('dispatcher', 'event dispatcher'),
          ('audit', 'power-state audit loop'),
          ('guest_agent', 'guest-agent monitor loop'))
_WATCHDOG_CHECKS = ('dispatcher', 'audit', 'guest_agent', 'journal')


class HealthCheck:
    """:param driver: the virt driver (``dispatch_stats``,
        ``connection_stats``)
    :param audit: the ``PowerStateAudit``, or None
    :param journal: the ``Journal``, or None
    :param guest_monitor: the ``GuestAgentMonitor``, or None
    :param writers: the components that keep the writes the journal
        refused (the failure monitor, the guest-agent monitor)
    :param stall_timeout: seconds a loop may go without turning over
    :param disconnected_timeout: seconds libvirt may stay lost
    """

    def __init__(self, driver, audit, stall_timeout, disconnected_timeout,
                 clock=time.monotonic, journal=None, guest_monitor=None,
                 writers=()):
        self._driver = driver
        self._audit = audit
        self._journal = journal
        self._guest_monitor = guest_monitor
        # What keeps writes the journal refused (``pending_writes()``).
        self._writers = list(writers)
        self._stall_timeout = stall_timeout
        self._disconnected_timeout = disconnected_timeout
        self._clock = clock

    def checks(self):
        """``{name: {'ok': bool, ...}}`` for every check."""
        dispatch = self._driver.dispatch_stats()
        checks = {'dispatcher': {
            'ok': dispatch.turnover_age <= self._stall_timeout,
            'age': round(dispatch.turnover_age, 3),
            'queue_depth': dispatch.queue_depth}}
        if self._audit is not None:
            age = self._clock() - self._audit.last_turnover
            checks['audit'] = {'ok': age <= self._stall_timeout,
                               'age': round(age, 3),
                               'runs': self._audit.runs}
        if self._guest_monitor is not None:
            age = self._guest_monitor.turnover_age()
            checks['guest_agent'] = {'ok': age <= self._stall_timeout,
                                     'age': round(age, 3)}
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
        return all(checks[name]['ok'] for name in _WATCHDOG_CHECKS
                   if name in checks)

    def problems(self, checks=None):
        """One readable phrase per failing check."""
        checks = checks if checks is not None else self.checks()
        phrases = []
        for name, loop in _LOOPS:
            check = checks.get(name)
            if check is not None and not check['ok']:
                phrases.append('%s has not turned over for %.1fs'
                               % (loop, check['age']))
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
