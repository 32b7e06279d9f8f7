"""Follow every failure the bridge forwarded to its outcome.

Masakari's 202 says only that it recorded the failure.  The ``Follower``
keeps Masakari's notification id per (instance, episode) in the state
file (``recovery_store``), polls ``GET /v1/notifications/{id}`` with a
bounded backoff until Masakari says ``finished``, ``failed`` or
``ignored`` (or ``error`` for longer than its engine retries it), and
publishes an ``instance.recovery`` notification at each change, then
tells the failed VM's agent over RPC (``vmha.rpcapi``), which shows it
in ``vmha-status``.  A 400 or 409 answer is an outcome too: ``rejected``
with Masakari's reason, published the same way.

Masakari's statuses and what vmha says (``judge``):

* ``new`` → accepted; ``running`` → running; ``finished``, ``failed``,
  ``ignored`` → the same, final; but ``finished`` whose workflow details
  carry masakari-engine's "Skipping recovery for instance" message (an
  instance without ``HA_Enabled``: engine 22 calls it finished) →
  ``ignored``, with that message as the reason.
* ``error`` → running while its engine may still retry it.  masakari-
  engine 22 runs an errored notification once more from its periodic
  task (every ``process_unfinished_notifications_interval``, 120 s) and
  marks it ``failed`` itself when that retry errors too, so an error
  that lasts longer than ``[bridge] recovery_error_timeout`` (default
  300 s: two periods and a margin) means no engine is retrying it: final,
  ``failed``.
* anything else is not a status: logged, polled again like an error.

Polling: the first poll ``recovery_poll_interval`` after the 202; each
poll that sees no change (and each failed GET) doubles the wait, up to
``recovery_poll_max_interval``; a change starts again from the first
wait.  After ``recovery_give_up`` hours without an outcome the bridge
stops and publishes ``failed`` saying so.  The plain GET (microversion
1.0) is what is polled: it reads Masakari's database.  The workflow
details (1.1) make masakari-api ask the engine over RPC, so they are
fetched once per change only, and left out when that fails.
"""

import collections
import datetime
import logging
import time

from vmha.bridge import recovery_store
from vmha.masakari import client as masakari_client
from vmha.objects import fields

LOG = logging.getLogger(__name__)

Status = fields.RecoveryStatus

Policy = collections.namedtuple('Policy', [
    'poll_interval', 'poll_max_interval', 'give_up', 'error_timeout'])

#: Masakari 22's notification statuses → vmha's (error: see ``judge``).
MASAKARI_STATUSES = {
    'new': Status.ACCEPTED,
    'running': Status.RUNNING,
    'error': Status.RUNNING,
    'finished': Status.FINISHED,
    'failed': Status.FAILED,
    'ignored': Status.IGNORED,
}

# Longest reason kept (Masakari's messages are short).
_MAX_REASON = 255


def policy_from_conf(conf):
    options = conf.bridge
    return Policy(options.recovery_poll_interval,
                  max(options.recovery_poll_interval,
                      options.recovery_poll_max_interval),
                  options.recovery_give_up * 3600.0,
                  options.recovery_error_timeout)


def judge(masakari_status, error_since, now, policy):
    """vmha's view of one Masakari status.

    :returns: (status, reason, final, error_since), or None when
        ``masakari_status`` is not one of Masakari's
    """
    if masakari_status not in MASAKARI_STATUSES:
        return None
    status = MASAKARI_STATUSES[masakari_status]
    if masakari_status != 'error':
        reason = ('Masakari reports the recovery failed'
                  if status == Status.FAILED else
                  'Masakari ignored it (nothing to recover, or the instance '
                  'is not HA-enabled)' if status == Status.IGNORED else None)
        return status, reason, status in Status.FINAL, None
    error_since = now if error_since is None else error_since
    if now - error_since >= policy.error_timeout:
        return (Status.FAILED,
                'Masakari has reported error for %.0f s: no engine retry '
                'brought it to an end' % (now - error_since), True,
                error_since)
    return (Status.RUNNING, 'Masakari reports error; its engine retries it',
            False, error_since)


def next_interval(interval, policy):
    """The wait after a poll that changed nothing (doubling, bounded)."""
    if interval <= 0:
        return policy.poll_interval
    return min(policy.poll_max_interval, interval * 2)


def workflow_steps(details, describe):
    """Masakari's ``recovery_workflow_details`` → checked step dicts, or
    None.  A step that is not the expected shape is dropped with one
    line naming ``describe`` (the instance and notification)."""
    if not isinstance(details, list):
        return None
    steps = []
    for step in details:
        try:
            progress_details = step.get('progress_details') or []
            checked = {
                'name': _text(step['name']),
                'state': _text(step['state']),
                'progress': float(step.get('progress') or 0.0),
                'progress_details': [
                    {_text(key): None if value is None else _text(value)
                     for key, value in entry.items()}
                    for entry in progress_details],
            }
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            LOG.warning('Dropping a recovery workflow step of %s that is '
                        'not one: %.100r (%s)', describe, step, error)
            continue
        steps.append(checked)
    return steps


