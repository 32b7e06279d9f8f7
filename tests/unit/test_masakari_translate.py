"""vmha's instance.failure payload → Masakari's notification body."""

import copy
import datetime

import pytest

from vmha.manager import decisions
from vmha.masakari import translate
from vmha.objects import instance as instance_objects

UUID = '3f2c8a9e-7b61-4d0a-9a57-2b1f0c6d8e41'


def failure_payload(event='LIFECYCLE', vir_domain_event='STOPPED_FAILED',
                    cause='qemu_died', detected_at=None, evidence=None,
                    episode=None):
    """A payload as the agent serializes it, from the real objects."""
    detected_at = detected_at or datetime.datetime(
        2026, 3, 1, 10, 20, 30, tzinfo=datetime.UTC)
    notification = instance_objects.failure_notification(
        host='compute-1', uuid=UUID, name='web-1', event=event,
        vir_domain_event=vir_domain_event, cause=cause,
        detected_at=detected_at, evidence=evidence, episode=episode)
    return notification.to_message().payload


def test_failure_payload_becomes_the_exact_masakari_body():
    body = translate.to_masakari(failure_payload(evidence='exit 137'))

    assert body == {
        'notification': {
            'type': 'VM',
            'hostname': 'compute-1',
            'generated_time': '2026-03-01T10:20:30+00:00',
            'payload': {
                'event': 'LIFECYCLE',
                'instance_uuid': UUID,
                'vir_domain_event': 'STOPPED_FAILED',
            },
        },
    }


@pytest.mark.parametrize('event,vir_domain_event', sorted(
    translate.RECOVERABLE))
def test_every_pair_masakari_recovers_is_forwarded(event, vir_domain_event):
    body = translate.to_masakari(failure_payload(event, vir_domain_event))

    assert body['notification']['payload']['event'] == event
    assert body['notification']['payload']['vir_domain_event'] == (
        vir_domain_event)


def test_policy_asks_for_recovery_with_exactly_what_masakari_recovers():
    # decisions names the pairs itself (policy does not import delivery):
    # a pair only one side knew would be a failure reported and never
    # recovered, or an episode vmha forgets to open.
    assert decisions.RECOVERY == translate.RECOVERABLE


@pytest.mark.parametrize('event,vir_domain_event', [
    ('LIFECYCLE', 'STOPPED_DESTROYED'),    # an operator's destroy
    ('LIFECYCLE', 'CRASHED_PANICKED'),     # masakari's engine ignores it
    ('LIFECYCLE', 'STOPPED_CRASHED'),
    ('WATCHDOG', 'WATCHDOG_PAUSE'),
    ('IO_ERROR', 'IO_ERROR_PAUSE'),
    ('QEMU_GUEST_AGENT_ERROR', 'STOPPED_DESTROYED'),
])
def test_pairs_masakari_ignores_are_not_sent(event, vir_domain_event):
    assert translate.to_masakari(
        failure_payload(event, vir_domain_event)) is None


def test_a_panic_reported_as_failed_stop_is_forwarded_cause_stays_ours():
    payload = failure_payload('LIFECYCLE', 'STOPPED_FAILED',
                              cause='guest_panic')

    body = translate.to_masakari(payload)

    assert body['notification']['payload']['vir_domain_event'] == (
        'STOPPED_FAILED')
    assert 'cause' not in body['notification']['payload']


@pytest.mark.parametrize('detected_at,generated_time', [
    ('2026-03-01T10:20:30Z', '2026-03-01T10:20:30+00:00'),
    ('2026-03-01T12:20:30.250000+02:00', '2026-03-01T10:20:30.250000+00:00'),
])
def test_detected_at_is_normalized_to_utc(detected_at, generated_time):
    payload = failure_payload()
    payload['vmha_object.data']['detected_at'] = detected_at

    body = translate.to_masakari(payload)

    assert body['notification']['generated_time'] == generated_time


def test_a_newer_minor_version_with_extra_fields_is_accepted():
    payload = failure_payload()
    payload['vmha_object.version'] = '1.3'
    payload['vmha_object.data']['vcpu_time_delta'] = 0

    assert translate.to_masakari(payload) is not None


def _broken(change):
    payload = failure_payload()
    change(payload)
    return payload


def _set(key, value):
    return lambda payload: payload.__setitem__(key, value)


def _set_field(name, value):
    return lambda payload: payload['vmha_object.data'].__setitem__(
        name, value)


