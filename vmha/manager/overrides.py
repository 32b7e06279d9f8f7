"""What an operator decided about one domain's monitoring.

``set_monitoring`` over the RPC API writes a row here; it wins over the
domain's metadata element and the name patterns, and outlives restarts
and redefinitions, until the operator clears it.
"""

import collections

Override = collections.namedtuple('Override', ['enabled', 'reason',
                                               'set_at'])


class OverrideStore:
    """The ``monitoring_override`` table of a ``Journal``."""

    def __init__(self, journal):
        self.journal = journal

    def all(self):
        """``{uuid: Override}`` (a read outside any transaction)."""
        return {row[0]: Override(bool(row[1]), row[2], row[3])
                for row in self.journal.query(
                    'SELECT uuid, enabled, reason, set_at '
                    'FROM monitoring_override')}

    def set(self, uuid, enabled, reason, when):
        """Record the choice; ``enabled=None`` clears it.  Returns the
        ``Override`` now in force, or None."""
        with self.journal.transaction() as tx:
            if enabled is None:
                tx.execute('DELETE FROM monitoring_override WHERE uuid = ?',
                           (uuid,))
            else:
                tx.execute(
                    'INSERT INTO monitoring_override (uuid, enabled, reason, '
                    'set_at) VALUES (?, ?, ?, ?) ON CONFLICT (uuid) DO '
                    'UPDATE SET enabled = excluded.enabled, '
                    'reason = excluded.reason, set_at = excluded.set_at',
                    (uuid, int(enabled), reason, when))
        return None if enabled is None else Override(enabled, reason, when)
