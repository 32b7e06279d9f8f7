"""The manager against a real libvirtd and real QEMU guests.

The whole agent runs in-process as vmha-agent wires it (failure monitor,
audit, journal, outbox, sender) on ``qemu:///system``; its sink records
what would go on the bus.  Other sessions' domains may share the host, so
every assertion looks at this test's guest only.
"""

import threading
import time

from oslo_config import cfg
import pytest

from tests.conftest import BACKEND
from tests.fixtures import sinks
from vmha import agent as agent_lib
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.realvm


class InProcessAgent:
    """:param overrides: {(group, option): value} on top of the defaults"""

    def __init__(self, tmp_path, stopped_delay=1.0, overrides=None):
        conf = cfg.ConfigOpts()
        vmha.conf.register_opts(conf)
        conf([], project='vmha')
        conf.set_override('host', 'realvm-host')
        conf.set_override('concurrency_backend', BACKEND)
        conf.set_override('connection_uri', 'qemu:///system',
                          group='libvirt')
        conf.set_override('port', 0, group='health')  # tests may run two
        for (group, option), value in (overrides or {}).items():
            conf.set_override(option, value, group=group)
        self.driver = libvirt_driver.LibvirtDriver(
            'qemu:///system', backend=BACKEND, stopped_delay=stopped_delay,
            keepalive_interval=2, keepalive_count=2, reconnect_min=0.2,
            reconnect_max=2.0)
        self.events = []
        self.driver.register_event_listener(self.events.append)
        self.journal = db.Journal(str(tmp_path / 'vmha.sqlite'))
        outbox = outbox_lib.Outbox(self.journal)
        self.sink = sinks.RecordingSink()
        sender = sender_lib.OutboxSender(outbox, self.sink, BACKEND)
        self.service = agent_lib.build(
            conf, self.driver, self.journal, outbox, sender)
        self.service.start()

    def of(self, uuid, event_type):
        return [(when, m) for when, m in self.sink.received
                if m.event_type == event_type
                and m.payload['vmha_object.data'].get('uuid') == uuid]

    def failures(self, uuid):
        return [m.payload['vmha_object.data']
                for _, m in self.of(uuid, 'instance.failure')]

    def health(self, uuid):
        return [m.payload['vmha_object.data']
                for _, m in self.of(uuid, 'guest.health')]

    def guest_state(self, uuid):
        for status in self.service.guest_monitor.status():
            if status['uuid'] == uuid:
                return status['state']
        return None

    def lifecycle(self, uuid):
        return [m.payload['vmha_object.data']['vir_domain_event']
                for _, m in self.of(uuid, 'instance.lifecycle')]

    def event(self, uuid, vir_domain_event):
        for event in self.events:
            if getattr(event, 'uuid', None) == uuid and \
                    event.vir_domain_event == vir_domain_event:
                return event
        return None

    def stop(self):
        self.service.stop()
        self.journal.close()


@pytest.fixture
def agent(libvirtd, tmp_path):
    agent = InProcessAgent(tmp_path)
    yield agent
    agent.stop()


def test_kill9_of_qemu_is_reported_within_a_second(agent, vm_factory,
                                                   wait_for,
                                                   realvm_measure):
    guest = vm_factory()
    guest.kill9_qemu()
    wait_for(lambda: agent.failures(guest.uuid), timeout=30,
             what='a failure notification')
    (failure,) = agent.failures(guest.uuid)
    assert (failure['cause'], failure['event'],
            failure['vir_domain_event']) == ('qemu_died', 'LIFECYCLE',
                                             'STOPPED_FAILED')
    event = agent.event(guest.uuid, 'STOPPED_FAILED')
    assert event is not None
    sent_at = agent.of(guest.uuid, 'instance.failure')[0][0]
    latency = realvm_measure('libvirt STOPPED_FAILED -> failure sent',
                             sent_at - event.monotonic)
    assert latency < 1.0


