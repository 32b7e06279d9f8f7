"""A failure followed to its outcome: vmha-masakari-bridge against a
Masakari stand-in that moves its notifications on (``fake_masakari``),
the ``instance.recovery`` notifications on the bus in order, and the
agent showing the outcome in vmha-status's RECOVERY column through the
real RPC API (1.1 ``recovery_changed``) over fake://.

The agent runs on the threading backend, as in test_rpc_api.py (RPC
under eventlet needs a monkey patched process); the bridge always runs
on native threads.
"""

import threading
import uuid as uuid_lib

from oslo_config import cfg
import oslo_messaging
import pytest

from tests.fixtures import fake_masakari
from tests.functional import test_rpc_api
from tests.unit import test_bridge
from tests.unit import test_sinks
from vmha import concurrency
from vmha import rpcapi
from vmha.api import table
from vmha.bridge import service as bridge_service
from vmha.notify.sinks import messaging as messaging_sink

pytestmark = pytest.mark.functional


class RecoveryEndpoint:
    """Every instance.recovery on the bus, in arrival order."""

    def __init__(self):
        self.received = []
        self._lock = threading.Lock()

    def _record(self, priority, event_type, payload, metadata):
        if event_type == 'instance.recovery':
            with self._lock:
                self.received.append(
                    (priority, metadata['message_id'],
                     payload['vmha_object.data']))

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('info', event_type, payload, metadata)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('warn', event_type, payload, metadata)

    def statuses(self):
        with self._lock:
            return [data['status'] for _, _, data in self.received]


@pytest.fixture
def masakari():
    server = fake_masakari.FakeMasakari(hosts=['compute-1']).start()
    yield server
    server.stop()


@pytest.fixture
def bus():
    transport = oslo_messaging.get_notification_transport(
        cfg.ConfigOpts(), url='fake://')
    yield transport
    transport.cleanup()


@pytest.fixture
def setting(tmp_path, masakari, bus, libvirt_conn):
    """The agent, a bridge telling it over RPC, a recovery listener."""
    agent = test_rpc_api.Agent(tmp_path / 'vmha.sqlite')
    conf = test_bridge.make_conf(masakari.endpoint, bridge={
        'state_file': str(tmp_path / 'bridge.sqlite'),
        'recovery_poll_interval': 0.1, 'recovery_poll_max_interval': 0.4})
    api = rpcapi.AgentAPI(agent.rpc.transport, timeout=10)
    bridge = bridge_service.BridgeService(
        conf, bus, concurrency.get('threading'),
        tell_agent=lambda host, rec: api.recovery_changed({}, host, rec))
    bridge.start()
    recoveries = RecoveryEndpoint()
    listener = oslo_messaging.get_notification_listener(
        bus, [oslo_messaging.Target(topic=t)
              for t in conf.notifications.topics],
        [recoveries], executor='threading', pool='recovery-watcher')
    listener.start()
    yield agent, bridge, conf, recoveries
    listener.stop()
    listener.wait()
    bridge.stop()
    agent.stop()


@pytest.fixture
def libvirt_conn():
    from vmha.virt.libvirt import api as libvirt_api
    conn = libvirt_api.LibvirtAPI().open('test:///default')
    yield conn
    conn.close()


def send_failure(conf, bus, uuid, episode):
    payload = test_sinks.failure_payload()
    payload['vmha_object.version'] = '1.1'
    payload['vmha_object.data'] = dict(payload['vmha_object.data'],
                                       uuid=uuid, episode=episode)
    messaging_sink.MessagingSink(conf, transport=bus).send(
        test_sinks.failure_message(payload=payload))


def the_domain(agent):
    [row] = [r for r in agent.call('list_instances') if r['name'] == 'test']
    return row['uuid']


def recovery_column(agent, uuid):
    """The RECOVERY cell of ``uuid``'s row, from get_status over RPC."""
    status = agent.call('get_status')
    [row] = [r for r in status['instances'] if r['uuid'] == uuid]
    text = table.render(status)
    assert 'RECOVERY' in text.splitlines()[1]
    return table.recovery_cell(row['recovery'])


