"""Per-domain state in the journal: last known power state, open failure.

``state_reason`` holds one vocabulary, libvirt's domain state and
reason (``SHUTOFF_FAILED``), whether an event or the audit saw it; the
fact that an incoming live migration is under way is kept apart, in
``incoming_migration``, since the audit rewrites the state reason while
the migration runs.

A failure *episode* opens when a recoverable failure is reported and
closes when the domain is seen running again; while it is open, the same
domain is not reported again (a panic gives CRASHED then STOPPED_CRASHED;
an I/O error gives three events; the audit sees the result once more).
Each episode has an id of its own (``failure_episode``), so that two
failures of one domain are never mistaken for a resend of one.
Every method except ``all`` takes the caller's journal transaction, so
the state change and the notification it causes commit together.
"""

import collections

DomainState = collections.namedtuple(
    'DomainState', ['uuid', 'name', 'power_state', 'state_reason',
                    'updated_at', 'failure_cause', 'failure_reported_at',
                    'last_decision', 'last_decision_at',
                    'incoming_migration', 'failure_episode'])

_COLUMNS = ', '.join(DomainState._fields)


class StateStore:
    """The ``domain_state`` table of a ``vmha.journal.db.Journal``."""

    def __init__(self, journal):
        self.journal = journal

    def get(self, tx, uuid):
        row = tx.execute('SELECT %s FROM domain_state WHERE uuid = ?'
                         % _COLUMNS, (uuid,)).fetchone()
        return DomainState(*row) if row else None

    def all(self):
        """Every known domain, by UUID (a read outside any transaction)."""
        return {row[0]: DomainState(*row) for row in self.journal.query(
            'SELECT %s FROM domain_state' % _COLUMNS)}

    def failure_cause(self, uuid):
        """The cause of the domain's open failure episode, or None (a
        read outside any transaction: a monitor deciding whether to act
        on a guest another monitor already reported)."""
        rows = self.journal.query(
            'SELECT failure_cause FROM domain_state WHERE uuid = ?', (uuid,))
        return rows[0][0] if rows else None

    def record(self, tx, uuid, name, power_state, state_reason, when,
               incoming_migration=None):
        """Remember the domain's power state; an open episode stays.

        ``state_reason`` is libvirt's ``<STATE>_<REASON>`` ('SHUTOFF_FAILED')
        whoever saw it, event or audit.  ``incoming_migration``: True
        while an incoming live migration has not resumed here, False once
        it has (or the domain booted, stopped...), None to keep it.
        """
        tx.execute(
            'INSERT INTO domain_state (uuid, name, power_state, '
            'state_reason, updated_at, incoming_migration) '
            'VALUES (?, ?, ?, ?, ?, ?) '
            'ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, '
            'power_state = excluded.power_state, '
            'state_reason = excluded.state_reason, '
            'updated_at = excluded.updated_at, '
            'incoming_migration = CASE WHEN ? IS NULL THEN '
            'domain_state.incoming_migration ELSE excluded.incoming_migration '
            'END',
            (uuid, name, power_state, state_reason, when,
             int(bool(incoming_migration)), incoming_migration))

    def open_failure(self, tx, uuid, cause, when, episode):
        tx.execute('UPDATE domain_state SET failure_cause = ?, '
                   'failure_reported_at = ?, failure_episode = ? '
                   'WHERE uuid = ?', (cause, when, episode, uuid))

    def note_decision(self, tx, uuid, cause, when):
        """Remember the last failure reported, for status (it stays once
        the episode closes)."""
        tx.execute('UPDATE domain_state SET last_decision = ?, '
                   'last_decision_at = ? WHERE uuid = ?', (cause, when, uuid))

    def close_failure(self, tx, uuid):
        tx.execute('UPDATE domain_state SET failure_cause = NULL, '
                   'failure_reported_at = NULL, failure_episode = NULL '
                   'WHERE uuid = ?', (uuid,))

    def forget(self, tx, uuid):
        tx.execute('DELETE FROM domain_state WHERE uuid = ?', (uuid,))
