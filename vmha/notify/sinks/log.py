"""The ``log`` sink: one readable log line per notification."""

import logging

from vmha.notify import base

LOG = logging.getLogger(__name__)

# Fields worth reading first, when a payload has them.
_FIRST_FIELDS = ('uuid', 'name', 'host', 'event', 'vir_domain_event',
                 'cause', 'evidence', 'detected_at')
_MAX_VALUE_LENGTH = 200


class LogSink(base.Sink):
    """Logs each notification (INFO; WARN and ERROR ones at WARNING).

    ``ERROR instance.failure [3f2c...] vmha-agent:compute-1
    InstanceFailurePayload 1.0: uuid=... name=web-1 host=compute-1
    event=LIFECYCLE vir_domain_event=STOPPED_FAILED cause=qemu_died``
    """

    name = 'log'

    def __init__(self, conf=None, transport=None):
        pass

    def send(self, message):
        level = (logging.WARNING if message.priority.upper() in
                 ('WARN', 'WARNING', 'ERROR', 'CRITICAL') else logging.INFO)
        LOG.log(level, '%s %s [%s] %s %s', message.priority.upper(),
                message.event_type, message.message_id, message.publisher_id,
                describe_payload(message.payload))


def describe_payload(payload):
    """``Name version: field=value ...`` for a serialized versioned object,
    a shortened repr for anything else."""
    if not isinstance(payload, dict) or 'vmha_object.data' not in payload:
        return _shorten(repr(payload))
    data = payload['vmha_object.data']
    head = '%s %s:' % (payload.get('vmha_object.name'),
                       payload.get('vmha_object.version'))
    if not isinstance(data, dict):
        return '%s %s' % (head, _shorten(repr(data)))
    names = [name for name in _FIRST_FIELDS if name in data]
    names += sorted(name for name in data if name not in _FIRST_FIELDS)
    fields = ['%s=%s' % (name, _shorten(str(data[name])))
              for name in names if data[name] is not None]
    return ' '.join([head] + fields)


def _shorten(text):
    text = text.replace('\n', ' ')
    if len(text) > _MAX_VALUE_LENGTH:
        return text[:_MAX_VALUE_LENGTH] + '...'
    return text
