"""Notification bases: event type, publisher, payload, notification.

A notification is (priority, event type ``object.action[.phase]``,
publisher ``source:host``, payload).  ``to_message`` turns one into the
``vmha.notify.message.Message`` the outbox stores and sinks send, with a
fresh unique message id.
"""

import uuid

from oslo_utils import timeutils

from vmha.notify import message as message_lib
from vmha.objects import base
from vmha.objects import fields


@base.VmhaObjectRegistry.register
class EventType(base.VmhaObject):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'object': fields.StringField(nullable=False),
        'action': fields.StringField(nullable=False),
        'phase': fields.StringField(nullable=True),
    }

    def __init__(self, object, action, phase=None):  # noqa: A002
        super().__init__(object=object, action=action, phase=phase)

    def to_event_type(self):
        """'instance.failure', or 'object.action.phase' with a phase."""
        parts = [self.object, self.action]
        if self.phase:
            parts.append(self.phase)
        return '.'.join(parts)


@base.VmhaObjectRegistry.register
class NotificationPublisher(base.VmhaObject):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'host': fields.StringField(nullable=False),
        'source': fields.StringField(nullable=False),
    }

    def __init__(self, host, source='vmha-agent'):
        super().__init__(host=host, source=source)

    @property
    def publisher_id(self):
        return '%s:%s' % (self.source, self.host)


class NotificationPayloadBase(base.VmhaObject):
    """Base of every payload; each subject module defines its own."""

    # Version 1.0: Initial version
    VERSION = '1.0'


class NotificationBase(base.VmhaObject):
    """Base of every notification; subclasses fix the payload's type."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'priority': fields.NotificationPriorityField(),
        'event_type': fields.ObjectField('EventType'),
        'publisher': fields.ObjectField('NotificationPublisher'),
    }

    def to_message(self, timestamp=None, message_id=None):
        """The outgoing Message, with a new unique id unless given."""
        self.payload.obj_reset_changes(recursive=True)
        timestamp = timestamp or timeutils.utcnow()
        return message_lib.Message(
            message_id=message_id or str(uuid.uuid4()),
            event_type=self.event_type.to_event_type(),
            priority=self.priority.upper(),
            publisher_id=self.publisher.publisher_id,
            payload=self.payload.obj_to_primitive(),
            timestamp=str(timestamp))
