"""Notifications about the agent's libvirt connection."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class HostConnectionPayload(notification.NotificationPayloadBase):
    """The connection to libvirt was lost (events may be missed) or
    restored (the agent resyncs)."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'host': fields.StringField(),
        'uri': fields.StringField(),
        'state': fields.ConnectionStateField(),
        'reason': fields.StringField(nullable=True),
        'outage_seconds': fields.FloatField(nullable=True),
        'attempts': fields.IntegerField(nullable=True),
        'changed_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class HostConnectionNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('HostConnectionPayload'),
    }


def host_connection_notification(host, uri, state, changed_at, reason=None,
                                 outage_seconds=None, attempts=None):
    """``host.connection``: WARN when lost, INFO when restored."""
    lost = state == fields.ConnectionState.LOST
    return HostConnectionNotification(
        priority=(fields.NotificationPriority.WARN if lost
                  else fields.NotificationPriority.INFO),
        event_type=notification.EventType('host', 'connection'),
        publisher=notification.NotificationPublisher(host),
        payload=HostConnectionPayload(
            host=host, uri=uri, state=state, reason=reason,
            outage_seconds=outage_seconds, attempts=attempts,
            changed_at=changed_at))
