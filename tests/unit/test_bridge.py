"""vmha-masakari-bridge: the endpoint's answers, at-most-once forwarding,
and the whole path bus → listener → Masakari (fake:// and a real HTTP
server answering as masakari-api)."""

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import oslo_messaging
import pytest

from tests.fixtures import fake_masakari
from tests.unit import test_sinks
from vmha.bridge import endpoint as bridge_endpoint
from vmha.cmd import bridge as bridge_cmd
from vmha.notify.sinks import messaging as messaging_sink

HANDLED = oslo_messaging.NotificationResult.HANDLED
REQUEUE = oslo_messaging.NotificationResult.REQUEUE
PUBLISHER = 'vmha-agent:compute-1'
failure_payload = test_sinks.failure_payload


def make_conf(endpoint, **groups):
    groups.setdefault('masakari', {})
    groups['masakari'] = dict({'noauth': True, 'endpoint_override': endpoint,
                               'retry_max': 1, 'retry_interval': 0.01},
                              **groups['masakari'])
    # No HTTP endpoint unless a test asks for one (on a free port).
    # A state file of its own (one bridge per file, locked).
    groups['bridge'] = dict({'port': 0, 'state_file': os.path.join(
        tempfile.mkdtemp(prefix='vmha-bridge-'), 'state.sqlite')},
        **groups.get('bridge', {}))
    return test_sinks.make_conf(**groups)


@pytest.fixture
def endpoint(masakari):
    return bridge_endpoint.MasakariEndpoint.from_conf(
        make_conf(masakari.endpoint))


def deliver(endpoint, payload=None, message_id=None,
            event_type='instance.failure'):
    """What the listener's dispatcher does with an ERROR notification."""
    return endpoint.error(
        {}, PUBLISHER, event_type,
        failure_payload() if payload is None else payload,
        {'message_id': message_id or str(uuid.uuid4()),
         'timestamp': '2026-03-01 10:20:30.000000'})


# --- the endpoint's answers --------------------------------------------------

def test_accepted_failure_is_acknowledged(endpoint, masakari, caplog):
    caplog.set_level(logging.INFO)

    assert deliver(endpoint, message_id='m-1') == HANDLED

    [(path, headers, body)] = masakari.requests
    assert body['notification']['hostname'] == 'compute-1'
    assert 'Masakari accepted the failure of instance' in caplog.text
    assert 'notification m-1' in caplog.text


@pytest.mark.parametrize('host,status,reason', [
    ('compute-9', 400, 'Host with name compute-9 could not be found.'),
    ('compute-1', 409, 'is already under maintenance'),
])
def test_rejected_for_good_is_acknowledged_with_masakaris_reason(
        endpoint, masakari, host, status, reason, caplog):
    masakari.maintenance.add('compute-1')

    assert deliver(endpoint, failure_payload(host=host)) == HANDLED

    assert len(masakari.requests) == 1
    assert 'HTTP %d: ' % status in caplog.text
    assert reason in caplog.text


def test_duplicate_within_masakaris_window_is_acknowledged(
        endpoint, masakari):
    # Two different message ids for one failure (e.g. two agents' views,
    # or two bridges in different pools): Masakari answers 409.
    assert deliver(endpoint) == HANDLED
    assert deliver(endpoint) == HANDLED

    assert len(masakari.notifications) == 1
    assert len(masakari.requests) == 2


@pytest.mark.parametrize('script', [[503, 503], [500, 'drop'],
                                    ['drop', 'drop']])
def test_masakari_unavailable_requeues(endpoint, masakari, script, caplog):
    masakari.script = script

    assert deliver(endpoint, message_id='m-7') == REQUEUE

    assert len(masakari.requests) == 2   # the first try and one retry
    assert 'notification m-7' in caplog.text
    assert 'it will be sent again' in caplog.text


def test_masakari_unreachable_requeues():
    unreachable = 'http://127.0.0.1:%d/v1' % fake_masakari.unused_port()
    endpoint = bridge_endpoint.MasakariEndpoint.from_conf(
        make_conf(unreachable))

    assert deliver(endpoint) == REQUEUE


def test_a_requeued_message_is_forwarded_when_redelivered(
        endpoint, masakari):
    masakari.script = [503, 503]
    assert deliver(endpoint, message_id='m-1') == REQUEUE

    assert deliver(endpoint, message_id='m-1') == HANDLED

    assert len(masakari.notifications) == 1