def test_guest_panic_is_one_failure(agent, vm_factory, wait_for):
    guest = vm_factory(pvpanic=True, on_crash='destroy')
    guest.panic()
    wait_for(lambda: agent.event(guest.uuid, 'STOPPED_CRASHED'),
             timeout=60, what='STOPPED_CRASHED after the panic')
    wait_for(lambda: agent.failures(guest.uuid), timeout=10,
             what='the failure notification')
    time.sleep(2)  # nothing more may follow
    failures = agent.failures(guest.uuid)
    assert [(f['cause'], f['event'], f['vir_domain_event'])
            for f in failures] == [('guest_panic', 'LIFECYCLE',
                                    'STOPPED_FAILED')]


def test_operator_actions_are_lifecycle_only(agent, vm_factory, domains,
                                             wait_for):
    guest = vm_factory()
    domains.virsh('suspend', guest.name)
    domains.virsh('resume', guest.name)
    domains.virsh('shutdown', guest.name)
    guest.wait_for_state('shut off', timeout=60)
    # STOPPED is held back 1 s here: a start within it would be a reboot.
    wait_for(lambda: 'STOPPED_SHUTDOWN' in agent.lifecycle(guest.uuid),
             timeout=10, what='the shutdown to be recorded')
    guest.start()
    guest.wait_for_state('running', timeout=30)
    domains.virsh('destroy', guest.name)
    wait_for(lambda: agent.lifecycle(guest.uuid).count('STOPPED_DESTROYED'),
             timeout=30, what='the destroy to be recorded')
    lifecycle = agent.lifecycle(guest.uuid)
    for expected in ('SUSPENDED_PAUSED', 'RESUMED_UNPAUSED',
                     'STOPPED_SHUTDOWN', 'STOPPED_DESTROYED'):
        assert expected in lifecycle
    assert agent.failures(guest.uuid) == []


def test_vm_killed_while_libvirtd_is_down_is_reported_once(
        agent, vm_factory, libvirtd, wait_for):
    guest = vm_factory()
    wait_for(lambda: agent.lifecycle(guest.uuid), timeout=10,
             what='the boot to be recorded')
    libvirtd.kill9()
    guest.kill9_qemu()
    libvirtd.start()
    wait_for(lambda: agent.failures(guest.uuid), timeout=60,
             what='the failure, from the audit after the reconnect')
    names = [type(e).__name__ for e in agent.events]
    assert 'ConnectionLostEvent' in names
    assert 'ConnectionRestoredEvent' in names
    agent.service.audit.run_once()  # another audit: still one report
    time.sleep(1)
    failures = agent.failures(guest.uuid)
    assert [(f['event'], f['vir_domain_event']) for f in failures] == [
        ('LIFECYCLE', 'STOPPED_FAILED')]


@pytest.mark.parametrize('delay', [0.05, 0.1, 0.1, 0.15, 0.2, 0.6])
def test_vm_killed_as_libvirtd_restarts_is_reported_within_10s(
        agent, vm_factory, libvirtd, wait_for, realvm_measure, delay):
    """Regression: a QEMU killed while libvirtd starts again gives no
    lifecycle event; libvirtd lists it as running while it reconnects,
    so the one audit after the reconnect missed it and the failure came
    with the next periodic audit, 60 s later (2 of 4 trials)."""
    guest = vm_factory()
    wait_for(lambda: agent.lifecycle(guest.uuid), timeout=10,
             what='the boot to be recorded')
    libvirtd.kill9()
    killer = threading.Timer(delay, guest.kill9_qemu)
    killer.start()  # ``delay`` seconds into libvirtd's start
    try:
        libvirtd.start()
    finally:
        killer.join()
    answered = time.monotonic()

    def recoverable():
        # A CONTROL_ERROR on a domain libvirtd still lists as running is
        # reported too, for the record; Masakari acts on this pair only.
        return [f for f in agent.failures(guest.uuid)
                if (f['event'], f['vir_domain_event'])
                == ('LIFECYCLE', 'STOPPED_FAILED')]
    wait_for(recoverable, timeout=30, what='the failure after the reconnect')
    latency = realvm_measure('libvirtd answers -> failure of a QEMU '
                             'killed as it restarted',
                             time.monotonic() - answered)
    (failure,) = recoverable()
    if agent.event(guest.uuid, 'CRASHED_PANICKED') is None:
        assert failure['cause'] != 'guest_panic'  # no panic was seen
    assert latency <= 10.0
