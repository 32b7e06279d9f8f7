"""MasakariClient against a real HTTP server answering as masakari-api."""

import time

from oslo_config import cfg
import pytest

from tests.fixtures import fake_masakari
import vmha.conf
from vmha.masakari import client as masakari_client

UUID = '3f2c8a9e-7b61-4d0a-9a57-2b1f0c6d8e41'


def body(host='compute-1', generated_time='2026-03-01T10:20:30+00:00',
         vir_domain_event='STOPPED_FAILED'):
    return {'notification': {
        'type': 'VM', 'hostname': host, 'generated_time': generated_time,
        'payload': {'event': 'LIFECYCLE', 'instance_uuid': UUID,
                    'vir_domain_event': vir_domain_event}}}


def make_conf(endpoint, **masakari_options):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], default_config_files=[])
    options = {'noauth': True, 'endpoint_override': endpoint,
               'retry_max': 2, 'retry_interval': 0.01, 'timeout': 5}
    options.update(masakari_options)
    for name, value in options.items():
        conf.set_override(name, value, group='masakari')
    return conf


@pytest.fixture
def waits():
    return []


@pytest.fixture
def client(masakari, waits):
    return masakari_client.MasakariClient.from_conf(
        make_conf(masakari.endpoint), sleep=waits.append)


def test_accepted_notification_posts_the_body_with_noauth2_headers(
        client, masakari):
    result = client.send_notification(body())

    assert result.accepted
    assert result.status == 202
    assert result.notification_uuid == (
        masakari.notifications[0]['notification_uuid'])
    [(path, headers, sent)] = masakari.requests
    assert path == '/v1/notifications'
    assert sent == body()
    assert headers['X-User-Id'] == 'admin'
    assert headers['Content-Type'] == 'application/json'


def test_host_not_in_a_segment_is_rejected_with_masakaris_reason(client):
    result = client.send_notification(body(host='compute-9'))

    assert result.outcome == masakari_client.Result.REJECTED
    assert result.status == 400
    assert result.reason == 'Host with name compute-9 could not be found.'
    assert result.attempts == 1


def test_duplicate_is_rejected_once_and_not_retried(client, masakari, waits):
    client.send_notification(body())

    result = client.send_notification(body())

    assert result.status == 409
    assert 'is duplicate' in result.reason
    assert len(masakari.requests) == 2
    assert waits == []


def test_host_under_maintenance_is_rejected_for_good(client, masakari):
    masakari.maintenance.add('compute-1')

    result = client.send_notification(body())

    assert (result.accepted, result.status) == (False, 409)
    assert 'under maintenance' in result.reason


def test_5xx_is_retried_with_doubling_waits_then_accepted(
        client, masakari, waits):
    masakari.script = [503, 500]

    result = client.send_notification(body())

    assert result.accepted
    assert result.attempts == 3
    assert waits == [0.01, 0.02]


def test_still_failing_after_retries_raises_unavailable(
        client, masakari, waits):
    masakari.script = [503, 503, 503, 503]

    with pytest.raises(masakari_client.MasakariUnavailable) as caught:
        client.send_notification(body())

    assert caught.value.attempts == 3
    assert caught.value.status == 503
    assert 'HTTP 503: scripted 503' in str(caught.value)
    assert len(masakari.requests) == 3
    assert masakari.script == [503]


def test_connection_dropped_without_answer_is_retried(client, masakari):
    masakari.script = ['drop']

    result = client.send_notification(body())

    assert result.accepted
    assert result.attempts == 2


def test_connection_refused_raises_unavailable_after_retries(waits):
    endpoint = 'http://127.0.0.1:%d/v1' % fake_masakari.unused_port()
    client = masakari_client.MasakariClient.from_conf(
        make_conf(endpoint), sleep=waits.append)

    with pytest.raises(masakari_client.MasakariUnavailable) as caught:
        client.send_notification(body())

    assert caught.value.status is None
    assert 'ConnectFailure' in caught.value.reason
    assert caught.value.attempts == 3


def test_timeout_is_retryable_and_bounded(masakari):
    masakari.script = ['hang']
    masakari.hang_seconds = 1.0
    client = masakari_client.MasakariClient.from_conf(
        make_conf(masakari.endpoint, retry_max=0, timeout=0.2))

    started = time.monotonic()
    with pytest.raises(masakari_client.MasakariUnavailable) as caught:
        client.send_notification(body())

    assert time.monotonic() - started < 0.9
    assert 'Timeout' in caught.value.reason


def test_other_client_errors_are_not_taken_as_final(client, masakari):
    # A wrong endpoint (404) or bad credentials (401/403) must not make
    # vmha drop a failure: it is kept and tried again.
    masakari.script = [404, 403, 401]

    with pytest.raises(masakari_client.MasakariUnavailable) as caught:
        client.send_notification(body())

    assert caught.value.status == 401


