"""Reboots and shutdowns an operator asks for are not failures, on real
guests.

The whole agent runs in-process (``InProcessAgent``) on the test bed's
guests, which honour the ACPI power button and qemu-ga's reboot: the
guest really goes down in order (qemu-ga closes its channel, then the
kernel resets or powers off), as a production guest does.  The guest
agent monitor pings every second, so it pings through the reboot.  Each
test ends by killing the guest's QEMU, which must still be one failure:
the agent was watching all along, it did not just miss the reboot.
"""

import json
import time

import pytest

from tests.integration.test_guest_agent_realvm import healthy
from tests.integration.test_guest_agent_realvm import last_ping_at
from tests.integration.test_manager_realvm import InProcessAgent

pytestmark = pytest.mark.realvm

REBOOT_WITHIN = 60  # virsh reboot -> the new boot's agent answers


@pytest.fixture
def agent(libvirtd, tmp_path):
    agent = InProcessAgent(tmp_path, overrides={
        ('guest_agent', 'interval'): 1.0, ('guest_agent', 'timeout'): 0.5})
    yield agent
    agent.stop()


def queued_failures(agent, uuid):
    """Every instance.failure of ``uuid`` the agent wrote to its outbox,
    sent or not: what vmha-masakari-bridge would hand to Masakari."""
    rows = agent.journal.query(
        "SELECT payload FROM outbox WHERE event_type = 'instance.failure'")
    return [row['payload'] for row in rows
            if json.loads(row['payload'])['vmha_object.data'].get(
                'uuid') == uuid]


def assert_no_failure(agent, guest):
    assert agent.failures(guest.uuid) == []
    assert queued_failures(agent, guest.uuid) == []


def assert_kill9_is_one_failure(agent, guest, wait_for):
    guest.kill9_qemu()
    wait_for(lambda: agent.failures(guest.uuid), timeout=30,
             what='the failure of the killed guest')
    time.sleep(1)  # nothing more may follow
    assert [(f['cause'], f['vir_domain_event'])
            for f in agent.failures(guest.uuid)] == [
        ('qemu_died', 'STOPPED_FAILED')]
    assert len(queued_failures(agent, guest.uuid)) == 1


def rebooted_at(agent, guest):
    """Monotonic time of the guest's last REBOOT event, or None."""
    times = [e.monotonic for e in agent.events
             if type(e).__name__ == 'RebootEvent' and e.uuid == guest.uuid]
    return times[-1] if times else None


@pytest.mark.parametrize('mode', ['agent', 'acpi'])
def test_a_reboot_is_not_a_failure(agent, vm_factory, wait_for,
                                   realvm_measure, mode):
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    boot_id = guest.boot_id()
    asked = guest.reboot(mode)
    guest.wait_for_new_boot(boot_id, timeout=REBOOT_WITHIN)
    wait_for(lambda: rebooted_at(agent, guest), timeout=10,
             what='the REBOOT event')

    # Healthy again: an answer from the new boot's qemu-ga.
    def answered_after_the_reboot():
        return (agent.guest_state(guest.uuid) == 'healthy'
                and (last_ping_at(agent, guest) or 0)
                > rebooted_at(agent, guest))
    wait_for(answered_after_the_reboot, timeout=30,
             what='the guest agent to answer after the reboot')
    realvm_measure('vmha: virsh reboot --mode %s -> healthy again' % mode,
                   time.monotonic() - asked)
    time.sleep(2)  # a late verdict would show up by now
    assert_no_failure(agent, guest)
    assert not [s for s in agent.lifecycle(guest.uuid)
                if s.startswith('STOPPED')]
    assert guest.is_running()

    assert_kill9_is_one_failure(agent, guest, wait_for)


def test_an_acpi_shutdown_is_not_a_failure(agent, vm_factory, wait_for):
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    guest.shutdown('acpi')
    guest.wait_for_state('shut off', timeout=30)
    # STOPPED is held back 1 s here: a start within it would be a reboot.
    wait_for(lambda: 'STOPPED_SHUTDOWN' in agent.lifecycle(guest.uuid),
             timeout=10, what='the shutdown to be recorded')
    lifecycle = agent.lifecycle(guest.uuid)
    assert lifecycle.index('SHUTDOWN_GUEST') < lifecycle.index(
        'STOPPED_SHUTDOWN')
    time.sleep(3)  # the guest monitor's pings have nothing to answer
    assert_no_failure(agent, guest)
    assert guest.state() == 'shut off (shutdown)'

    # Started again, then killed: that one is a failure.
    guest.start()
    guest.wait_for_agent()
    healthy(agent, guest, wait_for)
    assert_kill9_is_one_failure(agent, guest, wait_for)
