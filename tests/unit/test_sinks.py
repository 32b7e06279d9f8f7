"""The notification sinks: bus (fake:// and a failing transport), Masakari
(a real HTTP server answering as masakari-api), log, several at once."""

import logging
import uuid

from oslo_config import cfg
import oslo_messaging
import pytest

from tests.fixtures import fake_masakari
import vmha.conf
from vmha.notify import base
from vmha.notify import message as notify_message
from vmha.notify import sinks
from vmha.notify.sinks import log as log_sink
from vmha.notify.sinks import masakari as masakari_sink
from vmha.notify.sinks import messaging as messaging_sink

INSTANCE = '3f2c8a9e-7b61-4d0a-9a57-2b1f0c6d8e41'


def failure_payload(event='LIFECYCLE', vir_domain_event='STOPPED_FAILED',
                    host='compute-1'):
    return {
        'vmha_object.name': 'InstanceFailurePayload',
        'vmha_object.namespace': 'vmha',
        'vmha_object.version': '1.0',
        'vmha_object.data': {
            'uuid': INSTANCE, 'name': 'web-1', 'host': host, 'event': event,
            'vir_domain_event': vir_domain_event, 'cause': 'qemu_died',
            'evidence': 'qemu exited with signal 9',
            'detected_at': '2026-03-01T10:20:30Z',
        },
    }


def failure_message(message_id=None, payload=None):
    return notify_message.Message(
        message_id=message_id or str(uuid.uuid4()),
        event_type='instance.failure', priority='ERROR',
        publisher_id='vmha-agent:compute-1',
        payload=payload if payload is not None else failure_payload(),
        timestamp='2026-03-01 10:20:30.000000')


def lifecycle_message():
    return notify_message.Message(
        message_id=str(uuid.uuid4()), event_type='instance.lifecycle',
        priority='INFO', publisher_id='vmha-agent:compute-1',
        payload={'vmha_object.name': 'InstanceLifecyclePayload',
                 'vmha_object.namespace': 'vmha',
                 'vmha_object.version': '1.0',
                 'vmha_object.data': {'uuid': INSTANCE,
                                      'transition': 'STOPPED'}},
        timestamp='2026-03-01 10:20:31.000000')


def make_conf(**groups):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('host', 'compute-1')
    # The fake transport's exchanges are process-wide: a topic per test.
    conf.set_override('topics', ['vn-%s' % uuid.uuid4().hex],
                      group='notifications')
    for group, options in groups.items():
        for name, value in options.items():
            conf.set_override(name, value, group=group)
    return conf


class RecordingEndpoint:
    def __init__(self):
        self.received = []

    def _record(priority):
        def record(self, ctxt, publisher_id, event_type, payload, metadata):
            self.received.append({
                'priority': priority, 'ctxt': ctxt,
                'publisher_id': publisher_id, 'event_type': event_type,
                'payload': payload, 'metadata': metadata})
        return record

    info = _record('info')
    error = _record('error')


@pytest.fixture
def listen(transport):
    listeners = []

    def start(conf, endpoint, pool='test-consumer'):
        targets = [oslo_messaging.Target(topic=topic)
                   for topic in conf.notifications.topics]
        listener = oslo_messaging.get_notification_listener(
            transport, targets, [endpoint], executor='threading',
            allow_requeue=True, pool=pool)
        listener.start()
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.stop()
        listener.wait()


class DriverSpy:
    """Records what reaches the transport driver, then passes it on."""

    def __init__(self, transport):
        self.sent = []
        self._send = transport._driver.send_notification
        transport._driver.send_notification = self

    def __call__(self, target, ctxt, message, version, retry=None):
        self.sent.append({'topic': target.topic, 'ctxt': dict(ctxt),
                          'message': dict(message), 'version': version,
                          'retry': retry})
        return self._send(target, ctxt, message, version, retry=retry)


# --- messaging ---------------------------------------------------------------

def test_a_real_listener_receives_our_message_id_and_payload(
        transport, listen, wait_for):
    conf = make_conf()
    endpoint = RecordingEndpoint()
    listen(conf, endpoint)
    sink = messaging_sink.MessagingSink(conf, transport=transport)
    failure, lifecycle = failure_message(), lifecycle_message()

    sink.send(failure)
    sink.send(lifecycle)

    wait_for(lambda: len(endpoint.received) == 2, what='two notifications')
    by_priority = {got['priority']: got for got in endpoint.received}
    assert by_priority['error'] == {
        'priority': 'error', 'ctxt': {},
        'publisher_id': 'vmha-agent:compute-1',
        'event_type': 'instance.failure', 'payload': failure.payload,
        'metadata': {'message_id': failure.message_id,
                     'timestamp': failure.timestamp}}
    assert by_priority['info']['metadata']['message_id'] == (
        lifecycle.message_id)
    assert by_priority['info']['event_type'] == 'instance.lifecycle'