def test_waits_are_capped(waits):
    client = masakari_client.MasakariClient(
        adapter=None, retry_max=8, retry_interval=10, sleep=waits.append)
    client._post = lambda body: (_ for _ in ()).throw(
        masakari_client._Retryable('down'))

    with pytest.raises(masakari_client.MasakariUnavailable):
        client.send_notification(body())

    assert waits == [10, 20, 40, 60, 60, 60, 60, 60]


def test_keystone_options_are_registered_in_the_masakari_group():
    conf = make_conf('http://unused')

    assert conf.masakari.service_type == 'instance-ha'
    assert conf.masakari.valid_interfaces == ['internal', 'public']
    assert conf.masakari.timeout == 5
    for name in ('auth_type', 'auth_section', 'endpoint_override',
                 'region_name', 'cafile', 'insecure', 'connect_retries'):
        assert hasattr(conf.masakari, name)


def test_password_auth_builds_a_client_without_contacting_keystone(
        tmp_path):
    config_file = tmp_path / 'vmha.conf'
    config_file.write_text(
        '[masakari]\n'
        'auth_type = password\n'
        'auth_url = http://127.0.0.1:1/identity\n'
        'username = vmha\n'
        'password = secret\n'
        'project_name = service\n'
        'region_name = RegionTwo\n')
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf(['--config-file', str(config_file)], default_config_files=[])
    vmha.conf.validate(conf)

    client = masakari_client.MasakariClient.from_conf(conf)

    assert client._adapter.service_type == 'instance-ha'
    assert client._adapter.region_name == 'RegionTwo'
    assert client._adapter.auth.auth_url == 'http://127.0.0.1:1/identity'
    assert conf.masakari.username == 'vmha'


@pytest.mark.parametrize('options,reason', [
    ({'noauth': True, 'endpoint_override': None},
     '[masakari] noauth = true needs endpoint_override'),
    ({'noauth': False}, '[masakari] auth_type is not set'),
    ({'noauth': False, 'auth_type': 'no-such-plugin'}, 'no-such-plugin'),
])
def test_unusable_options_raise_a_config_error(options, reason):
    conf = make_conf('http://127.0.0.1:1/v1', **options)

    with pytest.raises(masakari_client.MasakariConfigError) as caught:
        masakari_client.MasakariClient.from_conf(conf)

    assert reason in str(caught.value)


# --- GET /v1/notifications/{id}: following a recovery ------------------------

def test_get_notification_reads_the_status_masakari_keeps(client, masakari):
    result = client.send_notification(body())
    got = client.get_notification(result.notification_uuid)
    assert got['status'] == 'new'
    assert got['notification_uuid'] == result.notification_uuid
    assert 'recovery_workflow_details' not in got  # microversion 1.0

    masakari.set_status(result.notification_uuid, 'running')
    assert client.get_notification(result.notification_uuid)['status'] == \
        'running'
    assert masakari.gets[-1] == (result.notification_uuid, None)


def test_workflow_details_need_microversion_1_1(client, masakari):
    result = client.send_notification(body())
    steps = [{'name': 'StopInstanceTask', 'state': 'SUCCESS',
              'progress': 1.0, 'progress_details': []}]
    masakari.set_status(result.notification_uuid, 'finished', steps=steps)

    got = client.get_notification(
        result.notification_uuid,
        microversion=masakari_client.WORKFLOW_MICROVERSION)

    assert got['recovery_workflow_details'] == steps
    assert masakari.gets[-1] == (result.notification_uuid, (1, 1))


def test_an_unknown_notification_is_gone(client):
    with pytest.raises(masakari_client.NotificationGone,
                       match='could not be found'):
        client.get_notification('00000000-0000-0000-0000-000000000000')


@pytest.mark.parametrize('answer', [500, 503, 'drop'])
def test_get_failures_raise_unavailable_without_retrying(
        client, masakari, waits, answer):
    result = client.send_notification(body())
    masakari.get_script.append(answer)

    with pytest.raises(masakari_client.MasakariUnavailable):
        client.get_notification(result.notification_uuid)

    assert waits == []  # one attempt: the follower backs off itself
    assert len(masakari.gets) == 1


def test_an_unreachable_masakari_is_unavailable_for_gets():
    client = masakari_client.MasakariClient.from_conf(make_conf(
        'http://127.0.0.1:%d/v1' % fake_masakari.unused_port()))
    with pytest.raises(masakari_client.MasakariUnavailable):
        client.get_notification('00000000-0000-0000-0000-000000000000')
