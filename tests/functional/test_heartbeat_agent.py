"""The guest heartbeat through the whole agent, as ``vmha.agent.build``
wires it, on libvirt's test:///default driver.

A domain defined with the heartbeat channel in its XML (a unix socket
path it names) gets a simulated guest listening on that socket, the way
QEMU would, answering challenges from its own thread.  What an operator
and Masakari see is asserted: the HEARTBEAT state in /status, the
metrics, the failure notification of a guest that stops answering, and
its episode closed when it answers again.
"""

import shutil
import tempfile
import uuid as uuid_lib

from oslo_config import cfg
import pytest

from tests.conftest import BACKEND
from tests.fixtures import heartbeat_guest
from tests.fixtures import sinks
from vmha import agent as agent_lib
from vmha import concurrency
from vmha import objects
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional
objects.register_all()
RUN_BLOCKING = concurrency.get(BACKEND).run_blocking
CHANNEL = 'org.vmha.heartbeat.0'


def domain_xml(name, path):
    return ("<domain type='test'><name>%s</name><uuid>%s</uuid>"
            "<memory>65536</memory><os><type>hvm</type></os><devices>"
            "<channel type='unix'><source mode='bind' path='%s'/>"
            "<target type='virtio' name='%s'/></channel></devices>"
            "</domain>" % (name, uuid_lib.uuid4(), path, CHANNEL))


@pytest.fixture
def sockets():
    path = tempfile.mkdtemp(prefix='hbf-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(tmp_path):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[])
    conf.set_override('host', 'compute-1')
    conf.set_override('concurrency_backend', BACKEND)
    conf.set_override('enabled', False, group='guest_agent')
    conf.set_override('port', 0, group='health')
    conf.set_override('max_action', 'log', group='heartbeat')
    journal = db.Journal(str(tmp_path / 'vmha.sqlite'))
    outbox = outbox_lib.Outbox(journal)
    sink = sinks.RecordingSink()
    sender = sender_lib.OutboxSender(outbox, sink, BACKEND)
    driver = libvirt_driver.LibvirtDriver('test:///default', backend=BACKEND,
                                          stopped_delay=0)
    service = agent_lib.build(conf, driver, journal, outbox, sender)
    service.sink = sink
    service.start()
    yield service
    service.stop()
    journal.close()


def row_of(agent, name):
    rows = RUN_BLOCKING(agent.inventory.instances)
    for row in rows:
        if row['name'] == name:
            return row
    raise AssertionError('no %s in %s' % (name, rows))


def failures(agent):
    return [m.payload['vmha_object.data'] for m in agent.sink.messages
            if m.event_type == 'instance.failure']


def test_a_guest_on_the_channel_its_xml_names_is_served(agent, sockets,
                                                        wait_for):
    name = 'hb-%s' % uuid_lib.uuid4().hex[:8]
    guest = heartbeat_guest.AnsweringGuest(
        '%s/%s.sock' % (sockets, name), interval_ms=400).start()
    try:
        dom = agent.driver.host.get_connection().create_domain(
            domain_xml(name, guest.path))
        wait_for(lambda: row_of(agent, name)['heartbeat'] == 'enabled 0.4s',
                 timeout=10, what='the guest enabled')
        challenges = len(guest.of_type('challenge'))
        wait_for(lambda: len(guest.of_type('challenge')) >= challenges + 5,
                 timeout=10, what='five more challenges')
        assert row_of(agent, name)['heartbeat'] == 'enabled 0.4s'
        assert failures(agent) == []
        text = agent.metrics.exposition().decode()
        assert 'vmha_heartbeat_guests{state="enabled"} 1.0' in text
        assert 'vmha_heartbeat_response_latency_seconds_count' in text

        # The guest hangs: one failure, for Masakari to recover.
        guest.hung.set()
        wait_for(lambda: failures(agent), timeout=10, what='the failure')
        wait_for(lambda: row_of(agent, name)['heartbeat'].startswith(
            'failed'), timeout=5, what='failed in /status')
        failure = failures(agent)[0]
        assert (failure['cause'], failure['event'],
                failure['vir_domain_event']) == (
            'heartbeat_lost', 'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')
        assert row_of(agent, name)['failure_open']

        # It answers again: the episode closes, nothing more is sent.
        guest.hung.clear()
        wait_for(lambda: not row_of(agent, name)['failure_open'],
                 timeout=10, what='the episode closed')
        assert row_of(agent, name)['heartbeat'] == 'enabled 0.4s'
        assert len(failures(agent)) == 1
        dom.destroy()
        # A transient domain: gone from the list once destroyed.
        wait_for(lambda: not agent.heartbeat_monitor.status(),
                 timeout=10, what='forgotten once destroyed')
        assert len(failures(agent)) == 1
    finally:
        guest.stop()


def test_the_heartbeat_loop_and_the_channel_hub_are_in_healthz(agent):
    checks = agent.health_report()['checks']
    assert checks['heartbeat']['ok'] and checks['channels']['ok']
