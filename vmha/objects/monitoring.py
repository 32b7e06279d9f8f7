"""Notifications about an operator's monitoring choice for one domain."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class InstanceMonitoringPayload(notification.NotificationPayloadBase):
    """The operator's choice for one domain changed from ``previous`` to
    ``enabled`` (True: monitored, False: not monitored, None: no choice,
    metadata and name rules decide); ``source`` says what changed it and
    ``requested_by`` who asked."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(nullable=True),
        'host': fields.StringField(),
        'enabled': fields.BooleanField(nullable=True),
        'previous': fields.BooleanField(nullable=True),
        'reason': fields.StringField(nullable=True),
        'requested_by': fields.StringField(nullable=True),
        'source': fields.MonitoringChangeSourceField(),
        'changed_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class InstanceMonitoringNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceMonitoringPayload'),
    }


def monitoring_notification(host, uuid, name, enabled, previous, reason,
                            requested_by, source, changed_at):
    """``instance.monitoring``: WARN when it turns monitoring off (the
    domain is no longer protected), INFO otherwise."""
    return InstanceMonitoringNotification(
        priority=(fields.NotificationPriority.WARN if enabled is False
                  else fields.NotificationPriority.INFO),
        event_type=notification.EventType('instance', 'monitoring'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceMonitoringPayload(
            uuid=uuid, name=name, host=host, enabled=enabled,
            previous=previous, reason=reason, requested_by=requested_by,
            source=source, changed_at=changed_at))