def test_what_we_send_is_what_the_messagingv2_notifier_sends(transport):
    conf = make_conf()
    topic = conf.notifications.topics[0]
    spy = DriverSpy(transport)
    message = failure_message()
    notifier = oslo_messaging.Notifier(
        transport, publisher_id=message.publisher_id, driver='messagingv2',
        topics=[topic], retry=3)

    notifier.error({}, message.event_type, message.payload)
    messaging_sink.MessagingSink(conf, transport=transport).send(message)

    theirs, ours = spy.sent
    assert ours['topic'] == theirs['topic'] == topic + '.error'
    assert ours['version'] == theirs['version'] == 2.0
    assert ours['ctxt'] == theirs['ctxt'] == {}
    assert sorted(ours['message']) == sorted(theirs['message']) == [
        'event_type', 'message_id', 'payload', 'priority', 'publisher_id',
        'timestamp']
    for key in ('event_type', 'payload', 'priority', 'publisher_id'):
        assert ours['message'][key] == theirs['message'][key]
    # The one difference: our id is the outbox's, the same on a resend.
    assert ours['message']['message_id'] == message.message_id


def test_send_retry_bounds_the_transport_retries(transport):
    conf = make_conf(notifications={'send_retry': 5})
    spy = DriverSpy(transport)

    messaging_sink.MessagingSink(conf, transport=transport).send(
        failure_message())

    assert spy.sent[0]['retry'] == 5


def test_every_topic_gets_the_message_with_the_same_id(transport):
    conf = make_conf(notifications={'topics': ['one', 'two']})
    spy = DriverSpy(transport)
    message = failure_message()

    messaging_sink.MessagingSink(conf, transport=transport).send(message)

    assert [sent['topic'] for sent in spy.sent] == ['one.error', 'two.error']
    assert {sent['message']['message_id'] for sent in spy.sent} == {
        message.message_id}


def test_unreachable_broker_raises_delivery_error_not_swallowed():
    # Regression: oslo.messaging's Notifier logs and drops in this case;
    # the sink must tell the outbox that nothing was sent.
    conf = make_conf(notifications={'send_retry': 0})
    url = 'rabbit://guest:guest@127.0.0.1:%d/' % fake_masakari.unused_port()
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id='vmha-agent:compute-1',
            driver='messagingv2', topics=conf.notifications.topics, retry=0)
        notifier.error({}, 'instance.failure', failure_payload())  # silent

        sink = messaging_sink.MessagingSink(conf, transport=transport)
        with pytest.raises(base.DeliveryError) as caught:
            sink.send(failure_message(message_id='m-1'))
    finally:
        transport.cleanup()

    assert 'notification m-1 (instance.failure) not sent to' in str(
        caught.value)
    assert caught.value.__cause__ is not None


def test_a_driver_failure_becomes_delivery_error(transport):
    conf = make_conf()

    def fail(target, ctxt, message, version, retry=None):
        raise oslo_messaging.MessageDeliveryFailure('broker said no')

    transport._driver.send_notification = fail
    sink = messaging_sink.MessagingSink(conf, transport=transport)

    with pytest.raises(base.DeliveryError) as caught:
        sink.send(failure_message())

    assert 'MessageDeliveryFailure: broker said no' in str(caught.value)
    assert isinstance(caught.value.__cause__,
                      oslo_messaging.MessageDeliveryFailure)


def test_an_unknown_priority_is_refused(transport):
    sink = messaging_sink.MessagingSink(make_conf(), transport=transport)

    with pytest.raises(ValueError, match="priority 'LOUD'"):
        sink.send(failure_message()._replace(priority='LOUD'))


# --- masakari (direct mode) --------------------------------------------------

def masakari_sink_for(endpoint):
    conf = make_conf(masakari={'noauth': True, 'endpoint_override': endpoint,
                               'retry_max': 1, 'retry_interval': 0.01})
    return masakari_sink.MasakariSink(conf)


def test_masakari_sink_posts_a_recoverable_failure(masakari):
    masakari_sink_for(masakari.endpoint).send(failure_message())

    [(path, headers, body)] = masakari.requests
    assert body['notification']['payload'] == {
        'event': 'LIFECYCLE', 'instance_uuid': INSTANCE,
        'vir_domain_event': 'STOPPED_FAILED'}
    assert headers['X-User-Id'] == 'admin'


