"""What Masakari made of this host's failures, as the bridge tells it.

vmha-masakari-bridge follows every failure it forwarded and casts each
change to the failed VM's agent (``rpcapi.AgentAPI.recovery_changed``).
``RecoveryBook.changed`` records it in the failure episode's row of the
journal's ``recovery`` table (opened with the episode by
``state.StateStore.open_failure``; ``close_failure`` stamps
``recovered_at`` when the domain runs again), so ``vmha-status`` shows a
RECOVERY column and ``/metrics`` counts ``vmha_recoveries_total``.

The recovery does not close the episode: only the domain running again
does (the failure monitor, the audit, the guest-agent monitor).  A
recovery Masakari reports failed or ignored while the domain is still
down leaves the episode open, and both show.

The message comes over the bus from another process: anything that is
not a recovery is logged, naming the domain where it can, and dropped.
"""

import logging
import time

from vmha import timestamps
from vmha.journal import db
from vmha.objects import fields

LOG = logging.getLogger(__name__)

_MAX_REASON = 255


class BadRecovery(ValueError):
    """The message is not a recovery."""


def _check(recovery):
    if not isinstance(recovery, dict):
        raise BadRecovery('not a dict but %s' % type(recovery).__name__)
    uuid = recovery.get('uuid')
    if not isinstance(uuid, str) or not uuid:
        raise BadRecovery('no instance uuid')
    status = recovery.get('status')
    if status not in fields.RecoveryStatus.ALL:
        raise BadRecovery('status %.40r is not a recovery status'
                          % (status,))
    episode = recovery.get('episode')
    if episode is not None and not isinstance(episode, str):
        raise BadRecovery('episode is not text')
    took = recovery.get('took')
    if isinstance(took, bool) or not isinstance(took, (int, float)) \
            or took < 0:
        raise BadRecovery('took %.40r is not a duration' % (took,))
    reason = recovery.get('reason')
    if reason is not None and not isinstance(reason, str):
        raise BadRecovery('reason is not text')
    notification_uuid = recovery.get('notification_uuid')
    if notification_uuid is not None and \
            not isinstance(notification_uuid, str):
        raise BadRecovery('notification_uuid is not text')
    return (uuid, episode, status, None if reason is None
            else reason[:_MAX_REASON], float(took), notification_uuid)


class RecoveryBook:
    """The journal's ``recovery`` table, and outcome counts for metrics.

    :param journal: the ``Journal``
    :param clock: wall clock
    """

    def __init__(self, journal, clock=time.time):
        self._journal = journal
        self._clock = clock
        #: status → changes recorded since start (``vmha_recoveries_total``)
        self.outcomes = dict.fromkeys(fields.RecoveryStatus.ALL, 0)

    def changed(self, recovery):
        """Record one change; returns True if recorded.  Never raises."""
        try:
            uuid, episode, status, reason, took, masakari_id = \
                _check(recovery)
        except BadRecovery as error:
            LOG.warning('Dropping a recovery message for instance %s that '
                        'is not one: %s', _name_of(recovery), error)
            return False
        now = self._clock()
        try:
            with self._journal.transaction() as tx:
                changed = self._write(tx, uuid, episode, status, reason,
                                      took, masakari_id, now)
        except db.JournalError as error:
            LOG.error('Recovery of %s (episode %s) is %s, but the journal '
                      'cannot record it: %s', uuid, episode, status, error)
            return False
        if changed:
            self.outcomes[status] += 1
            LOG.log(logging.WARNING if status in (
                        fields.RecoveryStatus.FAILED,
                        fields.RecoveryStatus.REJECTED)
                    else logging.INFO,
                    'Recovery of %s (episode %s, Masakari notification %s): '
                    '%s %.1f s after detection%s', uuid, episode,
                    masakari_id, status, took,
                    ': %s' % reason if reason else '')
        return changed

    def _write(self, tx, uuid, episode, status, reason, took, masakari_id,
               now):
        key = episode or 'masakari:%s' % (masakari_id or uuid)
        row = tx.execute('SELECT uuid, status FROM recovery WHERE episode = ?',
                         (key,)).fetchone()
        if row is None:
            # An episode this journal never opened (a journal moved
            # aside, say): recorded all the same.
            tx.execute('INSERT INTO recovery (episode, uuid, detected_at) '
                       'VALUES (?, ?, ?)', (key, uuid, now - took))
        elif row[0] != uuid:
            LOG.warning('Dropping a recovery message for instance %s: its '
                        'episode %s belongs to instance %s', uuid, key,
                        row[0])
            return False
        elif row[1] == status:
            return False  # the same change again (a redelivery)
        elif _stale(row[1], status):
            LOG.info('Recovery of %s (episode %s) is %s already; ignoring '
                     '%s', uuid, key, row[1], status)
            return False
        tx.execute('UPDATE recovery SET status = ?, reason = ?, took = ?, '
                   'notification_uuid = ?, status_at = ? WHERE episode = ?',
                   (status, reason, took, masakari_id, now, key))
        return True

    def latest(self):
        """The newest episode's recovery per domain: ``{uuid: dict}``."""
        rows = self._journal.query(
            'SELECT uuid, episode, cause, detected_at, status, reason, '
            'notification_uuid, took, recovered_at FROM recovery r WHERE '
            # rowid: the order episodes were opened (or first heard of)
            'rowid = (SELECT max(rowid) FROM recovery WHERE uuid = r.uuid)')
        latest = {}
        for row in rows:
            latest[row['uuid']] = {
                'episode': row['episode'], 'cause': row['cause'],
                'detected_at': timestamps.isotime(row['detected_at']),
                'status': row['status'], 'reason': row['reason'],
                'notification_uuid': row['notification_uuid'],
                'took': row['took'],
                'recovered_in': (None if row['recovered_at'] is None else
                                 round(row['recovered_at']
                                       - row['detected_at'], 3)),
            }
        return latest


# Order of a recovery's statuses: a later one never goes back.
_RANK = {fields.RecoveryStatus.ACCEPTED: 1, fields.RecoveryStatus.RUNNING: 2}


def _stale(known, new):
    """Whether ``new`` cannot follow ``known`` for one episode.

    One bridge publishes an episode's statuses in order.  Another bridge
    copy may get a resend of the episode and Masakari's 409 for it: that
    ``rejected`` is not the outcome of a recovery Masakari accepted.
    """
    if known is None:
        return False
    if new == fields.RecoveryStatus.REJECTED:
        return True
    if known in fields.RecoveryStatus.FINAL:
        return True
    return _RANK.get(new, 3) < _RANK.get(known, 3)


def _name_of(recovery):
    uuid = recovery.get('uuid') if isinstance(recovery, dict) else None
    return '%.64r' % (uuid,) if uuid is not None else '<unknown>'
