"""The bridge's own surface against the real RabbitMQ and masakari-api:
/metrics after real forwards, /healthz when it is wedged, a flood of junk
that must not fill the disk, and a redelivery that is no alarm.

Before, the bridge had no endpoint at all, oslo.messaging logged about 66
lines of traceback for each message it could not decode (86 MB of log
for 10,000 junk messages), a notification with a priority that is not a
string was requeued for ever with a traceback each time, and a message
delivered again after it was handled was a ``DuplicateMessageError``
traceback.
"""

import json
import time
import uuid

import kombu
import pytest

from tests.fixtures import fake_masakari
from tests.integration import pipeline

JUNK_PER_KIND = 500


def failure_payload(host, instance_uuid=None, **data):
    """An InstanceFailurePayload as vmha serializes it."""
    fields = {'uuid': instance_uuid or str(uuid.uuid4()), 'name': 'vm-1',
              'host': host, 'event': 'LIFECYCLE',
              'vir_domain_event': 'STOPPED_FAILED', 'cause': 'qemu_died',
              'evidence': None, 'detected_at': '2026-11-23T16:00:05Z'}
    fields.update(data)
    return {'vmha_object.name': 'InstanceFailurePayload',
            'vmha_object.namespace': 'vmha', 'vmha_object.version': '1.0',
            'vmha_object.data': fields}


def envelope(host, payload, priority='ERROR', unique_id=None):
    """An oslo.messaging 2.0 envelope as the messagingv2 notifier makes
    it, with its own ``_unique_id``."""
    return json.dumps({'oslo.version': '2.0', 'oslo.message': json.dumps({
        'message_id': str(uuid.uuid4()),
        'publisher_id': 'vmha-agent:%s' % host,
        'event_type': 'instance.failure', 'priority': priority,
        'payload': payload, 'timestamp': '2026-11-23 16:00:05.000000',
        '_unique_id': unique_id or uuid.uuid4().hex})})


class RawPublisher:
    """Publishes bodies of its choosing on the bridge's topic, as any
    client of the broker could."""

    def __init__(self, transport_url, topic):
        self._connection = kombu.Connection(
            transport_url.replace('rabbit://', 'amqp://'))
        self._producer = self._connection.Producer()
        self._exchange = kombu.Exchange(topic, type='topic', durable=True)
        self._routing_key = '%s.error' % topic

    def publish(self, body):
        self._producer.publish(
            body, exchange=self._exchange, routing_key=self._routing_key,
            content_type='application/json', content_encoding='utf-8',
            declare=[])

    def close(self):
        self._connection.release()


@pytest.fixture
def publisher(rabbitmq, topic):
    raw = RawPublisher(rabbitmq.transport_url, topic)
    yield raw
    raw.close()


@pytest.fixture
def host(masakari):
    name = 'compute-obs-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(name)
    return name


def counter(metrics, name, **labels):
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_a_flood_of_junk_leaves_the_log_small_and_failures_still_arrive(
        masakari, host, publisher, make_agent, start_bridge):
    bridge = start_bridge(masakari)
    started_size = bridge.log_file.stat().st_size

    for number in range(JUNK_PER_KIND):
        # Not JSON at all, and an envelope whose message is not JSON:
        # oslo.messaging cannot decode either.
        publisher.publish(b'{"oslo.version": "2.0", "oslo.message": %d'
                          % number)
        publisher.publish(json.dumps({'oslo.version': '2.0',
                                      'oslo.message': '{"junk": %d'
                                      % number}))
        # A priority that is no string: oslo.messaging's dispatcher raised
        # and requeued it, for ever.
        publisher.publish(envelope(host, failure_payload(host),
                                   priority=number))
        # A failure that is not vmha's: vmha's endpoint dropped it with an
        # ERROR line each.
        publisher.publish(envelope(host, {'vmha_object.name': 'Junk%d'
                                          % number}))
    pipeline.wait_for(
        lambda: sum(bridge.metrics()['vmha_bridge_bad_messages_total']
                    .values()) >= 4 * JUNK_PER_KIND, 120,
        'every junk message dropped')

    good = str(uuid.uuid4())
    result = make_agent(host).run('--write', good, '--send')
    assert result.returncode == 0, result.stdout + result.stderr
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the good failure in Masakari')
    time.sleep(2)  # a requeued junk message would come back meanwhile

    metrics = bridge.metrics()
    assert counter(metrics, 'vmha_bridge_bad_messages_total',
                   kind='undecodable') == 2 * JUNK_PER_KIND
    assert counter(metrics, 'vmha_bridge_bad_messages_total',
                   kind='invalid') == JUNK_PER_KIND
    assert counter(metrics, 'vmha_bridge_bad_messages_total',
                   kind='malformed') == JUNK_PER_KIND
    assert counter(metrics, 'vmha_bridge_forwarded_total') == 1
    [row] = masakari.notifications(host)
    assert row['payload'] == pipeline.failure_row_payload(good)

    text = bridge.log_text()[started_size:]
    lines = text.splitlines()
    # At most [bridge] bad_message_log_rate (10) lines a minute, and one
    # line saying how many were left out; the flood takes well under two
    # minutes.  The accepted failure is one more.
    dropped = [line for line in lines if 'Dropping' in line]
    assert 1 <= len(dropped) <= 20, dropped
    assert len(lines) <= 30, '\n'.join(lines[:40])
    assert 'Traceback' not in text
    assert len(text) < 10000
    assert bridge.running()