def test_the_same_message_id_is_forwarded_once(endpoint, masakari, caplog):
    caplog.set_level(logging.INFO)

    results = [deliver(endpoint, message_id='m-1') for _ in range(3)]

    assert results == [HANDLED] * 3
    assert len(masakari.requests) == 1
    assert 'notification m-1 from %s was already handled' % PUBLISHER in (
        caplog.text)


def test_a_rejected_message_id_is_not_posted_again(endpoint, masakari):
    payload = failure_payload(host='compute-9')

    deliver(endpoint, payload, message_id='m-1')
    deliver(endpoint, payload, message_id='m-1')

    assert len(masakari.requests) == 1


@pytest.mark.parametrize('payload,reason', [
    ('a string', 'payload is a str'),
    ({'vmha_object.namespace': 'vmha',
      'vmha_object.name': 'GuestHealthPayload',
      'vmha_object.version': '1.0', 'vmha_object.data': {}},
     "payload object is 'GuestHealthPayload'"),
    (dict(failure_payload(), **{'vmha_object.namespace': 'nova'}),
     "payload namespace is 'nova'"),
    (dict(failure_payload(), **{'vmha_object.data': {'uuid': 'x'}}),
     'missing field(s): host, event'),
])
def test_malformed_is_dropped_and_the_next_good_one_still_forwarded(
        endpoint, masakari, payload, reason, caplog):
    assert deliver(endpoint, payload, message_id='bad-1') == HANDLED
    assert masakari.requests == []
    assert 'Dropping malformed instance.failure notification bad-1' in (
        caplog.text)
    assert reason in caplog.text

    assert deliver(endpoint, message_id='good-1') == HANDLED
    assert len(masakari.requests) == 1


def test_failure_masakari_does_not_recover_is_acknowledged_unsent(
        endpoint, masakari, caplog):
    caplog.set_level(logging.INFO)
    payload = failure_payload('LIFECYCLE', 'STOPPED_DESTROYED')

    assert deliver(endpoint, payload) == HANDLED

    assert masakari.requests == []
    assert 'is not one Masakari recovers; not sent' in caplog.text


@pytest.mark.parametrize('event_type', [
    'instance.lifecycle', 'guest.health', 'host.connection',
    'instance.create.error'])
def test_other_notifications_are_ignored_with_a_debug_line(
        endpoint, masakari, event_type, caplog):
    caplog.set_level(logging.DEBUG, logger='vmha.bridge.endpoint')

    assert deliver(endpoint, {'nova_object.name': 'X'}, message_id='o-1',
                   event_type=event_type) == HANDLED

    assert masakari.requests == []
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert 'Ignoring %s notification o-1' % event_type in (
        record.getMessage())


def test_a_failure_without_message_id_is_still_forwarded(endpoint, masakari):
    result = endpoint.error({}, PUBLISHER, 'instance.failure',
                            failure_payload(), {'message_id': None})

    assert result == HANDLED
    assert len(masakari.requests) == 1


def test_only_error_priority_is_consumed(endpoint):
    dispatcher = oslo_messaging.notify.dispatcher.NotificationDispatcher(
        [endpoint], None)

    assert list(dispatcher.supported_priorities) == ['error']


# --- ForwardedIds ------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_forwarded_ids_are_bounded_oldest_forgotten_first():
    ids = bridge_endpoint.ForwardedIds(size=2, window=3600)
    for message_id in ('a', 'b', 'c'):
        assert ids.claim(message_id)
        ids.release(message_id, finished=True)

    assert len(ids) == 2
    assert ids.claim('a')            # forgotten: forwarded again
    assert not ids.claim('c')


def test_forwarded_ids_expire_after_the_window():
    clock = FakeClock()
    ids = bridge_endpoint.ForwardedIds(size=10, window=60, clock=clock)
    ids.claim('a')
    ids.release('a', finished=True)

    clock.now += 59
    assert not ids.claim('a')
    clock.now += 2
    assert ids.claim('a')


def test_a_forwarded_id_is_forgotten_exactly_at_the_window():
    clock = FakeClock()
    ids = bridge_endpoint.ForwardedIds(size=10, window=60, clock=clock)
    ids.claim('a')
    ids.release('a', finished=True)

    clock.now += 60
    assert ids.claim('a')


def test_unfinished_ids_can_be_claimed_again():
    ids = bridge_endpoint.ForwardedIds(size=10, window=60)
    assert ids.claim('a')
    ids.release('a', finished=False)

    assert ids.claim('a')


def test_window_zero_remembers_nothing():
    ids = bridge_endpoint.ForwardedIds(size=10, window=0)
    ids.claim('a')
    ids.release('a', finished=True)

    assert ids.claim('a')


