"""Telling Masakari about failed VMs.

``translate`` turns vmha's ``instance.failure`` payload into the body of
Masakari's ``POST /v1/notifications`` (and says which failures Masakari
would act on); ``client`` sends it and classifies the answer.  ``forward``
does both with the log lines an operator needs; the ``masakari``
notification sink (direct mode, in the agent) and vmha-masakari-bridge
(from the message bus) both use it.
"""

import logging

from vmha.masakari import client as masakari_client
from vmha.masakari import translate

LOG = logging.getLogger(__name__)

# What became of one notification (``forward``'s return value).
IGNORED = 'ignored'                  # not an instance.failure
MALFORMED = 'malformed'              # dropped: cannot be a valid failure
NOT_RECOVERABLE = 'not-recoverable'  # Masakari would ignore it: not sent
ACCEPTED = 'accepted'                # Masakari took it (2xx)
REJECTED = 'rejected'                # Masakari refused it for good (400/409)

# Masakari's payload for a VM is the same for every failure of one
# instance: its duplicate check cannot tell a resend of this episode from
# a new episode (README: Delivering failures to Masakari).
_DUPLICATE_HINT = (
    ' (a resend of this episode, or a new failure of the instance within '
    "Masakari's duplicate_notification_detection_interval of an earlier "
    'one, which Masakari will not recover)')


def forward(client, message_id, event_type, payload, on_answer=None):
    """Send one notification to Masakari if it is a failure it recovers.

    Every outcome is logged with the message id and, where known, the
    instance.  Only ``MasakariUnavailable`` leaves the notification
    undelivered; every returned outcome is final.

    :param on_answer: ``callable(data, result)`` once Masakari accepted
        or rejected the failure (``data``: the payload's data fields,
        ``result``: the client's ``Result``), before this returns; the
        bridge follows the recovery from there

    :returns: IGNORED, MALFORMED, NOT_RECOVERABLE, ACCEPTED or REJECTED
    :raises vmha.masakari.client.MasakariUnavailable: Masakari did not
        take it after the client's retries; send it again later
    """
    if event_type != translate.FAILURE_EVENT_TYPE:
        LOG.debug('Notification %s (%s) is not a failure; not for Masakari',
                  message_id, event_type)
        return IGNORED
    try:
        body = translate.to_masakari(payload)
    except translate.MalformedNotification as error:
        LOG.error('Dropping malformed %s notification %s: %s', event_type,
                  message_id, error)
        return MALFORMED
    data = payload['vmha_object.data']
    if body is None:
        LOG.info('Failure of instance %s on %s (%s/%s, cause %s) is not one '
                 'Masakari recovers; not sent (notification %s)',
                 data['uuid'], data['host'], data['event'],
                 data['vir_domain_event'], data.get('cause'), message_id)
        return NOT_RECOVERABLE
    try:
        result = client.send_notification(body)
    except masakari_client.MasakariUnavailable as error:
        LOG.error('Masakari did not take the failure of instance %s on %s '
                  '(notification %s); it will be sent again: %s',
                  data['uuid'], data['host'], message_id, error)
        raise
    episode = data.get('episode')
    if on_answer is not None:
        on_answer(data, result)
    if result.accepted:
        LOG.info('Masakari accepted the failure of instance %s on %s '
                 '(%s/%s, cause %s, episode %s; notification %s, Masakari '
                 'notification %s)', data['uuid'], data['host'],
                 data['event'], data['vir_domain_event'], data.get('cause'),
                 episode, message_id, result.notification_uuid)
        return ACCEPTED
    LOG.warning('Masakari rejected the failure of instance %s on %s for '
                'good (episode %s, notification %s): HTTP %d: %s%s',
                data['uuid'], data['host'], episode, message_id,
                result.status, result.reason,
                _DUPLICATE_HINT if _is_duplicate(result) else '')
    return REJECTED


def _is_duplicate(result):
    # Masakari 22: "Notification received from host H of type VM is
    # duplicate." (409, as is a host under maintenance)
    return result.status == 409 and 'duplicate' in (result.reason or '')
