"""The agent writes what libvirt reports into the outbox and sends it.

The real libvirt test driver, journal, outbox and sender; the sink records
what it is given, as a broker would receive it.
"""

import uuid as uuid_lib

from oslo_config import cfg
import pytest

from tests.conftest import BACKEND
from tests.fixtures import sinks
from vmha import agent as agent_lib
from vmha import objects
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional
objects.register_all()


@pytest.fixture
def agent(tmp_path):
    journal = db.Journal(str(tmp_path / 'vmha.sqlite'))
    outbox = outbox_lib.Outbox(journal)
    sink = sinks.RecordingSink()
    sender = sender_lib.OutboxSender(outbox, sink, BACKEND)
    driver = libvirt_driver.LibvirtDriver('test:///default', backend=BACKEND,
                                          stopped_delay=0)
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha')
    conf.set_override('host', 'compute-1')
    conf.set_override('concurrency_backend', BACKEND)
    conf.set_override('connection_uri', 'test:///default', group='libvirt')
    agent = agent_lib.build(conf, driver, journal, outbox, sender)
    agent.start()
    agent.sink, agent.outbox = sink, outbox
    yield agent
    agent.stop()
    journal.close()


def test_lifecycle_events_reach_the_sink_in_order(agent, wait_for):
    name = 'notify-%s' % uuid_lib.uuid4().hex[:8]
    conn = agent.driver.host.get_connection()
    dom = conn.create_domain(
        "<domain type='test'><name>%s</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>" % name)
    dom.suspend()
    dom.destroy()

    def mine():
        return [m for m in agent.sink.messages
                if m.payload['vmha_object.data']['name'] == name]

    wait_for(lambda: len(mine()) == 3, what='three notifications')
    data = [m.payload['vmha_object.data'] for m in mine()]
    assert [(d['transition'], d['vir_domain_event'], d['power_state'])
            for d in data] == [('STARTED', 'STARTED_BOOTED', 'running'),
                               ('PAUSED', 'SUSPENDED_PAUSED', 'paused'),
                               ('STOPPED', 'STOPPED_DESTROYED', 'shutdown')]
    assert {m.event_type for m in mine()} == {'instance.lifecycle'}
    assert {m.publisher_id for m in mine()} == {'vmha-agent:compute-1'}
    assert len({m.message_id for m in mine()}) == 3
    wait_for(lambda: agent.outbox.depth() == 0, what='an empty outbox')
