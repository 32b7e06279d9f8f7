"""Notifications about a lifecycle action asked for over RPC
(``request_action``): one per phase (vote, pre, action, post)."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class InstanceActionPayload(notification.NotificationPayloadBase):
    """One phase of the lifecycle action ``action_id`` on a VM ended.

    ``action`` is what was asked for ('stop', 'resize-begin'), ``event``
    the heartbeat protocol's name for it ('stop', 'resize_begin'),
    ``result`` what the phase came to and ``reason`` why (for a rejected
    vote, the guest's own words); ``requested_by`` who asked (from the
    RPC context); ``took_ms`` how long the phase took."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(nullable=True),
        'host': fields.StringField(),
        'action_id': fields.StringField(),
        'action': fields.StringField(),
        'event': fields.StringField(),
        'phase': fields.ActionPhaseField(),
        'result': fields.ActionResultField(),
        'reason': fields.StringField(nullable=True),
        'requested_by': fields.StringField(nullable=True),
        'took_ms': fields.IntegerField(),
    }


@base.VmhaObjectRegistry.register
class InstanceActionNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceActionPayload'),
    }


def action_notification(host, uuid, name, action_id, action, event, phase,
                        result, reason, took_ms, requested_by=None):
    """``instance.action``: WARN for a rejected vote (the action did not
    happen, which whoever asked must hear of), ERROR for a failed action,
    INFO otherwise."""
    priority = {
        fields.ActionResult.REJECTED: fields.NotificationPriority.WARN,
        fields.ActionResult.FAILED: fields.NotificationPriority.ERROR,
    }.get(result, fields.NotificationPriority.INFO)
    return InstanceActionNotification(
        priority=priority,
        event_type=notification.EventType('instance', 'action'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceActionPayload(
            uuid=uuid, name=name, host=host, action_id=action_id,
            action=action, event=event, phase=phase, result=result,
            reason=reason, requested_by=requested_by, took_ms=took_ms))
