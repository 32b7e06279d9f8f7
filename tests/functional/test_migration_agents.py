"""Two whole agents (``vmha.agent.build``, every loop running) on two
fake libvirts, one VM migrated from one to the other by vmha's RPC-side
driver: what each side's outbox holds.

The fake's migration runs the success or the failure sequence of
libvirt's events on both fakes from the migration call's pool thread,
so the agents' real dispatchers, monitors and audit see them as they
would a real migration (the two-libvirtd test bed is a later session).
"""

from oslo_config import cfg
import pytest

from tests.conftest import BACKEND
from tests.fixtures import fakelibvirt
from tests.fixtures import sinks
from vmha import agent as agent_lib
from vmha import objects
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.virt.libvirt import api as libvirt_api
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional
objects.register_all()

DEST = 'qemu+tcp://compute-2/system'


class Agent:
    def __init__(self, path, host):
        self.fake = fakelibvirt.FakeLibvirt()
        self.journal = db.Journal(str(path))
        self.outbox = outbox_lib.Outbox(self.journal)
        self.sink = sinks.RecordingSink()
        sender = sender_lib.OutboxSender(self.outbox, self.sink, BACKEND)
        driver = libvirt_driver.LibvirtDriver(
            'qemu:///system', backend=BACKEND, stopped_delay=0,
            api=libvirt_api.LibvirtAPI(self.fake, self.fake.qemu))
        conf = cfg.ConfigOpts()
        vmha.conf.register_opts(conf)
        conf([], project='vmha')
        conf.set_override('host', host)
        conf.set_override('concurrency_backend', BACKEND)
        conf.set_override('port', 0, group='health')
        conf.set_override('progress_interval', 0.5, group='migration')
        self.service = agent_lib.build(conf, driver, self.journal,
                                       self.outbox, sender)

    def payloads(self, event_type):
        """Sent or still in the outbox (once each: one being sent is in
        both)."""
        messages = {m.message_id: m for m in list(self.sink.messages)
                    + self.outbox.pending(10000)}
        return [m.payload['vmha_object.data'] for m in messages.values()
                if m.event_type == event_type]

    def phases(self):
        return sorted((p['phase'], p['direction'])
                      for p in self.payloads('instance.migration'))

    def stop(self):
        self.service.stop()
        self.journal.close()


@pytest.fixture
def pair(tmp_path):
    source = Agent(tmp_path / 'source.sqlite', 'compute-1')
    destination = Agent(tmp_path / 'destination.sqlite', 'compute-2')
    source.fake.peers[DEST] = destination.fake
    source.service.start()
    destination.service.start()
    yield source, destination
    source.stop()
    destination.stop()


def test_a_vm_migrated_by_vmha_no_failure_on_either_side(pair, wait_for):
    source, destination = pair
    dom = source.fake.add_domain('web-1')
    dom.start_migration()
    source.service.migration_driver.live_migrate(
        dom.UUIDString(), 'web-1', DEST)
    wait_for(lambda: ('end', 'outgoing') in source.phases(),
             what='the source\'s end')
    wait_for(lambda: ('end', 'incoming') in destination.phases(),
             what='the destination\'s end')
    assert source.phases() == [('end', 'outgoing'), ('start', 'outgoing')]
    assert destination.phases() == [('end', 'incoming'),
                                    ('start', 'incoming')]
    for agent in (source, destination):
        assert agent.service.audit.run_once() == 0
        assert agent.payloads('instance.failure') == []
    assert dom.UUIDString() in destination.fake.domains
    assert dom.UUIDString() not in source.fake.domains


def test_a_failed_migration_the_source_runs_on(pair, wait_for):
    source, destination = pair
    dom = source.fake.add_domain('web-2')
    dom.start_migration()
    dom.migrate_error = fakelibvirt.libvirtError('unable to connect to '
                                                 'server at compute-2')
    source.service.migration_driver.live_migrate(
        dom.UUIDString(), 'web-2', DEST)
    wait_for(lambda: ('error', 'outgoing') in source.phases(),
             what='the error notification')
    [error] = [p for p in source.payloads('instance.migration')
               if p['phase'] == 'error']
    assert 'unable to connect' in error['reason']
    assert source.service.audit.run_once() == 0
    assert source.payloads('instance.failure') == []
    assert destination.phases() == []
    assert dom.state_value[0] == fakelibvirt.VIR_DOMAIN_RUNNING
