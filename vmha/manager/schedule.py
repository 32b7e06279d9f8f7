"""When each VM is next due: a pure schedule for the monitors' loops.

A monitor plans two kinds of entry for a VM: its next probe (a ping),
and, for a probe sent, the moment to check whether that probe is overdue.
``Schedule`` keeps them in time order and hands back those due; it never
sleeps, reads no clock and starts no thread, so a test drives it with
plain numbers.

Probes of the same interval line up on ticks counted from the
schedule's ``origin`` (``next_tick``): guests with the same interval are
probed together, in cycles, instead of spread over whenever each was
first seen.
"""

import collections
import heapq
import itertools

Entry = collections.namedtuple('Entry', ['when', 'order', 'uuid', 'job'])
Entry.__doc__ = """One planned moment: ``uuid``'s next probe at ``when``
(``job`` None), or the check at ``when`` whether the probe ``job`` is
overdue.  ``order`` (unique, rising) takes entries of the same ``when``
in the order they were planned; entries compare by (when, order)."""


class Schedule:
    """:param origin: the time the ticks are counted from (the monitor's
        start)"""

    def __init__(self, origin):
        self._origin = origin
        self._heap = []  # of Entry
        self._order = itertools.count()

    def __len__(self):
        return len(self._heap)

    def next_tick(self, now, interval):
        """The first multiple of ``interval`` since ``origin`` after
        ``now``."""
        ticks = int((now - self._origin) / interval) + 1
        return self._origin + ticks * interval

    def plan(self, when, uuid, job=None):
        """Add ``Entry(when, uuid, job)``; returns it."""
        entry = Entry(when, next(self._order), uuid, job)
        self.put_back(entry)
        return entry

    def put_back(self, entry):
        """Plan ``entry`` again (one that was due but could not run): it
        keeps its place among entries of the same time."""
        heapq.heappush(self._heap, entry)

    def next_due(self):
        """The earliest planned time, or None when nothing is planned."""
        return self._heap[0].when if self._heap else None

    def pop_due(self, now):
        """Remove and yield, in time order, every entry due at ``now``."""
        heap = self._heap
        while heap and heap[0].when <= now:
            yield heapq.heappop(heap)
