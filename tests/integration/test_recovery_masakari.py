"""The bridge follows a failure in the real masakari-api (issue 14 item 2).

No masakari-engine runs here, so Masakari keeps the notification
``new`` for ever.  What a user can still see: the bridge publishes one
``instance.recovery`` ``accepted`` naming Masakari's notification id,
and then only looks (plain GETs, which masakari-api answers from its
database), less and less often and within the configured bound: it
neither hammers the API nor invents an outcome.
"""

import json
import time
import urllib.request
import uuid

import pytest

from tests.integration import pipeline

pytestmark = pytest.mark.one_backend
HOST = 'compute-follow-%s' % uuid.uuid4().hex[:6]
WATCH = 6.0  # seconds the bridge is watched polling
POLL_START, POLL_MAX = 0.2, 1.0


@pytest.fixture(scope='module')
def host(masakari):
    masakari.add_host(HOST)
    return HOST


def polls(bridge):
    samples = bridge.metrics().get('vmha_bridge_recovery_polls_total', {})
    return sum(samples.values()), samples


def test_accepted_then_bounded_polling_without_an_engine(
        rabbitmq, masakari, host, topic, make_agent, start_bridge,
        tmp_path):
    bridge = start_bridge(masakari, recovery_poll_interval=POLL_START,
                          recovery_poll_max_interval=POLL_MAX)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())

    with pipeline.listen(rabbitmq.transport_url, topic,
                         '%s_recoveries' % topic, tmp_path) as received:
        result = agent.run('--write', instance_uuid, '--send')
        assert result.returncode == 0, result.stdout + result.stderr
        pipeline.wait_for(lambda: any(
            n[3] == 'instance.recovery' for n in received), 30,
            'instance.recovery accepted')
        started = time.monotonic()
        first, _ = polls(bridge)
        time.sleep(WATCH)
        watched = time.monotonic() - started
        later, samples = polls(bridge)

    [row] = masakari.notifications(host)
    assert row['status'] == 'new'
    recoveries = [n for n in received if n[3] == 'instance.recovery']
    [(priority, _, publisher_id, _, payload, metadata)] = recoveries
    data = payload['vmha_object.data']
    assert priority == 'info'
    assert publisher_id.startswith('vmha-masakari-bridge:')
    assert (data['uuid'], data['host'], data['status'],
            data['notification_uuid']) == (
        instance_uuid, host, 'accepted', row['notification_uuid'])
    assert data['workflow_details'] is None
    assert 0 <= data['took'] < 30

    # It looked (answered from masakari-api's database)...
    assert later > first, samples
    assert set(dict(samples)) <= {(('answer', 'ok'),)}, samples
    # ...and within the bound: at most one look per POLL_START at first,
    # one per POLL_MAX once backed off.
    assert later - first <= watched / POLL_MAX + 4, samples
    # The bridge's /status lists what it follows.
    with urllib.request.urlopen(bridge.url + '/status', timeout=10) as r:
        status = json.load(r)
    [followed] = [f for f in status['recoveries']
                  if f['uuid'] == instance_uuid]
    assert followed['status'] == 'accepted'
    assert followed['notification_uuid'] == row['notification_uuid']
