"""Rate limits on failure notifications Masakari does not act on.

A verdict that opens no failure episode (a watchdog that resets the
guest, a control error) is reported for the record only, and nothing in
the guest stops it from happening again: a watchdog firing every second
would write 86,400 ERROR notifications a day, each one a journal fsync
on the shared dispatcher.  Two limits, both kept in memory only (a
suppressed notification costs no journal write):

* per domain and cause, the first one is sent and its repeats within
  ``repeat_window`` seconds are counted, not sent; the next one sent for
  that domain and cause carries the count;
* per host, at most ``per_minute`` of them are sent in a minute; the rest
  are dropped, counted the same way, and one log line says when the cap
  starts biting.

Recoverable failures never come here: each one opens an episode Masakari
acts on, and no limit may delay or drop it.
"""

import collections
import logging
import time

LOG = logging.getLogger(__name__)

# Why a notification was not sent (the metric's ``reason`` label).
REPEAT = 'repeat'
HOST_CAP = 'host_cap'
REASONS = (REPEAT, HOST_CAP)

#: Length of the host cap's window, in seconds.
CAP_PERIOD = 60.0
#: A count no notification carried for this long after its window ended
#: is forgotten (it stays in ``suppressed_total``): domains come and go,
#: and their entries must not pile up.
FORGET_AFTER = 86400.0

Admission = collections.namedtuple('Admission', ['send', 'suppressed'])
Admission.__doc__ = """What to do with one notification.

``send``: True to send it; ``suppressed``: the repeats of its domain and
cause not sent since the last one that was (for the one sent now).
"""


class _Entry:
    __slots__ = ('sent_at', 'suppressed', 'touched_at')

    def __init__(self, sent_at, suppressed, touched_at):
        self.sent_at = sent_at  # None: no window open
        self.suppressed = suppressed
        self.touched_at = touched_at


class NotificationLimiter:
    """Decides which non-episode failure notifications are sent.

    Not thread safe: the caller holds the journal transaction the
    notification would be written in, which serializes calls.

    :param repeat_window: seconds during which repeats of a domain's
        cause are counted instead of sent (0: every one is sent)
    :param per_minute: the host's cap per minute (0: no cap)
    :param clock: a monotonic clock
    """

    def __init__(self, repeat_window, per_minute, clock=time.monotonic):
        self._repeat_window = repeat_window
        self._per_minute = per_minute
        self._clock = clock
        self._entries = {}  # (domain uuid, cause) -> _Entry
        self._period_start = None
        self._sent_in_period = 0
        self._capped_in_period = 0
        #: Notifications not sent, by reason (``REASONS``).
        self.suppressed_total = collections.Counter(
            {reason: 0 for reason in REASONS})

    @classmethod
    def from_conf(cls, conf, clock=time.monotonic):
        return cls(conf.notifications.repeat_window,
                   conf.notifications.max_error_notifications_per_minute,
                   clock=clock)

    def admit(self, uuid, cause, on_rollback=None):
        """Whether to send the notification of ``cause`` for ``uuid``.

        :param on_rollback: the journal transaction's ``after_rollback``:
            when the notification admitted now is not written after all,
            the admission is taken back, so the retry is sent, not
            counted as a repeat of itself
        :returns: an ``Admission``
        """
        now = self._clock()
        self._next_period(now)
        key = (uuid, cause)
        entry = self._entries.get(key)
        if entry is not None and entry.sent_at is not None \
                and now - entry.sent_at < self._repeat_window:
            return self._suppress(entry, REPEAT, now)
        if self._per_minute and self._sent_in_period >= self._per_minute:
            if entry is None:
                entry = self._entries[key] = _Entry(None, 0, now)
            self._capped_in_period += 1
            if self._capped_in_period == 1:
                LOG.warning(
                    'More than %d failure notifications Masakari does not '
                    'act on in %d s on this host (the latest: %s of %s): '
                    'dropping the others until %.0f s from now, counted in '
                    'vmha_notifications_suppressed_total{reason="%s"}',
                    self._per_minute, CAP_PERIOD, cause, uuid,
                    self._period_start + CAP_PERIOD - now, HOST_CAP)
            return self._suppress(entry, HOST_CAP, now)
        if on_rollback is not None:
            period = self._period_start

            def take_back():
                if self._period_start == period:
                    self._sent_in_period -= 1
                if entry is None:
                    self._entries.pop(key, None)
                else:
                    self._entries[key] = entry
            on_rollback(take_back)
        self._sent_in_period += 1
        suppressed = entry.suppressed if entry is not None else 0
        if self._repeat_window > 0:
            self._entries[key] = _Entry(now, 0, now)
        else:
            self._entries.pop(key, None)
        return Admission(True, suppressed)

    def _suppress(self, entry, reason, now):
        entry.suppressed += 1
        entry.touched_at = now
        self.suppressed_total[reason] += 1
        return Admission(False, entry.suppressed)

    def _next_period(self, now):
        if self._period_start is not None \
                and now - self._period_start < CAP_PERIOD:
            return
        self._period_start = now
        self._sent_in_period = 0
        self._capped_in_period = 0
        self._forget_old(now)

    def _forget_old(self, now):
        # Once a minute at most: a window that ended with nothing to carry
        # is dropped at once, a count after FORGET_AFTER.
        for key, entry in list(self._entries.items()):
            window_open = (entry.sent_at is not None
                           and now - entry.sent_at < self._repeat_window)
            if window_open:
                continue
            if not entry.suppressed \
                    or now - entry.touched_at >= FORGET_AFTER:
                del self._entries[key]

    def __len__(self):
        """Domain and cause pairs remembered."""
        return len(self._entries)
