"""When to try a failed journal write again.

A write that failed (``JournalError``: the lock held past busy_timeout,
a full file system, an I/O error) is kept by its caller and tried again,
half a second after the first failure, then doubling up to a few
seconds: soon enough that a decision reaches Masakari seconds after the
journal takes writes again, rarely enough that a journal which stays
unwritable neither floods the log nor blocks the dispatcher (every
attempt may wait ``busy_timeout`` for the lock).  No jitter: one agent
owns the file, nobody retries in step with it.
"""

import time

from vmha import backoff

RETRY_MIN = 0.5
RETRY_MAX = 5.0


class WriteRetry:
    """The backoff of one writer (the event path, the guest-agent
    monitor's step): ``due()`` says whether to try now, ``failed()`` and
    ``succeeded()`` record each attempt's outcome."""

    def __init__(self, clock=time.monotonic, minimum=RETRY_MIN,
                 maximum=RETRY_MAX):
        self._clock = clock
        self._bounds = (minimum, maximum)
        self.failures = 0  # attempts in a row that failed
        self.retry_at = None  # ``clock`` time of the next attempt

    def due(self):
        """True unless the last attempt failed and its wait is not over."""
        return self.retry_at is None or self._clock() >= self.retry_at

    def failed(self):
        """Record a failed attempt; returns seconds until the next one."""
        delay = backoff.ceiling(self.failures, *self._bounds)
        self.failures += 1
        self.retry_at = self._clock() + delay
        return delay

    def succeeded(self):
        """Record a commit; returns how many attempts had failed before."""
        failures, self.failures = self.failures, 0
        self.retry_at = None
        return failures