def test_metrics_count_real_forwards_and_masakaris_400_and_409(
        masakari, host, make_agent, start_bridge):
    in_maintenance = 'compute-obs-maint-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(in_maintenance, on_maintenance=True)
    unknown = 'compute-obs-unknown-%s' % uuid.uuid4().hex[:6]
    bridge = start_bridge(masakari)

    for hostname in (host, unknown, in_maintenance):
        result = make_agent(hostname).run('--write', str(uuid.uuid4()),
                                          '--send')
        assert result.returncode == 0, result.stdout + result.stderr
    bridge.wait_for_log('Masakari accepted the failure')
    bridge.wait_for_log('Masakari rejected the failure', count=2)

    metrics = bridge.metrics()
    assert counter(metrics, 'vmha_bridge_forwarded_total') == 1
    assert counter(metrics, 'vmha_bridge_rejected_total',
                   status='400') == 1
    assert counter(metrics, 'vmha_bridge_rejected_total',
                   status='409') == 1
    assert counter(metrics, 'vmha_bridge_requeued_total') == 0
    assert counter(metrics, 'vmha_bridge_masakari_retries_total') == 0
    assert counter(metrics,
                   'vmha_bridge_masakari_request_seconds_count') == 3
    status, body = bridge.get('/healthz')
    assert status == 200
    checks = json.loads(body)['checks']
    assert checks['masakari'] == dict(checks['masakari'], ok=True,
                                      failing_for=None, requests=3)
    assert checks['listener']['received'] == 3


def test_healthz_is_503_while_the_bridge_holds_a_notification_too_long(
        rabbitmq, topic, make_agent, tmp_path):
    # Masakari answers after 3 s; the bridge may hold a notification for
    # 1 s.  A hold that long is what stuck executor threads look like.
    masakari = fake_masakari.FakeMasakari(hosts=['compute-1']).start()
    masakari.script = ['hang']
    masakari.hang_seconds = 3.0
    bridge = pipeline.Bridge(tmp_path / 'bridge', rabbitmq.transport_url,
                             masakari.endpoint, topic, stall_timeout=1.0)
    try:
        bridge.start()
        assert bridge.get('/healthz')[0] == 200

        result = make_agent('compute-1').run('--write', str(uuid.uuid4()),
                                             '--send')
        assert result.returncode == 0, result.stdout + result.stderr
        pipeline.wait_for(lambda: bridge.get('/healthz')[0] == 503, 10,
                          '/healthz 503 while Masakari hangs')
        report = json.loads(bridge.get('/healthz')[1])
        assert report['status'] == 'unhealthy'
        assert report['checks']['listener']['in_hand'] == 1
        assert report['checks']['listener']['ok'] is False

        pipeline.wait_for(lambda: bridge.get('/healthz')[0] == 200, 10,
                          '/healthz 200 once Masakari answered')
        assert len(masakari.notifications) == 1
    finally:
        status = bridge.stop()
        masakari.stop()
    assert status == 0


def test_a_redelivery_of_a_handled_message_is_one_info_line(
        masakari, host, publisher, start_bridge):
    # The broker delivers a message again when its acknowledgement was
    # lost in a reconnect.  Publishing the same AMQP body again after the
    # first was handled is that redelivery, as the bridge sees it.
    bridge = start_bridge(masakari)
    instance_uuid, unique_id = str(uuid.uuid4()), uuid.uuid4().hex
    body = envelope(host, failure_payload(host, instance_uuid),
                    unique_id=unique_id)

    publisher.publish(body)
    bridge.wait_for_log('Masakari accepted the failure of instance %s'
                        % instance_uuid)
    time.sleep(1)  # acknowledged by now
    publisher.publish(body)
    [line] = bridge.wait_for_log('Skipping a redelivery of the message')
    time.sleep(1)

    assert ' INFO ' in line
    assert 'unique id %s, already handled' % unique_id in line
    text = bridge.log_text()
    assert 'Traceback' not in text
    assert 'DuplicateMessageError' not in text
    assert len(masakari.notifications(host)) == 1
    assert counter(bridge.metrics(), 'vmha_bridge_duplicates_total') == 1