#: How masakari-engine 22's StopInstanceTask words a skipped instance
#: (not ``HA_Enabled``) in its progress details.
_SKIP_PREFIX = 'Skipping recovery for instance'


def skip_message(steps):
    """Masakari's skip message in checked workflow steps, or None.

    masakari-engine 22 calls an instance it skipped (no ``HA_Enabled``)
    ``finished``; only this message in the details says nothing was
    recovered, and "finished" would tell the operator the VM runs again.
    """
    for step in steps or ():
        for entry in step['progress_details']:
            message = entry.get('message') or ''
            if message.startswith(_SKIP_PREFIX):
                return message
    return None


def _text(value):
    if not isinstance(value, (str, int, float)):
        raise TypeError('%s is not text' % type(value).__name__)
    return str(value)[:_MAX_REASON]


def _epoch(iso):
    try:
        when = datetime.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


# A failure without an episode (InstanceFailurePayload 1.0, an older
# agent) is keyed by its detection time: the same for every resend of it,
# another for the next failure.
_NO_EPISODE = 'detected-at:'


def _episode_key(data):
    return data.get('episode') or _NO_EPISODE + str(data.get('detected_at'))


def _episode(record):
    """The episode id to publish (None for a failure without one)."""
    if not record.episode or record.episode.startswith(_NO_EPISODE):
        return None
    return record.episode