def test_a_concurrent_delivery_waits_for_the_first_then_is_a_duplicate():
    ids = bridge_endpoint.ForwardedIds(size=10, window=60)
    assert ids.claim('a')
    answers = []
    second = threading.Thread(target=lambda: answers.append(ids.claim('a')))
    second.start()
    time.sleep(0.05)
    assert answers == []             # still waiting for the first

    ids.release('a', finished=True)
    second.join(5)

    assert answers == [False]


# --- the whole path over the bus ---------------------------------------------

def test_bus_to_masakari_once_per_message_id(
        transport, run_bridge, masakari, wait_for):
    conf = make_conf(masakari.endpoint)
    run_bridge(conf)
    sink = messaging_sink.MessagingSink(conf, transport=transport)
    failure = test_sinks.failure_message()

    sink.send(test_sinks.lifecycle_message())
    sink.send(failure)
    sink.send(failure)           # the agent's resend after a lost confirm
    sink.send(test_sinks.failure_message(payload=failure_payload(
        'LIFECYCLE', 'STOPPED_DESTROYED')))
    marker = test_sinks.failure_message(payload=failure_payload(
        host='compute-9'))
    sink.send(marker)

    wait_for(lambda: len(masakari.requests) == 2, what='two POSTs')
    time.sleep(0.2)
    # Handled concurrently (executor threads): order is not kept.
    assert sorted(body['notification']['hostname']
                  for _, _, body in masakari.requests) == [
        'compute-1', 'compute-9']


def test_bus_redelivers_what_masakari_did_not_take(
        transport, run_bridge, masakari, wait_for):
    conf = make_conf(masakari.endpoint)
    masakari.script = [503, 503]     # the first delivery: try + retry
    run_bridge(conf)

    messaging_sink.MessagingSink(conf, transport=transport).send(
        test_sinks.failure_message())

    wait_for(lambda: len(masakari.notifications) == 1,
             what='the redelivered notification accepted')
    assert len(masakari.requests) == 3


def test_bridge_copies_in_one_pool_share_the_work(
        transport, run_bridge, masakari, wait_for):
    conf = make_conf(masakari.endpoint)
    run_bridge(conf)
    # The same pool and topic; a state file of its own.
    other = make_conf(masakari.endpoint)
    other.set_override('topics', conf.notifications.topics,
                       group='notifications')
    run_bridge(other)
    sink = messaging_sink.MessagingSink(conf, transport=transport)

    for number in range(6):
        sink.send(test_sinks.failure_message(payload=dict(
            failure_payload(), **{'vmha_object.data': dict(
                failure_payload()['vmha_object.data'],
                uuid=str(uuid.UUID(int=number)))})))

    wait_for(lambda: len(masakari.requests) >= 6, what='six POSTs')
    time.sleep(0.2)
    assert len(masakari.requests) == 6
    assert len(masakari.notifications) == 6


# --- vmha-masakari-bridge ----------------------------------------------------

def test_bad_option_is_one_line_and_exit_2(tmp_path, capsys):
    config_file = tmp_path / 'vmha.conf'
    config_file.write_text('[bridge]\ndedupe_size = many\n')

    assert bridge_cmd.main(['--config-file', str(config_file)]) == 2

    err = capsys.readouterr().err
    assert err.startswith('vmha-masakari-bridge: configuration error: '
                          'invalid value for [bridge] dedupe_size')
    assert err.count('\n') == 1


def test_unusable_masakari_options_are_one_line_and_exit_2(tmp_path):
    config_file = tmp_path / 'vmha.conf'
    config_file.write_text('[masakari]\nnoauth = true\n')

    result = subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.bridge', '--config-file',
         str(config_file)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'vmha-masakari-bridge: configuration error: [masakari] noauth = '
        'true needs endpoint_override (e.g. http://controller:15868/v1)')


def test_sigterm_stops_the_bridge_cleanly(tmp_path, masakari):
    config_file = tmp_path / 'vmha.conf'
    config_file.write_text(
        '[oslo_messaging_notifications]\ntransport_url = fake://\n'
        '[masakari]\nnoauth = true\nendpoint_override = %s\n'
        '[bridge]\nport = 0\n' % masakari.endpoint)
    process = subprocess.Popen(
        [sys.executable, '-m', 'vmha.cmd.bridge', '--config-file',
         str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
        for line in process.stdout:
            if 'forwarding failures from versioned_notifications' in line:
                break
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert 'Signal %d received; stopping' % signal.SIGTERM in output
    assert 'vmha-masakari-bridge stopped' in output
