"""Is the bridge itself alive?  The answer behind its /healthz and the
systemd watchdog.

Two checks, like the agent's (``vmha.manager.health``):

* ``listener``: the bridge consumes from the bus, and no notification
  has stayed in its hands (received, not yet acknowledged or requeued)
  for longer than ``[bridge] stall_timeout``.  An idle bridge holds
  nothing and is healthy; a bridge whose executor threads are stuck
  holds a notification for ever.  This check feeds the systemd watchdog
  (``turning_over``): restarting the bridge is the cure, and the broker
  redelivers what it held.
* ``masakari``: Masakari has not been failing (no answer, or an answer
  other than 2xx, 400 or 409) for longer than ``[bridge]
  masakari_failing_timeout``.  Any answer that settles a notification,
  a rejection too, counts as working.  Only /healthz fails on it: a
  restart would not bring Masakari back, and the failures wait on the
  bus meanwhile.

A lost broker is not a check of its own: oslo.messaging reconnects by
itself and logs every attempt, and restarting the bridge would not bring
the broker back.
"""

import threading
import time


class MasakariReachability:
    """Since when Masakari has been failing; thread safe.

    ``observe(status)`` after each request (None: no answer).
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.failing_since = None
        self.last_status = None
        self.requests = 0

    def observe(self, status):
        with self._lock:
            self.requests += 1
            self.last_status = status
            if _settles(status):
                self.failing_since = None
            elif self.failing_since is None:
                self.failing_since = self._clock()

    def failing_for(self):
        """Seconds Masakari has been failing, or None while it answers."""
        with self._lock:
            if self.failing_since is None:
                return None
            return max(0.0, self._clock() - self.failing_since)


def _settles(status):
    return status is not None and (200 <= status < 300
                                   or status in (400, 409))


class BridgeHealth:
    """:param listener: the ``BridgeListener`` (``stats()``)
    :param masakari: a ``MasakariReachability``
    :param stall_timeout: seconds a notification may stay in hand
    :param failing_timeout: seconds Masakari may keep failing
    """

    def __init__(self, listener, masakari, stall_timeout, failing_timeout):
        self._listener = listener
        self._masakari = masakari
        self._stall_timeout = stall_timeout
        self._failing_timeout = failing_timeout

    def checks(self):
        """``{name: {'ok': bool, ...}}`` for every check."""
        stats = self._listener.stats()
        failing_for = self._masakari.failing_for()
        return {
            'listener': {
                'ok': stats.running
                and stats.oldest_age <= self._stall_timeout,
                'running': stats.running,
                'in_hand': stats.in_hand,
                'oldest_age': round(stats.oldest_age, 3),
                'received': stats.received},
            'masakari': {
                'ok': failing_for is None
                or failing_for <= self._failing_timeout,
                'failing_for': (None if failing_for is None
                                else round(failing_for, 1)),
                'last_status': self._masakari.last_status,
                'requests': self._masakari.requests},
        }

    def report(self):
        """The /healthz body: ``{'status': 'ok'|'unhealthy', 'checks'}``."""
        checks = self.checks()
        healthy = all(check['ok'] for check in checks.values())
        return {'status': 'ok' if healthy else 'unhealthy', 'checks': checks}

    def turning_over(self):
        """True while the listener runs and turns over: what the systemd
        watchdog is fed on."""
        return self.checks()['listener']['ok']

    def problems(self, checks=None):
        """One readable phrase per failing check."""
        checks = checks if checks is not None else self.checks()
        phrases = []
        listener = checks['listener']
        if not listener['running']:
            phrases.append('not consuming from the bus')
        elif not listener['ok']:
            phrases.append('a notification has been in hand for %.1fs'
                           % listener['oldest_age'])
        masakari = checks['masakari']
        if not masakari['ok']:
            phrases.append('Masakari failing for %.0fs'
                           % masakari['failing_for'])
        return phrases
