"""The guest-agent monitor's per-VM state in the journal.

One row per VM the monitor pings: its state, the failures counted, the
verdict of an open episode ('hung' or 'agent_down'), when it booted (as
far as vmha saw), whether the discovery warning went out, and the times
of the corrective actions taken (the budget).  Rows change only on
transitions, never on a healthy ping.
"""

import collections
import json

GuestRow = collections.namedtuple(
    'GuestRow', ['uuid', 'name', 'state', 'failures', 'verdict',
                 'changed_at', 'booted_at', 'discovery_warned', 'actions'])

_COLUMNS = ', '.join(GuestRow._fields)


def _row(values):
    row = GuestRow(*values)
    return row._replace(discovery_warned=bool(row.discovery_warned),
                        actions=json.loads(row.actions or '[]'))


class GuestStore:
    """The ``guest_health`` table of a ``vmha.journal.db.Journal``."""

    def __init__(self, journal):
        self.journal = journal

    def all(self):
        return {row[0]: _row(row) for row in self.journal.query(
            'SELECT %s FROM guest_health' % _COLUMNS)}

    def save(self, tx, row):
        tx.execute(
            'INSERT OR REPLACE INTO guest_health (%s) VALUES '
            '(?, ?, ?, ?, ?, ?, ?, ?, ?)' % _COLUMNS,
            row._replace(discovery_warned=int(row.discovery_warned),
                         actions=json.dumps(row.actions)))

    def forget(self, tx, uuid):
        tx.execute('DELETE FROM guest_health WHERE uuid = ?', (uuid,))
