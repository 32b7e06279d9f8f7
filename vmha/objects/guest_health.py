"""Notifications from the guest-agent monitor: a VM's health changed."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class GuestHealthPayload(notification.NotificationPayloadBase):
    """The monitor's state for one VM moved from ``old_state`` to
    ``state``; ``reason`` says why ('3 pings timed out', ...)."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(),
        'host': fields.StringField(),
        'old_state': fields.GuestHealthStateField(),
        'state': fields.GuestHealthStateField(),
        'reason': fields.StringField(nullable=True),
        'consecutive_failures': fields.IntegerField(),
        'changed_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class GuestHealthNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('GuestHealthPayload'),
    }


def guest_health_notification(host, uuid, name, old_state, state, reason,
                              consecutive_failures, changed_at,
                              priority=fields.NotificationPriority.INFO):
    """A ``guest.health`` notification (WARN for a warning)."""
    return GuestHealthNotification(
        priority=priority,
        event_type=notification.EventType('guest', 'health'),
        publisher=notification.NotificationPublisher(host),
        payload=GuestHealthPayload(
            uuid=uuid, name=name, host=host, old_state=old_state,
            state=state, reason=reason,
            consecutive_failures=consecutive_failures,
            changed_at=changed_at))
