"""The bridge against masakari-api's answers: down, 409, and back.

While masakari-api is down the bridge keeps the failure (retries, then
hands it back to the broker, which redelivers it) and delivers it once
the API is back.  A 409, for a host in maintenance or a duplicate, is
Masakari's final word: the bridge logs it once, never posts it again, and
goes on with the next failure.
"""

import re
import time
import uuid

import pytest

from tests.integration import pipeline

pytestmark = pytest.mark.one_backend
POST = re.compile(r'"POST /v1/notifications HTTP/1\.1" status: (\d+)')


@pytest.fixture
def host(masakari):
    name = 'compute-outage-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(name)
    return name


def masakari_posts(masakari, offset):
    """HTTP statuses of the POSTs masakari-api logged after ``offset``."""
    with open(masakari.log_file, 'rb') as log:
        log.seek(offset)
        text = log.read().decode(errors='replace')
    return [int(status) for status in POST.findall(text)]


def test_failure_waits_for_masakari_and_arrives_once_it_is_back(
        masakari, host, make_agent, start_bridge):
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())

    with masakari.outage():
        result = agent.run('--write', instance_uuid, '--send')
        assert result.returncode == 0, result.stdout + result.stderr
        # Two rounds: tried, handed back to the broker, tried again.
        bridge.wait_for_log('Masakari did not take the failure of '
                            'instance %s' % instance_uuid, count=2)
        assert masakari.notifications(host) == []

    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the failure in Masakari after its restart')
    time.sleep(1)  # room for a second copy, were one sent
    [row] = masakari.notifications(host)
    assert row['payload'] == pipeline.failure_row_payload(instance_uuid)
    assert len(bridge.log_lines('Masakari accepted the failure of '
                                'instance %s' % instance_uuid)) == 1
    assert bridge.running()


def test_host_in_maintenance_409_is_final(masakari, host, make_agent,
                                          start_bridge):
    masakari.set_maintenance(host)
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    ignored, later = str(uuid.uuid4()), str(uuid.uuid4())
    offset = masakari.log_file.stat().st_size

    assert agent.run('--write', ignored, '--send').returncode == 0
    [rejected] = bridge.wait_for_log('Masakari rejected the failure of '
                                     'instance %s' % ignored)
    # A retry would come within retry_interval (0.5 s) or at once from
    # the broker; give it several times that.
    time.sleep(3)

    assert 'HTTP 409' in rejected and 'under maintenance' in rejected
    assert masakari_posts(masakari, offset) == [409]
    assert len(bridge.log_lines(ignored)) == 1
    assert masakari.notifications(host) == []

    masakari.set_maintenance(host, False)
    assert agent.run('--write', later, '--send').returncode == 0
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the next failure in Masakari')
    [row] = masakari.notifications(host)
    assert row['payload'] == pipeline.failure_row_payload(later)
    assert masakari_posts(masakari, offset) == [409, 202]


def test_duplicate_409_is_final(masakari, host, make_agent, start_bridge):
    # The agent decides twice about one instance (two notifications, two
    # message ids): Masakari keeps the first and calls the second a
    # duplicate.  The bridge must take that as done.
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid, later = str(uuid.uuid4()), str(uuid.uuid4())
    offset = masakari.log_file.stat().st_size

    assert agent.run('--write', instance_uuid, '--send').returncode == 0
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the first report in Masakari')
    assert agent.run('--write', instance_uuid, '--send').returncode == 0
    [rejected] = bridge.wait_for_log('Masakari rejected the failure of '
                                     'instance %s' % instance_uuid)
    time.sleep(3)  # as above: time for a retry that must not come

    assert 'HTTP 409' in rejected and 'is duplicate' in rejected
    assert masakari_posts(masakari, offset) == [202, 409]
    assert len(masakari.notifications(host)) == 1

    assert agent.run('--write', later, '--send').returncode == 0
    pipeline.wait_for(lambda: len(masakari.notifications(host)) == 2, 30,
                      'the next failure in Masakari')
    assert [row['payload']['instance_uuid']
            for row in masakari.notifications(host)] == [instance_uuid,
                                                         later]
    assert masakari_posts(masakari, offset) == [202, 409, 202]
    assert bridge.running()