def _drop_field(name):
    return lambda payload: payload['vmha_object.data'].pop(name)


@pytest.mark.parametrize('payload,reason', [
    ('not a dict', 'payload is a str, not a serialized object'),
    (None, 'payload is a NoneType'),
    (_broken(_set('vmha_object.namespace', 'nova')),
     "payload namespace is 'nova', expected 'vmha'"),
    (_broken(lambda p: p.pop('vmha_object.namespace')),
     "payload namespace is None, expected 'vmha'"),
    (_broken(_set('vmha_object.name', 'InstanceLifecyclePayload')),
     "payload object is 'InstanceLifecyclePayload', expected "
     "'InstanceFailurePayload'"),
    (_broken(_set('vmha_object.version', '2.0')),
     'InstanceFailurePayload version 2.0 is not supported (this vmha '
     'reads 1.x)'),
    (_broken(_set('vmha_object.version', 'one')),
     "payload version 'one' is not MAJOR.MINOR"),
    (_broken(_set('vmha_object.data', ['uuid'])),
     'payload has no vmha_object.data dict (got list)'),
    (_broken(_drop_field('host')),
     'InstanceFailurePayload 1.4 is missing field(s): host'),
    (_broken(lambda p: (p['vmha_object.data'].pop('uuid'),
                        p['vmha_object.data'].pop('detected_at'))),
     'is missing field(s): uuid, detected_at'),
    (_broken(_set_field('event', None)), 'missing field(s): event'),
    (_broken(_set_field('vir_domain_event', 5)),
     'field vir_domain_event must be a non-empty string, got 5'),
    (_broken(_set_field('host', '  ')),
     "field host must be a non-empty string, got '  '"),
    (_broken(_set_field('uuid', 'web-1')),
     "field uuid is not a UUID: 'web-1'"),
    (_broken(_set_field('detected_at', 'yesterday')),
     "field detected_at is not an ISO 8601 time: 'yesterday'"),
    (_broken(_set_field('detected_at', '2026-03-01T10:20:30')),
     "field detected_at has no time zone: '2026-03-01T10:20:30'"),
    (_broken(_set_field('event', 'E' * 300)),
     'field event is longer than 255 characters'),
])
def test_malformed_payloads_raise_a_readable_reason(payload, reason):
    with pytest.raises(translate.MalformedNotification) as caught:
        translate.to_masakari(copy.deepcopy(payload))

    assert reason in str(caught.value)


def test_validation_happens_before_the_recoverable_filter():
    payload = failure_payload('LIFECYCLE', 'STOPPED_DESTROYED')
    payload['vmha_object.namespace'] = 'nova'

    with pytest.raises(translate.MalformedNotification):
        translate.to_masakari(payload)


def test_translation_does_not_change_the_payload():
    payload = failure_payload()
    before = copy.deepcopy(payload)

    translate.to_masakari(payload)

    assert payload == before


def test_two_episodes_differ_in_generated_time_and_a_resend_does_not():
    # Masakari 22's VM payload takes no episode key (400: "Additional
    # properties are not allowed"), so the episode stays out of it; each
    # episode's own detection time tells Masakari a new one.
    first_at = datetime.datetime(2026, 3, 1, 10, 20, 30, tzinfo=datetime.UTC)
    first = failure_payload(detected_at=first_at, episode='a' * 32)
    second = failure_payload(
        detected_at=first_at + datetime.timedelta(seconds=20),
        episode='b' * 32)

    first_body = translate.to_masakari(first)
    second_body = translate.to_masakari(second)

    assert first_body['notification']['payload'] == (
        second_body['notification']['payload']) == {
        'event': 'LIFECYCLE', 'instance_uuid': UUID,
        'vir_domain_event': 'STOPPED_FAILED'}
    assert first_body['notification']['generated_time'] == (
        '2026-03-01T10:20:30+00:00')
    assert second_body['notification']['generated_time'] == (
        '2026-03-01T10:20:50+00:00')
    assert translate.to_masakari(copy.deepcopy(first)) == first_body


def test_a_1_0_payload_from_before_episodes_translates_as_before():
    payload = failure_payload(episode='a' * 32)
    old = copy.deepcopy(payload)
    old['vmha_object.version'] = '1.0'
    del old['vmha_object.data']['episode']
    del old['vmha_object.data']['suppressed']

    assert translate.to_masakari(old) == translate.to_masakari(payload)
