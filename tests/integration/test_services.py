"""The integration services work, and Masakari 22 answers as vmha expects.

Each case pins an answer of the real masakari-api that the Masakari bridge
depends on: 202 and one stored row for a failure, 409 for a duplicate or a
host in maintenance, 400 for an unknown host or a payload key Masakari does
not know (an episode id included).  The outage cases show what a broker or
API restart looks like.
"""

import datetime
import time
import uuid

import kombu
import pytest

from tests.integration import services

pytestmark = pytest.mark.one_backend
HOST = 'compute-smoke'


@pytest.fixture(scope='module')
def host(masakari):
    """A compute host registered in Masakari's default test segment."""
    masakari.add_host(HOST)
    return HOST


def failure_payload(instance_uuid=None):
    """What masakari-monitors sends when a QEMU process dies."""
    return {'event': 'LIFECYCLE',
            'instance_uuid': instance_uuid or str(uuid.uuid4()),
            'vir_domain_event': 'STOPPED_FAILED'}


def rows_for(masakari, payload):
    return [row for row in masakari.notifications()
            if row['payload'] == payload]


def test_failure_notification_is_stored_once(masakari, host):
    payload = failure_payload()
    when = services.utcnow()

    status, body = masakari.post_notification(host, payload, when)

    assert status == 202, body
    notification = body['notification']
    assert notification['payload'] == payload
    assert notification['status'] == 'new'
    [row] = rows_for(masakari, payload)
    assert row['notification_uuid'] == notification['notification_uuid']
    assert row['type'] == 'VM'
    assert row['hostname'] == host
    assert row['status'] == 'new'  # no masakari-engine runs
    assert row['generated_time'] == services.db_time(when)


def test_same_payload_again_is_a_duplicate(masakari, host):
    payload = failure_payload()
    assert masakari.post_notification(host, payload)[0] == 202

    status, body = masakari.post_notification(host, payload)

    assert (status, body) == (409, {'conflictingRequest': {
        'code': 409, 'message': 'Notification received from host %s of '
        'type VM is duplicate.' % host}})
    assert len(rows_for(masakari, payload)) == 1


def test_same_payload_after_the_interval_is_new(masakari, host):
    # The window is measured on generated_time, not on arrival: an older
    # row counts if it was generated at most 180 s before the new one.
    payload = failure_payload()
    now = services.utcnow()
    earlier = now - datetime.timedelta(seconds=181)
    assert masakari.post_notification(host, payload, earlier)[0] == 202

    status, body = masakari.post_notification(host, payload, now)

    assert status == 202, body
    assert len(rows_for(masakari, payload)) == 2


def test_host_in_no_segment_is_rejected(masakari):
    payload = failure_payload()

    status, body = masakari.post_notification('compute-unknown', payload)

    assert (status, body) == (400, {'badRequest': {
        'code': 400,
        'message': 'Host with name compute-unknown could not be found.'}})
    assert rows_for(masakari, payload) == []


def test_host_in_maintenance_is_rejected(masakari):
    masakari.add_host('compute-maintenance', on_maintenance=True)
    payload = failure_payload()

    status, body = masakari.post_notification('compute-maintenance',
                                              payload)

    assert (status, body) == (409, {'conflictingRequest': {
        'code': 409, 'message': "Notification received from host "
        "compute-maintenance of type 'VM' is ignored as the host is "
        "already under maintenance."}})
    assert rows_for(masakari, payload) == []


@pytest.mark.parametrize('key,value', [
    ('cause', 'CRASHED_PANICKED'),
    # An episode id (issue 11 item 4) would make every failure 400:
    # the generic payload schema's patternProperties allow it, but the
    # VM schema checked after it does not.
    ('vmha_episode', '4c1e7d2a9b3f4e6d8a0b1c2d3e4f5a6b'),
])
def test_unknown_payload_key_is_rejected(masakari, host, key, value):
    # The VM payload schema allows exactly event, instance_uuid and
    # vir_domain_event: vmha must keep the true cause and its failure
    # episode out of it.
    payload = dict(failure_payload(), **{key: value})

    status, body = masakari.post_notification(host, payload)

    assert (status, body) == (400, {'badRequest': {
        'code': 400, 'message': "Additional properties are not allowed "
        "(%r was unexpected)" % key}})
    assert rows_for(masakari, payload) == []


def amqp_round_trip(broker):
    """Publish one message as guest and read it back."""
    url = broker.transport_url.replace('rabbit://', 'amqp://')
    name = 'vmha-it-%s' % uuid.uuid4()
    with kombu.Connection(url, connect_timeout=5) as connection:
        queue = kombu.Queue(name, auto_delete=True)(connection.channel())
        queue.declare()
        connection.Producer().publish({'hello': name}, routing_key=name)
        # Publishing is asynchronous: the message is routed a moment later.
        deadline = time.monotonic() + 5
        message = queue.get(no_ack=True)
        while message is None and time.monotonic() < deadline:
            time.sleep(0.05)
            message = queue.get(no_ack=True)
        queue.delete()
    return message.payload if message else None


def test_broker_stop_app_and_start_app(rabbitmq, masakari, host):
    assert amqp_round_trip(rabbitmq) is not None

    rabbitmq.stop_app()
    assert not rabbitmq.answers()
    rabbitmq.start_app()

    assert rabbitmq.answers()
    assert amqp_round_trip(rabbitmq) is not None
    # Masakari's cast finds its pooled connection dead and reconnects.
    status, body = masakari.post_notification(host, failure_payload())
    assert status == 202, body


def test_post_during_broker_outage_is_stored_but_hangs(
        rabbitmq, masakari, host):
    # The row is committed before the RPC cast, and the cast retries until
    # the broker is back: a client that gives up has still been heard, and
    # its retry gets 409.  The bridge must take that 409 as success.
    payload = failure_payload()
    with rabbitmq.outage():
        with pytest.raises(services.ServiceError, match='timed out'):
            masakari.post_notification(host, payload, timeout=3)
        assert len(rows_for(masakari, payload)) == 1

    status, _ = masakari.post_notification(host, payload)
    assert status == 409
    assert len(rows_for(masakari, payload)) == 1


def test_masakari_stop_and_start_keep_the_rows(masakari, host):
    payload = failure_payload()
    assert masakari.post_notification(host, payload)[0] == 202

    with masakari.outage():
        assert not masakari.answers()
        with pytest.raises(services.ServiceError):
            masakari.post_notification(host, failure_payload())

    assert masakari.answers()
    assert len(rows_for(masakari, payload)) == 1
    assert masakari.post_notification(host, failure_payload())[0] == 202
