"""An agent killed with SIGKILL loses no failure and reports none twice.

The agent's write-and-send path (``outbox_agent``) is killed at the two
moments that matter: after the failure is committed to the journal but
before anything is sent, and after the broker has the notification but
before the outbox could mark it delivered.  A second run with the same
journal must deliver what the first one could not, and Masakari must end
up with exactly one row either way, even when the resend comes after the
bridge forgot the first one and after Masakari's duplicate window.
"""

import signal
import time
import uuid

import pytest

from tests.integration import pipeline
from tests.integration import services

# Masakari's duplicate window for the last test, in seconds.
WINDOW = 2


def test_killed_after_commit_sends_on_restart(masakari, make_agent,
                                              start_bridge):
    host = 'compute-crash-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(host)
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())

    crashed = agent.run('--write', instance_uuid, '--send',
                        '--die-after', 'commit')

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    message_id = pipeline.written(crashed.stdout)[instance_uuid]
    [row] = agent.outbox()
    assert (row['message_id'], row['delivered_at']) == (message_id, None)
    assert masakari.notifications(host) == []

    restarted = agent.run('--send')

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert 'drained: 1 sent' in restarted.stdout
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the failure in Masakari')
    time.sleep(1)  # room for a second copy, were one sent
    [stored] = masakari.notifications(host)
    assert stored['payload'] == pipeline.failure_row_payload(instance_uuid)
    [accepted] = bridge.log_lines('Masakari accepted the failure')
    assert message_id in accepted
    [row] = agent.outbox()
    assert row['delivered_at'] is not None


def test_killed_after_send_resends_and_masakari_has_it_once(
        masakari, make_agent, start_bridge):
    host = 'compute-crash-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(host)
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())

    crashed = agent.run('--write', instance_uuid, '--send',
                        '--die-after', 'send')

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    message_id = pipeline.written(crashed.stdout)[instance_uuid]
    assert 'sent %s' % message_id in crashed.stdout
    # The broker had it, so Masakari gets it; the journal does not know.
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the failure in Masakari')
    [row] = agent.outbox()
    assert row['delivered_at'] is None

    restarted = agent.run('--send')

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert 'drained: 1 sent' in restarted.stdout
    # The resend carries the same message id, and the bridge knows it:
    # acknowledged without a second POST.
    [again] = bridge.wait_for_log('was already handled; not forwarded')
    assert message_id in again
    [stored] = masakari.notifications(host)
    assert stored['payload'] == pipeline.failure_row_payload(instance_uuid)
    assert len(bridge.log_lines('Masakari (accepted|rejected)')) == 1


@pytest.fixture(scope='module')
def masakari_short_window(tmp_path_factory):
    """A masakari-api whose duplicate window is 2 s instead of 180 s, so
    that a test can resend after the window without waiting 3 minutes."""
    api = services.MasakariAPI(tmp_path_factory.mktemp('masakari-window'),
                               transport_url='fake:/',
                               duplicate_interval=WINDOW)
    api.ensure_installed()
    api.start()
    yield api
    api.stop()


def test_resend_after_bridge_restart_and_masakari_window_is_not_a_new_row(
        masakari_short_window, make_agent, start_bridge):
    # The worst case for "once": the agent resends a notification that
    # Masakari already has, to a bridge that has forgotten its message
    # id (restarted), later than Masakari's duplicate window.  Only the
    # resend's generated_time, the same as the first time, keeps
    # Masakari from taking it as a new failure and recovering the
    # instance a second time.
    masakari = masakari_short_window
    host = 'compute-crash-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(host)
    first = start_bridge(masakari)
    agent = make_agent(host)
    instance_uuid = str(uuid.uuid4())
    crashed = agent.run('--write', instance_uuid, '--send',
                        '--die-after', 'send')
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    message_id = pipeline.written(crashed.stdout)[instance_uuid]
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the failure in Masakari')
    assert first.stop() == 0
    time.sleep(WINDOW + 1)

    second = start_bridge(masakari)
    restarted = agent.run('--send')

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    [rejected] = second.wait_for_log('Masakari rejected the failure')
    assert message_id in rejected and 'is duplicate' in rejected
    [stored] = masakari.notifications(host)
    assert stored['payload'] == pipeline.failure_row_payload(instance_uuid)
