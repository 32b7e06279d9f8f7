"""The heartbeat monitor's per-VM state in the journal.

One row per VM with a heartbeat channel: its state, the interval and
corrective action granted to its guest, when it registered and last
answered, the misses counted, the last reason, the cause of an open
failure (so a restart neither reports it twice nor forgets to close it),
when it booted as far as vmha saw, and the times of the corrective
actions taken (the budget).  Rows change only on transitions, never on
an answered challenge, so the journal is not written every second per
guest.
"""

import collections
import json

HeartbeatRow = collections.namedtuple(
    'HeartbeatRow', ['uuid', 'name', 'state', 'interval', 'action',
                     'registered_at', 'last_answer_at', 'misses', 'reason',
                     'changed_at', 'cause', 'booted_at', 'actions'])

_COLUMNS = ', '.join(HeartbeatRow._fields)
_MARKS = ', '.join('?' * len(HeartbeatRow._fields))


def _row(values):
    row = HeartbeatRow(*values)
    return row._replace(actions=json.loads(row.actions or '[]'))


class HeartbeatStore:
    """The ``heartbeat`` table of a ``vmha.journal.db.Journal``."""

    def __init__(self, journal):
        self.journal = journal

    def all(self):
        return {row[0]: _row(row) for row in self.journal.query(
            'SELECT %s FROM heartbeat' % _COLUMNS)}

    def save(self, tx, row):
        tx.execute('INSERT OR REPLACE INTO heartbeat (%s) VALUES (%s)'
                   % (_COLUMNS, _MARKS),
                   row._replace(actions=json.dumps(list(row.actions))))

    def forget(self, tx, uuid):
        tx.execute('DELETE FROM heartbeat WHERE uuid = ?', (uuid,))
