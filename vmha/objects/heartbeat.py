"""Notifications from the guest heartbeat: a VM's heartbeat state changed.

Operators (and alerting) read these to see a guest register, fail,
recover, exit on purpose or be cut off for misbehaving; the failure
itself, when Masakari must act, is the separate ``instance.failure``.
"""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class InstanceHeartbeatPayload(notification.NotificationPayloadBase):
    """The heartbeat of one VM moved from ``old_state`` to ``state``.

    ``misses``: consecutive challenges unanswered when it changed;
    ``interval``: the granted challenge interval in seconds (None before
    the guest registered); ``action``: the corrective action granted to
    the guest; ``action_taken``: what vmha did about a failure ('reboot'
    or 'stop' when it acted itself, 'log' when it reported the failure to
    Masakari, None when there was no failure).
    """

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(),
        'host': fields.StringField(),
        'old_state': fields.HeartbeatStateField(),
        'state': fields.HeartbeatStateField(),
        'reason': fields.StringField(nullable=True),
        'misses': fields.IntegerField(),
        'interval': fields.FloatField(nullable=True),
        'action': fields.StringField(nullable=True),
        'action_taken': fields.StringField(nullable=True),
        'changed_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class InstanceHeartbeatNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceHeartbeatPayload'),
    }


def heartbeat_notification(host, uuid, name, old_state, state, reason,
                           misses, changed_at, interval=None, action=None,
                           action_taken=None,
                           priority=fields.NotificationPriority.INFO):
    """An ``instance.heartbeat`` notification (WARN for a cut-off guest,
    ERROR for a failure)."""
    return InstanceHeartbeatNotification(
        priority=priority,
        event_type=notification.EventType('instance', 'heartbeat'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceHeartbeatPayload(
            uuid=uuid, name=name, host=host, old_state=old_state,
            state=state, reason=reason, misses=misses, interval=interval,
            action=action, action_taken=action_taken,
            changed_at=changed_at))
