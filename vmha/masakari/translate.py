"""vmha's ``instance.failure`` payload → the body Masakari's API takes.

vmha keeps the true cause of a failure (``cause``: qemu_died, guest_panic,
...) in its own notification, and states it in Masakari's vocabulary in
``event`` / ``vir_domain_event``.  Masakari's engine recovers only three of
those pairs (``RECOVERABLE``); it records and ignores every other one, so
``to_masakari`` returns None for them and nothing is sent.

Validation is strict: a payload that is not a vmha ``InstanceFailurePayload``
1.x with the fields Masakari needs raises ``MalformedNotification`` with a
reason a person can act on.  Newer minor versions (1.1, ...) are accepted:
they only add fields.

The failure episode (``episode``, payload 1.1) stays out of Masakari's
body.  masakari-api 22 checks a VM payload twice: the generic schema
allows extra string keys, but the VM schema after it allows exactly
``event``, ``instance_uuid`` and ``vir_domain_event`` and answers 400
("Additional properties are not allowed") to anything more, so an episode
key would lose every failure.  Nor can those three differ between two
failures of one instance: the engine acts only on the exact pairs in
``RECOVERABLE``.  What tells Masakari a resend from a new failure is
``generated_time``: every resend of an episode carries the episode's own
detection time (see ``_normalize_time``), a new episode a later one.
"""

import datetime
import uuid

FAILURE_EVENT_TYPE = 'instance.failure'
NAMESPACE = 'vmha'
PAYLOAD_NAME = 'InstanceFailurePayload'
SUPPORTED_MAJOR = 1

#: (event, vir_domain_event) pairs Masakari's engine recovers.
RECOVERABLE = frozenset([
    ('LIFECYCLE', 'STOPPED_FAILED'),
    ('IO_ERROR', 'IO_ERROR_REPORT'),
    ('QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED'),
])

#: Fields a failure payload must carry; the others (name, cause,
#: evidence) only make log lines better.
REQUIRED_FIELDS = ('uuid', 'host', 'event', 'vir_domain_event',
                   'detected_at')

# Masakari's schema allows at most this many characters in event names.
_MAX_EVENT_LENGTH = 255


class MalformedNotification(ValueError):
    """The payload cannot be a vmha failure notification; sending it again
    would not help."""


def parse_failure(payload):
    """The data fields of a failure payload, validated.

    :param payload: the serialized ``InstanceFailurePayload`` (a dict with
        the ``vmha_object.*`` keys)
    :returns: the ``vmha_object.data`` dict
    :raises MalformedNotification: with the reason
    """
    if not isinstance(payload, dict):
        raise MalformedNotification(
            'payload is a %s, not a serialized object (dict)'
            % type(payload).__name__)
    namespace = payload.get('vmha_object.namespace')
    if namespace != NAMESPACE:
        raise MalformedNotification(
            'payload namespace is %r, expected %r' % (namespace, NAMESPACE))
    name = payload.get('vmha_object.name')
    if name != PAYLOAD_NAME:
        raise MalformedNotification(
            'payload object is %r, expected %r' % (name, PAYLOAD_NAME))
    _check_version(payload.get('vmha_object.version'))
    data = payload.get('vmha_object.data')
    if not isinstance(data, dict):
        raise MalformedNotification(
            'payload has no vmha_object.data dict (got %s)'
            % type(data).__name__)
    missing = [field for field in REQUIRED_FIELDS if data.get(field) is None]
    if missing:
        raise MalformedNotification(
            '%s %s is missing field(s): %s'
            % (PAYLOAD_NAME, payload.get('vmha_object.version'),
               ', '.join(missing)))
    for field in REQUIRED_FIELDS:
        if not isinstance(data[field], str) or not data[field].strip():
            raise MalformedNotification(
                'field %s must be a non-empty string, got %r'
                % (field, data[field]))
    _check_uuid(data['uuid'])
    for field in ('event', 'vir_domain_event'):
        if len(data[field]) > _MAX_EVENT_LENGTH:
            raise MalformedNotification(
                'field %s is longer than %d characters'
                % (field, _MAX_EVENT_LENGTH))
    return data


def is_recoverable(event, vir_domain_event):
    """Whether Masakari's engine acts on this (event, vir_domain_event)."""
    return (event, vir_domain_event) in RECOVERABLE


def to_masakari(payload):
    """The ``POST /v1/notifications`` body for a failure payload.

    :param payload: the serialized ``InstanceFailurePayload``
    :returns: the body dict, or None when Masakari would not recover the
        (event, vir_domain_event) pair (nothing should be sent)
    :raises MalformedNotification: the payload is not a valid failure
    """
    data = parse_failure(payload)
    if not is_recoverable(data['event'], data['vir_domain_event']):
        return None
    return {
        'notification': {
            'type': 'VM',
            'hostname': data['host'],
            'generated_time': _normalize_time(data['detected_at']),
            'payload': {
                'event': data['event'],
                'instance_uuid': data['uuid'],
                'vir_domain_event': data['vir_domain_event'],
            },
        },
    }


def _check_version(version):
    if not isinstance(version, str):
        raise MalformedNotification(
            'payload has no version string (got %r)' % (version,))
    major, _, minor = version.partition('.')
    if not (major.isdigit() and minor.isdigit()):
        raise MalformedNotification(
            'payload version %r is not MAJOR.MINOR' % version)
    if int(major) != SUPPORTED_MAJOR:
        raise MalformedNotification(
            '%s version %s is not supported (this vmha reads %d.x)'
            % (PAYLOAD_NAME, version, SUPPORTED_MAJOR))


def _check_uuid(value):
    try:
        uuid.UUID(value)
    except ValueError:
        raise MalformedNotification(
            'field uuid is not a UUID: %r' % value) from None


def _normalize_time(value):
    """ISO 8601 with an explicit offset → the same instant in UTC.

    The same failure always gives the same string, so that Masakari's own
    duplicate check (same payload, ``generated_time`` at most
    ``duplicate_notification_detection_interval`` before the new one's)
    sees a resend as one with any interval, 0 included.
    """
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise MalformedNotification(
            'field detected_at is not an ISO 8601 time: %r' % value) from None
    if when.utcoffset() is None:
        raise MalformedNotification(
            'field detected_at has no time zone: %r' % value)
    return when.astimezone(datetime.UTC).isoformat()
