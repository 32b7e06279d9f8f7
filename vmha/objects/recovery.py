"""What Masakari did with a failure: ``instance.recovery``.

vmha-masakari-bridge publishes one at each change of a forwarded
failure's recovery (accepted, running, then finished, failed or ignored;
or rejected at once), so that consumers see the failure followed to its
end and not only to Masakari's 202.
"""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification

#: The publisher source of the bridge's notifications.
BRIDGE_SOURCE = 'vmha-masakari-bridge'


@base.VmhaObjectRegistry.register
class RecoveryWorkflowStep(base.VmhaObject):
    """One task of Masakari's recovery workflow (its API's
    ``recovery_workflow_details``, microversion 1.1)."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'name': fields.StringField(),
        'state': fields.StringField(),
        'progress': fields.FloatField(),
        # Masakari's own [{'timestamp', 'message', 'progress'}, ...]
        'progress_details': fields.ListOfDictOfNullableStringsField(),
    }


@base.VmhaObjectRegistry.register
class InstanceRecoveryPayload(notification.NotificationPayloadBase):
    """The recovery of one failure episode, as far as Masakari says.

    ``host`` is the compute host the failure came from, ``episode`` the
    failure's episode id (``instance.failure``), ``notification_uuid``
    Masakari's id (None when it rejected the failure), ``took`` seconds
    from vmha's detection to this status, ``reason`` why it is failed or
    rejected (Masakari's words where it gave any).
    """

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'host': fields.StringField(),
        'episode': fields.StringField(nullable=True),
        'notification_uuid': fields.StringField(nullable=True),
        'status': fields.RecoveryStatusField(),
        'reason': fields.StringField(nullable=True),
        'detected_at': fields.DateTimeField(),
        'took': fields.FloatField(),
        'workflow_details': fields.ListOfObjectsField(
            'RecoveryWorkflowStep', nullable=True),
    }


@base.VmhaObjectRegistry.register
class InstanceRecoveryNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceRecoveryPayload'),
    }


_PRIORITY = {
    fields.RecoveryStatus.FAILED: fields.NotificationPriority.WARN,
    fields.RecoveryStatus.REJECTED: fields.NotificationPriority.WARN,
}


def recovery_notification(bridge_host, uuid, host, episode,
                          notification_uuid, status, detected_at, took,
                          reason=None, workflow_details=None):
    """An ``instance.recovery`` notification: INFO, or WARN for failed
    and rejected (never ERROR: the bridge consumes ERROR itself).

    :param workflow_details: Masakari's list of step dicts, already
        checked (``vmha.bridge.follow.workflow_steps``), or None
    """
    steps = None
    if workflow_details is not None:
        steps = [RecoveryWorkflowStep(**step) for step in workflow_details]
    return InstanceRecoveryNotification(
        priority=_PRIORITY.get(status, fields.NotificationPriority.INFO),
        event_type=notification.EventType('instance', 'recovery'),
        publisher=notification.NotificationPublisher(
            bridge_host, source=BRIDGE_SOURCE),
        payload=InstanceRecoveryPayload(
            uuid=uuid, host=host, episode=episode,
            notification_uuid=notification_uuid, status=status,
            reason=reason, detected_at=detected_at, took=took,
            workflow_details=steps))
