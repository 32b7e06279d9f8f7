"""Is the agent itself alive?  The answer behind /healthz and the
systemd watchdog.

A monitor can wedge silently while its process looks fine (a listener
blocked forever, a libvirt call that never returns): the worst field
failure of the peers.  vmha's event dispatcher and its audit loop wake
at least once a second even when idle, so each keeps a "last turned
over" time; one older than ``stall_timeout`` means a wedged loop.

* ``dispatcher`` and ``audit``: turned over within ``stall_timeout``.
  Both gate the systemd watchdog (``turning_over``): restarting the agent
  is the cure.
* ``libvirt``: not disconnected for longer than
  ``disconnected_timeout``.  Only /healthz fails on it: a restart would
  not bring libvirtd back.
"""

import time


class HealthCheck:
    """:param driver: the virt driver (``dispatch_stats``,
        ``connection_stats``)
    :param audit: the ``PowerStateAudit``, or None
    :param stall_timeout: seconds a loop may go without turning over
    :param disconnected_timeout: seconds libvirt may stay lost
    """

    def __init__(self, driver, audit, stall_timeout, disconnected_timeout,
                 clock=time.monotonic):
        self._driver = driver
        self._audit = audit
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
        """True while the dispatcher and the audit loop turn over: what
        the systemd watchdog is fed on."""
        checks = self.checks()
        return all(checks[name]['ok'] for name in ('dispatcher', 'audit')
                   if name in checks)

    def problems(self, checks=None):
        """One readable phrase per failing check."""
        checks = checks if checks is not None else self.checks()
        phrases = []
        for name in ('dispatcher', 'audit'):
            check = checks.get(name)
            if check is not None and not check['ok']:
                phrases.append('%s has not turned over for %.1fs'
                               % ('event dispatcher' if name == 'dispatcher'
                                  else 'power-state audit loop',
                                  check['age']))
        libvirt = checks['libvirt']
        if not libvirt['ok']:
            phrases.append('libvirt disconnected for %.0fs'
                           % libvirt['disconnected_for'])
        return phrases
