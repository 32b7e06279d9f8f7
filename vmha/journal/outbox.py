"""The outbox: notifications written with the change that caused them.

``Outbox.add(tx, message)`` inserts into the caller's transaction, so the
notification commits or rolls back together with the state change it
reports.  ``seq`` (AUTOINCREMENT, never reused) is the send order; the
``message_id`` is fixed at write time, so every resend of a row carries
the same id and consumers can drop duplicates.

Rows stay after delivery, marked with ``delivered_at``, for ``[database]
retention`` seconds (what was reported, and when, for an operator who
asks), then ``prune`` deletes them.
"""

import json
import logging
import time

from vmha.journal import db
from vmha.notify import message as notify_message

LOG = logging.getLogger(__name__)

_COLUMNS = ('message_id, event_type, priority, publisher_id, payload, '
            'timestamp')


class DuplicateMessageError(db.JournalError):
    """A row with this message id is already in the outbox."""


class Outbox:
    """Outgoing notifications in a ``db.Journal``.

    :param journal: an open ``db.Journal``
    :param clock: wall-clock seconds for ``created_at`` (ages must hold
        across restarts, so not monotonic)
    """

    def __init__(self, journal, clock=time.time):
        self.journal = journal
        self._clock = clock
        self._listeners = []

    def add_listener(self, callback):
        """Call ``callback()`` after each commit that added rows (the
        sender's ``wake``)."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def remove_listener(self, callback):
        if callback in self._listeners:
            self._listeners.remove(callback)

    def add(self, tx, message):
        """Insert ``message`` in ``tx`` (a ``db.Transaction`` of this
        journal); returns its ``seq``.

        :raises DuplicateMessageError: the message id is already stored
        :raises TypeError: the payload is not JSON serializable
        """
        if tx.journal is not self.journal:
            raise ValueError('the transaction belongs to another journal')
        try:
            payload = json.dumps(message.payload, separators=(',', ':'))
        except (TypeError, ValueError) as error:
            raise TypeError('payload of notification %s (%s) is not JSON '
                            'serializable: %s' % (message.message_id,
                                                  message.event_type, error))
        try:
            cursor = tx.execute(
                'INSERT INTO outbox (%s, created_at) '
                'VALUES (?, ?, ?, ?, ?, ?, ?)' % _COLUMNS,
                (message.message_id, message.event_type, message.priority,
                 message.publisher_id, payload, message.timestamp,
                 self._clock()))
        except db.JournalError as error:
            if 'UNIQUE constraint failed: outbox.message_id' in error.cause:
                raise DuplicateMessageError(
                    self.journal.path, 'notification %s is already in the '
                    'outbox' % message.message_id, 'write')
            raise
        tx.after_commit(self._committed)
        return cursor.lastrowid

    def _committed(self):
        for callback in list(self._listeners):
            callback()

    def pending(self, limit=100):
        """Up to ``limit`` undelivered messages, oldest (lowest seq)
        first."""
        rows = self.journal.query(
            'SELECT %s FROM outbox WHERE delivered_at IS NULL '
            'ORDER BY seq LIMIT ?' % _COLUMNS, (limit,))
        return [notify_message.Message(
            message_id=row['message_id'], event_type=row['event_type'],
            priority=row['priority'], publisher_id=row['publisher_id'],
            payload=json.loads(row['payload']), timestamp=row['timestamp'])
            for row in rows]

    def mark_delivered(self, message_id, when):
        """Record that ``message_id`` was delivered at ``when`` (wall
        clock); False when no undelivered row has that id."""
        return self.mark_many_delivered([message_id], when) == 1

    def mark_many_delivered(self, message_ids, when):
        """``mark_delivered`` for several ids in one transaction (one
        fsync); returns how many undelivered rows it marked."""
        if not message_ids:
            return 0
        with self.journal.transaction() as tx:
            cursor = tx.executemany(
                'UPDATE outbox SET delivered_at = ? '
                'WHERE message_id = ? AND delivered_at IS NULL',
                [(when, message_id) for message_id in message_ids])
            return cursor.rowcount

    def prune(self, retention_seconds, now):
        """Delete rows delivered more than ``retention_seconds`` before
        ``now``; undelivered rows are never pruned.  Returns the count."""
        with self.journal.transaction() as tx:
            cursor = tx.execute(
                'DELETE FROM outbox WHERE delivered_at IS NOT NULL '
                'AND delivered_at < ?', (now - retention_seconds,))
            return cursor.rowcount

    def depth(self):
        """How many messages wait for delivery."""
        return self.journal.query(
            'SELECT count(*) FROM outbox WHERE delivered_at IS NULL')[0][0]

    def oldest_age(self, now):
        """Seconds since the oldest undelivered message was written, or 0
        when none waits (never negative, should the clock step back)."""
        oldest = self.journal.query(
            'SELECT min(created_at) FROM outbox '
            'WHERE delivered_at IS NULL')[0][0]
        return 0.0 if oldest is None else max(0.0, now - oldest)
