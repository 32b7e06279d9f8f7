"""One outgoing notification, as the outbox stores it and sinks send it.

The fields are those of an oslo.messaging notification envelope
(messagingv2), so the messaging sink sends them unchanged and consumers
see vmha's own ``message_id``: the same id on every resend of the same
row, which is what lets the bridge forward it to Masakari at most once.
"""

import collections

Message = collections.namedtuple(
    'Message', ['message_id', 'event_type', 'priority', 'publisher_id',
                'payload', 'timestamp'])
Message.__doc__ = """An outgoing notification.

:param message_id: unique id (a UUID string), fixed when the row is written
:param event_type: ``object.action[.phase]``, e.g. 'instance.failure'
:param priority: 'INFO', 'WARN' or 'ERROR' (oslo.messaging's names)
:param publisher_id: 'vmha-agent:<host>'
:param payload: the serialized versioned payload, a dict with
    'vmha_object.name', 'vmha_object.namespace', 'vmha_object.version'
    and 'vmha_object.data'
:param timestamp: when the decision was made, UTC, 'YYYY-MM-DD
    HH:MM:SS.ffffff' as oslo.messaging writes it
"""
