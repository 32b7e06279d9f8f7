"""vmha-masakari-bridge's own surface: /metrics and /healthz over HTTP,
bad messages dropped with one rate-limited line each, and the options.

The bridge runs in-process on ``fake://`` with a real HTTP server
answering as masakari-api (``fake_masakari``); the rate limit is driven
with a fake clock.
"""

import json
import logging
import urllib.error
import urllib.request
import uuid

import oslo_messaging
from prometheus_client import parser
import pytest

from tests.fixtures import fake_masakari
from tests.unit import test_bridge
from tests.unit import test_sinks
from vmha.bridge import logs
from vmha.notify.sinks import messaging as messaging_sink

HANDLED = oslo_messaging.NotificationResult.HANDLED
failure_payload = test_sinks.failure_payload
deliver = test_bridge.deliver


def served_conf(masakari_endpoint, **bridge):
    """A bridge configuration with its HTTP endpoint on a free port."""
    return test_bridge.make_conf(masakari_endpoint, bridge=dict(
        {'port': fake_masakari.unused_port()}, **bridge))


def get(service, path):
    """(status, body) of GET ``path`` on the bridge's endpoint."""
    try:
        with urllib.request.urlopen(service.http.url + path,
                                    timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(service):
    """``{sample name: {labels tuple: value}}`` from /metrics, parsed
    with prometheus-client's own text parser."""
    status, body = get(service, '/metrics')
    assert status == 200
    samples = {}
    for family in parser.text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[
                tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def send_raw(transport, conf, message):
    """Publish ``message`` (the notification dict) as any publisher on
    the bus could, with whatever fields it likes."""
    target = oslo_messaging.Target(
        topic='%s.error' % conf.notifications.topics[0])
    transport._send_notification(target, {}, dict(message), version=2.0)


def raw_failure(**fields):
    message = {'message_id': str(uuid.uuid4()),
               'publisher_id': 'vmha-agent:compute-1',
               'event_type': 'instance.failure', 'priority': 'ERROR',
               'payload': failure_payload(),
               'timestamp': '2026-03-01 10:20:30.000000'}
    message.update(fields)
    return message


# --- /metrics ----------------------------------------------------------------

def test_metrics_count_forwarded_rejected_by_status_requeued_and_retries(
        transport, run_bridge, masakari, wait_for):
    conf = served_conf(masakari.endpoint)
    service = run_bridge(conf)
    sink = messaging_sink.MessagingSink(conf, transport=transport)
    masakari.maintenance.add('compute-2')
    masakari.hosts.add('compute-2')

    sink.send(test_sinks.failure_message())                       # 202
    sink.send(test_sinks.failure_message(payload=failure_payload(
        host='compute-9')))                                       # 400
    sink.send(test_sinks.failure_message(payload=failure_payload(
        host='compute-2')))                                       # 409
    wait_for(lambda: len(masakari.requests) == 3, what='three POSTs')
    masakari.script = [503, 503]   # try and retry fail: requeued once
    sink.send(test_sinks.failure_message(payload=dict(
        failure_payload(), **{'vmha_object.data': dict(
            failure_payload()['vmha_object.data'],
            uuid=str(uuid.UUID(int=7)))})))
    # Masakari stores it before it answers: wait for the bridge to have
    # read the answer too.
    wait_for(lambda: len(masakari.notifications) == 2
             and not service.listener.stats().in_hand,
             what='the redelivered failure accepted')

    metrics = scrape(service)
    assert metrics['vmha_bridge_forwarded_total'] == {(): 2.0}
    assert metrics['vmha_bridge_rejected_total'] == {
        (('status', '400'),): 1.0, (('status', '409'),): 1.0}
    assert metrics['vmha_bridge_requeued_total'] == {(): 1.0}
    # The 503 retried once; the redelivery's first try is no retry.
    assert metrics['vmha_bridge_masakari_retries_total'] == {(): 1.0}
    assert metrics['vmha_bridge_masakari_request_seconds_count'] == {
        (): 6.0}
    assert metrics['vmha_bridge_in_hand'] == {(): 0.0}
    assert metrics['vmha_bridge_listener_running'] == {(): 1.0}


# --- /healthz ----------------------------------------------------------------

def test_healthz_is_200_while_consuming_and_503_once_stopped(
        run_bridge, masakari):
    service = run_bridge(served_conf(masakari.endpoint))

    status, body = get(service, '/healthz')
    assert status == 200
    report = json.loads(body)
    assert report['status'] == 'ok'
    assert report['checks']['listener']['running'] is True

    service.listener.stop()

    status, body = get(service, '/healthz')
    assert status == 503
    report = json.loads(body)
    assert report['status'] == 'unhealthy'
    assert report['checks']['listener'] == dict(
        report['checks']['listener'], ok=False, running=False)
    assert report['checks']['masakari']['ok'] is True
    service.listener.wait()
    service.http.stop()


def test_healthz_is_503_while_a_notification_is_held_past_stall_timeout(
        transport, run_bridge, masakari, wait_for):
    # Masakari takes 3 s to answer; the bridge may hold a notification
    # for 1 s.  Holding it longer is what stuck executor threads look
    # like.
    conf = served_conf(masakari.endpoint, stall_timeout=1.0)
    service = run_bridge(conf)
    masakari.script = ['hang']
    masakari.hang_seconds = 3.0

    messaging_sink.MessagingSink(conf, transport=transport).send(
        test_sinks.failure_message())
    wait_for(lambda: masakari.requests, what='the POST under way')
    wait_for(lambda: get(service, '/healthz')[0] == 503, timeout=3,
             what='/healthz 503')

    report = json.loads(get(service, '/healthz')[1])
    assert report['checks']['listener']['in_hand'] == 1
    assert report['checks']['listener']['oldest_age'] > 1.0
    assert 'a notification has been in hand' in (
        service.health.problems()[0])
    assert not service.health.turning_over()   # the watchdog starves
    wait_for(lambda: get(service, '/healthz')[0] == 200, timeout=10,
             what='/healthz 200 once Masakari answered')


def test_healthz_is_503_once_masakari_failed_longer_than_allowed(
        transport, run_bridge, wait_for):
    unreachable = 'http://127.0.0.1:%d/v1' % fake_masakari.unused_port()
    conf = served_conf(unreachable, masakari_failing_timeout=0.0)
    service = run_bridge(conf)
    assert get(service, '/healthz')[0] == 200      # nothing tried yet

    messaging_sink.MessagingSink(conf, transport=transport).send(
        test_sinks.failure_message())
    wait_for(lambda: service.masakari.requests >= 2, what='two tries')

    status, body = get(service, '/healthz')
    assert status == 503
    masakari_check = json.loads(body)['checks']['masakari']
    assert masakari_check['ok'] is False
    assert masakari_check['last_status'] is None
    # Not a reason to restart the bridge.
    assert service.health.turning_over()


# --- bad messages ----------------------------------------------------------

def bridge_lines(caplog):
    return [record for record in caplog.records
            if record.name.startswith(('vmha', 'oslo'))
            and record.levelno >= logging.INFO]


def test_a_flood_of_malformed_failures_logs_a_bounded_number_of_lines(
        masakari, caplog):
    # 1,000 failures that are not vmha's, from a broken publisher: each
    # used to be an ERROR line of its own.
    caplog.set_level(logging.INFO)
    endpoint = test_bridge.bridge_endpoint.MasakariEndpoint.from_conf(
        test_bridge.make_conf(masakari.endpoint,
                              bridge={'bad_message_log_rate': 5}))

    for number in range(1000):
        assert deliver(endpoint, {'junk': number},
                       message_id='bad-%d' % number) == HANDLED
    assert deliver(endpoint, message_id='good-1') == HANDLED

    warnings = [record for record in bridge_lines(caplog)
                if record.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert all(record.exc_info is None for record in warnings)
    assert warnings[0].getMessage() == (
        'Dropping malformed instance.failure notification bad-0 from '
        'vmha-agent:compute-1: payload namespace is None, expected '
        "'vmha'")
    assert len(masakari.requests) == 1        # the good one got through


@pytest.mark.parametrize('fields,why', [
    ({'priority': 5}, 'priority 5 is not a notification priority'),
    ({'priority': 'LOUD'}, "priority LOUD is not a notification priority"),
    ({'message_id': ['m', 1]}, "message id ['m', 1] is not a string"),
])
def test_a_notification_oslo_messaging_would_requeue_for_ever_is_dropped(
        transport, run_bridge, masakari, fields, why, caplog, wait_for):
    # A priority that is no string made oslo.messaging's dispatcher raise
    # (a traceback, then a requeue, for ever); a list as message id made
    # the endpoint raise the same way; an unknown priority was a warning
    # per message.
    conf = test_bridge.make_conf(masakari.endpoint)
    service = run_bridge(conf)

    send_raw(transport, conf, raw_failure(**fields))
    send_raw(transport, conf, raw_failure())
    wait_for(lambda: len(masakari.requests) == 1, what='the good one')
    wait_for(lambda: not service.listener.stats().in_hand, what='both '
             'handled')

    assert service.listener.stats().received == 2     # no redelivery
    [line] = [record for record in bridge_lines(caplog)
              if record.levelno >= logging.WARNING]
    assert why in line.getMessage()
    assert line.exc_info is None
    kind = scrape_counters(service)
    assert kind['vmha_bridge_bad_messages_total'] == 1


def scrape_counters(service):
    """Counter totals over all labels, read from the registry."""
    totals = {}
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith('_total'):
                totals[sample.name] = totals.get(sample.name, 0) + (
                    sample.value)
    return totals


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_limited_log_says_how_many_it_left_out(caplog):
    clock = FakeClock()
    limited = logs.RateLimitedLog(logging.getLogger('vmha.test'),
                                  logging.WARNING, 3, 'bad messages',
                                  clock)
    caplog.set_level(logging.INFO)

    for number in range(10):
        limited.log('bad %d', number)
    clock.now += 30
    limited.flush()
    assert [r.getMessage() for r in caplog.records] == [
        'bad 0', 'bad 1', 'bad 2']
    clock.now += 31
    limited.flush()
    limited.log('bad %d', 10)

    assert [r.getMessage() for r in caplog.records] == [
        'bad 0', 'bad 1', 'bad 2',
        '7 more bad messages without a line of their own in the last 61 s '
        '(at most 3 lines a minute)', 'bad 10']

    # On the way out it says so at once, minute over or not.
    for number in range(11, 14):
        limited.log('bad %d', number)
    limited.flush(final=True)
    assert [r.getMessage() for r in caplog.records][-3:] == [
        'bad 11', 'bad 12', '1 more bad messages without a line of their '
        'own in the last 0 s (at most 3 lines a minute)']


def test_a_hostile_line_stays_one_short_line(masakari, caplog):
    endpoint = test_bridge.bridge_endpoint.MasakariEndpoint.from_conf(
        test_bridge.make_conf(masakari.endpoint))

    deliver(endpoint, {'vmha_object.namespace': 'x\nERROR forged' * 1000},
            message_id='bad\n1')

    [record] = caplog.records
    assert '\n' not in record.getMessage()
    assert len(record.getMessage()) < 400


# --- options ---------------------------------------------------------------

def test_the_bridge_endpoint_defaults_beside_the_agents():
    conf = test_sinks.make_conf()

    assert (conf.bridge.listen_host, conf.bridge.port) == ('127.0.0.1',
                                                           8918)
    assert conf.bridge.port != conf.health.port