def test_a_recovery_followed_to_finished(setting, masakari, bus, wait_for):
    agent, bridge, conf, recoveries = setting
    uuid = the_domain(agent)
    episode = uuid_lib.uuid4().hex
    send_failure(conf, bus, uuid, episode)
    wait_for(lambda: recoveries.statuses() == ['accepted'], timeout=10,
             what='accepted')
    wait_for(lambda: recovery_column(agent, uuid) == 'accepted', timeout=10,
             what='RECOVERY accepted')
    [stored] = masakari.notifications

    masakari.set_status(stored['notification_uuid'], 'running')
    wait_for(lambda: recovery_column(agent, uuid) == 'running', timeout=10,
             what='RECOVERY running')
    masakari.set_status(stored['notification_uuid'], 'finished', steps=[
        {'name': 'StartInstanceTask', 'state': 'SUCCESS', 'progress': 1.0,
         'progress_details': [{'timestamp': '2026-03-01 10:20:40',
                               'message': 'Instance started',
                               'progress': '1.0'}]}])
    wait_for(lambda: recovery_column(agent, uuid).startswith('finished '),
             timeout=10, what='RECOVERY finished')

    # The listener gets the bus's copy on a thread of its own.
    wait_for(lambda: recoveries.statuses() == ['accepted', 'running',
                                               'finished'],
             timeout=10, what='three instance.recovery on the bus')
    priority, _, last = recoveries.received[-1]
    assert priority == 'info'
    assert (last['uuid'], last['host'], last['episode'],
            last['notification_uuid']) == (
        uuid, 'compute-1', episode, stored['notification_uuid'])
    [step] = last['workflow_details']
    assert step['vmha_object.data']['name'] == 'StartInstanceTask'
    # The GETs are bounded: a few per change at 0.1-0.4 s, not a storm,
    # and none once finished.
    gets = len(masakari.gets)
    assert gets < 60
    metrics = bridge.metrics.exposition().decode()
    assert 'vmha_bridge_recoveries_total{outcome="finished"} 1.0' in metrics
    agent_metrics = agent.service.metrics.exposition().decode()
    assert 'vmha_recoveries_total{outcome="finished"} 1.0' in agent_metrics
    threading.Event().wait(1.0)
    assert len(masakari.gets) == gets


def test_ignored_and_rejected_are_shown(setting, masakari, bus, wait_for):
    agent, bridge, conf, recoveries = setting
    uuid = the_domain(agent)
    send_failure(conf, bus, uuid, 'e-1')
    wait_for(lambda: len(masakari.notifications) == 1, timeout=10,
             what='the POST')
    masakari.set_status(masakari.notifications[0]['notification_uuid'],
                        'ignored')
    wait_for(lambda: recovery_column(agent, uuid) == 'ignored', timeout=10,
             what='RECOVERY ignored')

    masakari.maintenance.add('compute-1')
    send_failure(conf, bus, uuid, 'e-2')
    wait_for(lambda: recovery_column(agent, uuid).startswith('rejected'),
             timeout=10, what='RECOVERY rejected')

    wait_for(lambda: recoveries.statuses() == ['accepted', 'ignored',
                                               'rejected'],
             timeout=10, what='three instance.recovery on the bus')
    priority, _, last = recoveries.received[-1]
    assert priority == 'warn'
    assert last['episode'] == 'e-2'
    assert 'maintenance' in last['reason']
    assert 'HTTP 409' in recovery_column(agent, uuid)


def test_a_restarted_bridge_finishes_what_it_followed(
        setting, masakari, bus, wait_for, tmp_path):
    agent, bridge, conf, recoveries = setting
    uuid = the_domain(agent)
    send_failure(conf, bus, uuid, 'e-1')
    wait_for(lambda: recoveries.statuses() == ['accepted'], timeout=10,
             what='accepted')
    bridge.stop()
    masakari.set_status(masakari.notifications[0]['notification_uuid'],
                        'finished')

    api = rpcapi.AgentAPI(agent.rpc.transport, timeout=10)
    again = bridge_service.BridgeService(
        conf, bus, concurrency.get('threading'),
        tell_agent=lambda host, rec: api.recovery_changed({}, host, rec))
    again.start()
    try:
        wait_for(lambda: recoveries.statuses() == ['accepted', 'finished'],
                 timeout=10, what='finished after the restart')
        wait_for(lambda: recovery_column(agent, uuid).startswith('finished'),
                 timeout=10, what='RECOVERY finished')
    finally:
        again.stop()
    bridge.start = lambda: None  # the fixture's bridge is stopped already
    bridge.stop = lambda: None