@pytest.mark.parametrize('message', [
    failure_message(payload=failure_payload('LIFECYCLE',
                                            'STOPPED_DESTROYED')),
    failure_message(payload={'vmha_object.namespace': 'nova'}),
    lifecycle_message(),
])
def test_masakari_sink_delivers_without_posting_what_masakari_ignores(
        masakari, message, caplog):
    caplog.set_level(logging.DEBUG)

    masakari_sink_for(masakari.endpoint).send(message)

    assert masakari.requests == []
    assert message.message_id in caplog.text


@pytest.mark.parametrize('host,status', [('compute-9', 400),
                                         ('compute-1', 409)])
def test_masakari_rejection_for_good_counts_as_delivered(
        masakari, host, status, caplog):
    masakari.maintenance.add('compute-1')
    message = failure_message(payload=failure_payload(host=host))

    masakari_sink_for(masakari.endpoint).send(message)

    assert masakari.requests
    assert 'rejected the failure of instance %s on %s for good' % (
        INSTANCE, host) in caplog.text
    assert 'HTTP %d' % status in caplog.text


def test_masakari_5xx_after_retries_is_a_delivery_error(masakari):
    masakari.script = [503, 502]

    with pytest.raises(base.DeliveryError) as caught:
        masakari_sink_for(masakari.endpoint).send(failure_message())

    assert len(masakari.requests) == 2
    assert 'after 2 attempt(s): HTTP 502' in str(caught.value)


def test_masakari_unreachable_is_a_delivery_error():
    endpoint = 'http://127.0.0.1:%d/v1' % fake_masakari.unused_port()

    with pytest.raises(base.DeliveryError, match='ConnectFailure'):
        masakari_sink_for(endpoint).send(failure_message())


# --- log ---------------------------------------------------------------------

def test_log_sink_writes_one_readable_line(caplog):
    caplog.set_level(logging.INFO)
    message = failure_message(message_id='m-42')

    log_sink.LogSink(make_conf()).send(message)

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        'ERROR instance.failure [m-42] vmha-agent:compute-1 '
        'InstanceFailurePayload 1.0: uuid=%s name=web-1 host=compute-1 '
        'event=LIFECYCLE vir_domain_event=STOPPED_FAILED cause=qemu_died '
        'evidence=qemu exited with signal 9 '
        'detected_at=2026-03-01T10:20:30Z' % INSTANCE)


def test_log_sink_copes_with_any_payload(caplog):
    caplog.set_level(logging.INFO)

    log_sink.LogSink().send(failure_message(payload=['odd']))

    assert "['odd']" in caplog.text


# --- several sinks, loading --------------------------------------------------

class FlakySink(base.Sink):
    def __init__(self, name, failures=0):
        self.name = name
        self.failures = failures
        self.sent = []

    def send(self, message):
        if self.failures:
            self.failures -= 1
            raise base.DeliveryError('%s is down' % self.name)
        self.sent.append(message.message_id)


def test_multi_sink_resends_only_to_the_sinks_that_failed():
    good, flaky = FlakySink('good'), FlakySink('flaky', failures=1)
    multi = sinks.MultiSink([good, flaky])
    message = failure_message()

    with pytest.raises(base.DeliveryError, match='flaky: flaky is down'):
        multi.send(message)
    multi.send(message)

    assert good.sent == [message.message_id]
    assert flaky.sent == [message.message_id]


def test_default_configuration_loads_the_messaging_sink(transport):
    sink = sinks.load_sink(make_conf(), transport=transport)

    assert isinstance(sink, messaging_sink.MessagingSink)


def test_several_configured_sinks_load_as_a_multi_sink(transport):
    conf = make_conf(notifications={'sinks': ['log', 'messaging']})

    sink = sinks.load_sink(conf, transport=transport)

    assert isinstance(sink, sinks.MultiSink)
    assert [type(one) for one in sink.sinks] == [
        log_sink.LogSink, messaging_sink.MessagingSink]


def test_masakari_sink_loads_from_its_entry_point(masakari):
    conf = make_conf(
        notifications={'sinks': ['masakari']},
        masakari={'noauth': True, 'endpoint_override': masakari.endpoint})

    assert isinstance(sinks.load_sink(conf), masakari_sink.MasakariSink)


@pytest.mark.parametrize('names,reason', [
    (['kafka'], "unknown notification sink 'kafka' in [notifications] "
                "sinks; known sinks: log, masakari, messaging"),
    ([], '[notifications] sinks is empty; known sinks: log, masakari, '
         'messaging'),
    (['log', 'log'], "notification sink 'log' is named more than once"),
])
def test_bad_sink_names_are_a_clear_error(names, reason):
    conf = make_conf(notifications={'sinks': names})

    with pytest.raises(ValueError) as caught:
        sinks.load_sink(conf)

    assert str(caught.value).startswith(reason)
