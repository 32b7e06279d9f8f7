"""Garbage on the bridge's topic is logged, dropped, and survived.

Anything may publish to ``versioned_notifications.error``: an older or
broken producer, a hand-made test message.  The bridge must log each bad
notification once, acknowledge it (a requeue would bring it back for
ever), post nothing for it, and keep forwarding real failures.
"""

import re
import time
import uuid

import kombu
from oslo_config import cfg
import oslo_messaging

from tests.integration import pipeline


def failure_payload(host, missing=()):
    """An InstanceFailurePayload as vmha serializes it, without the
    ``missing`` data fields."""
    data = {'uuid': str(uuid.uuid4()), 'name': 'vm-bad', 'host': host,
            'event': 'LIFECYCLE', 'vir_domain_event': 'STOPPED_FAILED',
            'cause': 'qemu_died', 'evidence': None,
            'detected_at': '2026-11-23T16:00:05Z'}
    return {'vmha_object.name': 'InstanceFailurePayload',
            'vmha_object.namespace': 'vmha',
            'vmha_object.version': '1.0',
            'vmha_object.data': {key: value for key, value in data.items()
                                 if key not in missing}}


def test_malformed_notifications_are_dropped_and_the_bridge_goes_on(
        rabbitmq, masakari, topic, make_agent, start_bridge, tmp_path):
    host = 'compute-malformed-%s' % uuid.uuid4().hex[:6]
    masakari.add_host(host)
    bridge = start_bridge(masakari)
    unknown_object = failure_payload(host)
    unknown_object['vmha_object.name'] = 'InstanceExplodedPayload'
    missing_fields = failure_payload(host, missing=('uuid', 'detected_at'))

    # A producer with oslo.messaging's own Notifier (messagingv2, as
    # nova's), on the bridge's topic, exchange and bus options.
    config_file = tmp_path / 'producer.conf'
    config_file.write_text(pipeline.bus_options(rabbitmq.transport_url,
                                                topic))
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(config_file)], project='vmha-it')
    transport = oslo_messaging.get_notification_transport(conf)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id='vmha-agent:%s' % host,
            driver='messagingv2', topics=[topic])
        # A producer that serialized the payload itself, and badly.
        notifier.error({}, 'instance.failure',
                       '{"vmha_object.name": "InstanceFailurePayload", ')
        notifier.error({}, 'instance.failure', unknown_object)
        notifier.error({}, 'instance.failure', missing_fields)
    finally:
        transport.cleanup()
    # Not even an oslo.messaging envelope: bytes that are not JSON.
    with kombu.Connection(rabbitmq.transport_url.replace('rabbit://',
                                                         'amqp://')) as conn:
        conn.Producer().publish(
            b'{"oslo.version": "2.0", "oslo.message": ',
            exchange=kombu.Exchange(topic, type='topic', durable=True),
            routing_key='%s.error' % topic, content_type='application/json',
            content_encoding='utf-8', declare=[])

    reasons = ["payload is a str, not a serialized object",
               "payload object is 'InstanceExplodedPayload'",
               'is missing field(s): uuid, detected_at']
    for reason in reasons:
        bridge.wait_for_log('Dropping malformed instance.failure '
                            'notification .*' + re.escape(reason))
    # oslo.messaging itself drops what it cannot decode (rejected, not
    # requeued), before vmha's endpoint sees it; the bridge turns its
    # traceback into one line.
    undecodable = r'Dropping a .* that oslo\.messaging cannot decode'
    bridge.wait_for_log(undecodable)

    # A real failure after the garbage still gets through.
    good = str(uuid.uuid4())
    result = make_agent(host).run('--write', good, '--send')
    assert result.returncode == 0, result.stdout + result.stderr
    pipeline.wait_for(lambda: masakari.notifications(host), 30,
                      'the good failure in Masakari')
    # A requeued bad message would come back and be logged again within
    # this time.
    time.sleep(2)

    assert bridge.running()
    for reason in reasons:
        assert len(bridge.log_lines(re.escape(reason))) == 1, reason
    assert len(bridge.log_lines(undecodable)) == 1
    # The bad ones name this host too: none of them became a row.
    [row] = masakari.notifications(host)
    assert row['payload'] == pipeline.failure_row_payload(good)


