"""One failure decision, end to end: agent, RabbitMQ, bridge, Masakari.

The agent's write-and-send path runs in a process of its own
(``outbox_agent``), vmha-masakari-bridge runs as installed with its own
configuration file, and masakari-api is the real one.  The test checks
what users see: the notification any consumer reads on the bus has the
documented shape, and Masakari stored the failure once, in the exact form
its engine recovers.
"""

import datetime
import json
import re
import time
import uuid

import pytest

from tests.integration import pipeline
from tests.integration import services

HOST = 'compute-e2e-%s' % uuid.uuid4().hex[:6]
SAMPLE = services.REPO_ROOT / 'doc' / 'notification_samples' / \
    'instance-failure.json'
# oslo.messaging's timestamp format, as in the sample.
TIMESTAMP = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$')


@pytest.fixture(scope='module')
def host(masakari):
    masakari.add_host(HOST)
    return HOST


def test_failure_reaches_masakari_once_in_the_sample_shape(
        rabbitmq, masakari, host, topic, make_agent, start_bridge,
        tmp_path):
    sample = json.loads(SAMPLE.read_text())
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())

    # A second listener pool gets its own copy of every notification,
    # as any other consumer of vmha's topic would.
    with pipeline.listen(rabbitmq.transport_url, topic,
                         '%s_observer' % topic, tmp_path) as received:
        result = agent.run('--write', instance_uuid, '--send')
        assert result.returncode == 0, result.stdout + result.stderr
        message_id = pipeline.written(result.stdout)[instance_uuid]
        pipeline.wait_for(lambda: masakari.notifications(host), 30,
                          'the failure in Masakari')
        # Time for a second copy to show up on either side, were one
        # sent; the bridge forwards within milliseconds.
        time.sleep(1.5)

    # On the bus: one failure, shaped like the documented sample (the
    # bridge's instance.recovery goes to the same topic:
    # test_recovery_masakari.py).
    [(priority, ctxt, publisher_id, event_type, payload, metadata)] = [
        notification for notification in received
        if notification[3] == 'instance.failure']
    assert priority == sample['priority'].lower()
    assert event_type == sample['event_type']
    assert publisher_id == 'vmha-agent:%s' % host
    assert metadata['message_id'] == message_id
    assert TIMESTAMP.match(metadata['timestamp'])
    assert TIMESTAMP.match(sample['timestamp'])
    assert sorted(payload) == sorted(sample['payload'])
    for key in ('vmha_object.name', 'vmha_object.namespace',
                'vmha_object.version'):
        assert payload[key] == sample['payload'][key]
    data = payload['vmha_object.data']
    assert sorted(data) == sorted(sample['payload']['vmha_object.data'])
    assert {key: data[key] for key in ('uuid', 'host', 'event',
                                       'vir_domain_event', 'cause')} == {
        'uuid': instance_uuid, 'host': host, 'event': 'LIFECYCLE',
        'vir_domain_event': 'STOPPED_FAILED', 'cause': 'qemu_died'}
    # The same ISO 8601 UTC form as the sample ("...T16:00:05Z").
    detected_at = datetime.datetime.strptime(data['detected_at'],
                                             '%Y-%m-%dT%H:%M:%SZ')
    datetime.datetime.strptime(
        sample['payload']['vmha_object.data']['detected_at'],
        '%Y-%m-%dT%H:%M:%SZ')

    # In Masakari: exactly one row, exactly what its engine acts on.
    [row] = masakari.notifications(host)
    assert row['payload'] == pipeline.failure_row_payload(instance_uuid)
    assert row['type'] == 'VM'
    assert row['hostname'] == host
    assert row['status'] == 'new'  # no masakari-engine runs
    assert row['generated_time'] == services.db_time(
        detected_at.replace(tzinfo=datetime.UTC))

    # The bridge said so, once, naming the agent's message id.
    [line] = bridge.log_lines('Masakari accepted the failure')
    assert instance_uuid in line and message_id in line
    assert row['notification_uuid'] in line
    # And the agent's outbox knows it was delivered.
    [outbox_row] = agent.outbox()
    assert outbox_row['message_id'] == message_id
    assert outbox_row['delivered_at'] is not None
