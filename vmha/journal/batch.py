"""One monitor's journal writes, batched and kept until they commit.

A monitor's step changes many rows (states, notifications); the batch
collects them as callables ``write(tx)`` and commits them together in one
transaction.  Notifications (``urgent``) go at once; changes that send
nothing (a guest became healthy) wait up to ``window`` seconds to share
a transaction with the next ones.  A transaction the journal refuses
(``JournalError``) keeps every write for the next try, after the
``retry.WriteRetry`` backoff: nothing decided is lost while the journal
is unwritable.  A write that raises anything else is a bug and would
fail the same way again: the batch drops it and lets the error go up.
"""

import logging
import time

from vmha.journal import db
from vmha.journal import retry

LOG = logging.getLogger(__name__)


class WriteBatch:
    """:param journal: the ``Journal``
    :param name: who writes, for the log (``'Guest-agent monitor'``)
    :param window: longest wait (seconds) before committing writes that
        are not urgent
    :param clock: monotonic clock
    """

    def __init__(self, journal, name, window, clock=time.monotonic):
        self._journal = journal
        self._name = name
        self._window = window
        self._clock = clock
        self._writes = []
        self._urgent = False
        self._last_commit = clock()
        self._retry = retry.WriteRetry(clock)

    def __len__(self):
        return len(self._writes)

    def add(self, write, urgent=False):
        """Queue ``write(tx)``; ``urgent`` commits it on the next
        ``commit_due``."""
        self._writes.append(write)
        if urgent:
            self._urgent = True

    def pending_writes(self):
        """Writes kept because the journal refused them (0 otherwise)."""
        return len(self._writes) if self._retry.failures else 0

    def next_commit_at(self):
        """When the writes waiting should be committed (``clock`` time),
        or None when none wait."""
        if not self._writes:
            return None
        return self._retry.retry_at or self._last_commit + self._window

    def commit_due(self):
        """Commit if something urgent waits, a retry is due, or the
        window is over."""
        if self._writes and self._retry.due() and (
                self._urgent or self._retry.failures or
                self._clock() - self._last_commit >= self._window):
            self.flush()

    def flush(self):
        """Commit every write not yet committed, in one transaction; if
        the journal fails, they all stay for the next try."""
        writes = list(self._writes)
        self._last_commit = self._clock()
        if not writes:
            return
        try:
            with self._journal.transaction() as tx:
                for write in writes:
                    write(tx)
        except db.JournalError as error:
            LOG.error('%s cannot write %d change(s) to the journal: %s; '
                      'kept, next try in %.1fs', self._name, len(writes),
                      error, self._retry.failed())
            return
        except Exception:
            del self._writes[:len(writes)]  # would fail again: not kept
            raise
        del self._writes[:len(writes)]
        self._urgent = False
        if self._retry.succeeded():
            LOG.warning('%s: %d kept change(s) written', self._name,
                        len(writes))
