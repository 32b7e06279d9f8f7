"""A loop that stamps its turnover: what /healthz and the systemd
watchdog read to tell a wedged loop from a quiet one.

Every long-running loop of vmha (the event dispatcher, the power-state
audit, the guest-agent monitor, the outbox sender, and every monitor to
come) wakes at least every ``HEARTBEAT`` seconds, idle or not, and calls
``stamp_turnover()`` each time it wakes and after each piece of work.  A
``turnover_age()`` well past ``HEARTBEAT`` therefore means the loop is
stuck in one call, not that the host is quiet.  ``HealthCheck`` reads a
list of these loops: a new monitor joins /healthz by being in the list.
"""

import time

# Longest a supervised loop sleeps, idle or not (seconds).
HEARTBEAT = 1.0


class SupervisedLoop:
    """Base of a loop that health watches.

    A subclass sets ``check_name`` (its /healthz check), ``description``
    (how problems name it) and ``gates_watchdog`` (whether a stall starves
    the systemd watchdog, i.e. restarting the agent is the cure), calls
    ``init_turnover(clock)`` in its constructor and ``stamp_turnover()``
    as it turns over.  ``health_details()`` adds fields to its check.
    """

    check_name: str | None = None
    description: str | None = None
    gates_watchdog = True

    def init_turnover(self, clock=time.monotonic):
        self._turnover_clock = clock
        self.last_turnover = clock()

    def stamp_turnover(self):
        self.last_turnover = self._turnover_clock()

    def turnover_age(self):
        """Seconds since the loop last turned over."""
        return self._turnover_clock() - self.last_turnover

    def health_details(self):
        """Extra fields of its /healthz check (none by default)."""
        return {}