def _utc(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


class Follower:
    """Follows forwarded failures; thread safe enough for one endpoint
    thread pool adding and one loop (``step``) polling.

    :param store: the ``recovery_store.RecoveryStore``
    :param client: the ``MasakariClient`` (``get_notification``)
    :param publish: ``callable(notification)`` sending an
        ``InstanceRecoveryNotification``; raising means "not sent, try
        again" (the status stays unpublished in the state file)
    :param policy: a ``Policy``
    :param bridge_host: the bridge's host (the publisher)
    :param tell_agent: ``callable(host, recovery_dict)`` casting the
        change to the agent of ``host``, or None; best effort
    :param on_status: ``callable(status)`` after each published change,
        for metrics
    :param clock: wall clock (``time.time``): detection times are wall
        times from another host
    """

    def __init__(self, store, client, publish, policy, bridge_host,
                 tell_agent=None, on_status=None, clock=time.time):
        self._store = store
        self._client = client
        self._publish = publish
        self._policy = policy
        self._bridge_host = bridge_host
        self._tell_agent = tell_agent
        self._on_status = on_status
        self._clock = clock

    # --- the endpoint's side: Masakari answered the POST -------------------

    def on_answer(self, data, result):
        """``masakari.forward``'s ``on_answer``: start following (202) or
        record the rejection (400/409).  Never raises: the failure was
        delivered, and a state file that cannot be written must not make
        the bridge send it again (it would be a duplicate)."""
        try:
            self._answered(data, result)
        except Exception:
            LOG.exception('Cannot record the recovery of instance %s '
                          '(episode %s, Masakari notification %s) in the '
                          'state file; it is not followed',
                          data.get('uuid'), data.get('episode'),
                          result.notification_uuid)

    def _answered(self, data, result):
        now = self._clock()
        detected = _epoch(data.get('detected_at'))
        record = recovery_store.Followed(
            uuid=data['uuid'], episode=_episode_key(data),
            host=data['host'], notification_uuid=result.notification_uuid,
            detected_at=detected if detected is not None else now,
            accepted_at=now, status=Status.ACCEPTED, reason=None,
            masakari_status=None, error_since=None,
            next_poll_at=now + self._policy.poll_interval,
            interval=self._policy.poll_interval, polls=0, get_failures=0,
            published_status=None, details=None, changed_at=now, final=0)
        if not result.accepted:
            record = record._replace(
                status=Status.REJECTED, final=1, next_poll_at=None,
                reason=('HTTP %s: %s' % (result.status, result.reason)
                        )[:_MAX_REASON])
        elif not result.notification_uuid:
            record = record._replace(
                status=Status.FAILED, final=1, next_poll_at=None,
                reason='Masakari accepted it without a notification id: '
                       'cannot follow it')
        self._store.add(record)

    # --- the loop's side ---------------------------------------------------

    def step(self):
        """Poll what is due and publish what changed; returns how many
        rows had something to do.  Never raises for one row's trouble."""
        now = self._clock()
        rows = self._store.due(now)
        for record in rows:
            try:
                if record.published_status != record.status:
                    # Before a poll can move it on: every status seen
                    # goes out once, in order.
                    record = self._announce(record)
                if not record.final and record.next_poll_at is not None \
                        and record.next_poll_at <= now:
                    record = self._poll(record, now)
                    self._store.save(record)
                if record.published_status != record.status:
                    self._announce(record)
            except recovery_store.StateFileError as error:
                LOG.error('%s', error)
        if rows:
            self._store.prune(now)
        return len(rows)

    def _describe(self, record):
        return 'instance %s (episode %s, Masakari notification %s)' % (
            record.uuid, _episode(record) or '-', record.notification_uuid)

    def _poll(self, record, now):
        policy = self._policy
        record = record._replace(polls=record.polls + 1)
        try:
            notification = self._client.get_notification(
                record.notification_uuid)
        except masakari_client.NotificationGone as error:
            LOG.warning('Masakari no longer has the notification of %s: %s',
                        self._describe(record), error)
            return self._change(record, now, Status.FAILED,
                                'Masakari no longer has the notification',
                                final=True)
        except masakari_client.MasakariUnavailable as error:
            return self._unanswered(record, now, str(error))
        masakari_status = notification.get('status')
        verdict = judge(masakari_status, record.error_since, now, policy)
        if verdict is None:
            return self._unanswered(record, now, 'status %.40r is not one of '
                                    "Masakari's" % (masakari_status,))
        status, reason, final, error_since = verdict
        record = record._replace(masakari_status=masakari_status,
                                 error_since=error_since, get_failures=0)
        if status == record.status and reason == record.reason:
            return self._wait_longer(record, now)
        return self._change(record, now, status, reason, final,
                            at=self._when_masakari_changed(
                                notification, record, now))

    @staticmethod
    def _when_masakari_changed(notification, record, now):
        """Masakari's ``updated_at`` (UTC, without a zone) when it is a
        time between the last look and now; else None (now is used).

        Looks back off to ``recovery_poll_max_interval``: without it
        ``took`` would be late by up to that much."""
        when = _epoch(notification.get('updated_at'))
        if when is None or not record.detected_at <= when <= now:
            return None
        return when

    def _unanswered(self, record, now, why):
        record = record._replace(get_failures=record.get_failures + 1)
        LOG.warning('Cannot read the recovery of %s from Masakari (poll %d, '
                    '%d failed in a row): %s', self._describe(record),
                    record.polls, record.get_failures, why)
        return self._wait_longer(record, now)

    def _wait_longer(self, record, now):
        if now - record.accepted_at >= self._policy.give_up:
            return self._change(
                record, now, Status.FAILED,
                'no outcome from Masakari within %.0f h (last seen: %s); '
                'no longer followed' % (self._policy.give_up / 3600.0,
                                        record.masakari_status or 'nothing'),
                final=True)
        interval = next_interval(record.interval, self._policy)
        return record._replace(interval=interval,
                               next_poll_at=now + interval)

    def _change(self, record, now, status, reason, final, at=None):
        interval = self._policy.poll_interval
        record = record._replace(
            status=status, reason=reason, final=int(final),
            changed_at=now if at is None else at,
            interval=interval,
            next_poll_at=None if final else now + interval)
        if status != Status.ACCEPTED:
            record = record._replace(details=self._details(record))
            skipped = (skip_message(record.details)
                       if status == Status.FINISHED else None)
            if skipped:
                record = record._replace(status=Status.IGNORED,
                                         reason=skipped)
        LOG.log(logging.WARNING if record.status == Status.FAILED
                else logging.INFO,
                'Recovery of %s: %s%s', self._describe(record),
                record.status,
                ' (%s)' % record.reason if record.reason else '')
        return record

    def _details(self, record):
        try:
            notification = self._client.get_notification(
                record.notification_uuid,
                microversion=masakari_client.WORKFLOW_MICROVERSION)
        except (masakari_client.MasakariUnavailable,
                masakari_client.NotificationGone) as error:
            LOG.info('No recovery workflow details for %s: %s',
                     self._describe(record), error)
            return record.details
        return workflow_steps(notification.get('recovery_workflow_details'),
                              self._describe(record))

    def _announce(self, record):
        from vmha.objects import recovery  # registered by the service
        notification = recovery.recovery_notification(
            self._bridge_host, record.uuid, record.host,
            _episode(record), record.notification_uuid, record.status,
            _utc(record.detected_at),
            max(0.0, record.changed_at - record.detected_at),
            reason=record.reason, workflow_details=record.details)
        try:
            self._publish(notification)
        except Exception as error:
            LOG.warning('Cannot publish the recovery of %s (%s) yet: %s',
                        self._describe(record), record.status, error)
            return record
        record = record._replace(published_status=record.status)
        self._store.save(record)
        if self._on_status is not None:
            self._on_status(record.status)
        if self._tell_agent is not None:
            try:
                self._tell_agent(record.host, as_dict(record))
            except Exception as error:
                LOG.warning('Cannot tell the agent on %s about the recovery '
                            'of %s (%s): %s', record.host,
                            self._describe(record), record.status, error)
        return record


def as_dict(record):
    """The JSON dict the agent gets (``AgentAPI.recovery_changed``)."""
    return {'uuid': record.uuid, 'episode': _episode(record),
            'notification_uuid': record.notification_uuid,
            'status': record.status, 'reason': record.reason,
            'took': round(max(0.0, record.changed_at - record.detected_at),
                          3),
            'changed_at': record.changed_at}
