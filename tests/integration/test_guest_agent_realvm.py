"""The guest-agent monitor against real QEMU guests running qemu-ga.

The whole agent runs in-process (``InProcessAgent``) with the default
``[guest_agent]`` settings (interval 5 s, timeout 2 s, threshold 2)
unless a test says otherwise.  Guests boot under TCG; each test looks at
its own guest only.
"""

import time

import pytest

from tests.integration.test_manager_realvm import InProcessAgent

pytestmark = pytest.mark.realvm

HEALTHY_WITHIN = 30  # boot -> first answered ping, with margin


@pytest.fixture
def make_agent(libvirtd, tmp_path):
    agents = []

    def make(**overrides):
        agent = InProcessAgent(tmp_path / str(len(agents)), overrides={
            ('guest_agent', k): v for k, v in overrides.items()})
        agents.append(agent)
        return agent
    yield make
    for agent in agents:
        agent.stop()


def healthy(agent, guest, wait_for):
    """Healthy after its boot: a guest restored from the test bed's image
    answers at once, so a ping can be answered before the STARTED event
    is handled, which then sends the guest back to discovery."""
    def answered_since_boot():
        booted = [e.monotonic for e in agent.events
                  if getattr(e, 'uuid', None) == guest.uuid
                  and getattr(e, 'vir_domain_event', '').startswith(
                      'STARTED')]
        if not booted or agent.guest_state(guest.uuid) != 'healthy':
            return False
        return (last_ping_at(agent, guest) or 0) > booted[-1]
    wait_for(answered_since_boot, timeout=HEALTHY_WITHIN,
             what='the guest agent to answer after the boot')


def last_ping_at(agent, guest):
    for status in agent.service.guest_monitor.status():
        if status['uuid'] == guest.uuid:
            return status['last_ping_at']


def test_a_healthy_guest_stays_healthy_for_many_cycles(make_agent,
                                                       vm_factory, wait_for):
    agent = make_agent(interval=1.0, timeout=0.5)
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    states = set()
    for _ in range(30):  # 15 cycles
        states.add(agent.guest_state(guest.uuid))
        time.sleep(0.5)
    assert states == {'healthy'}
    assert agent.health(guest.uuid) == []
    assert agent.failures(guest.uuid) == []


@pytest.mark.parametrize('how', ['stop_qemu', 'hang_kernel'])
def test_a_hung_guest_is_one_failure_within_15s(make_agent, vm_factory,
                                               wait_for, realvm_measure,
                                               how):
    agent = make_agent()
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    hung_at = time.monotonic()
    getattr(guest, how)()  # SIGSTOP of QEMU, or a spinning guest kernel
    wait_for(lambda: agent.failures(guest.uuid), timeout=30,
             what='the failure notification')
    sent_at = agent.of(guest.uuid, 'instance.failure')[0][0]
    latency = realvm_measure('vmha: guest hung (%s) -> failure sent' % how,
                             sent_at - hung_at)
    (failure,) = agent.failures(guest.uuid)
    assert (failure['cause'], failure['event'],
            failure['vir_domain_event']) == (
        'guest_hung', 'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')
    expected = {'stop_qemu': 'QEMU is stopped or the vCPUs halted',
                'hang_kernel': 'a hung or spinning kernel'}[how]
    assert expected in failure['evidence']
    assert latency <= 15
    time.sleep(12)  # more failed pings: nothing more goes out
    assert len(agent.failures(guest.uuid)) == 1
    if how == 'stop_qemu':
        guest.cont_qemu()
        wait_for(lambda: len(agent.health(guest.uuid)) == 2,
                 timeout=30, what='the guest to answer again')
        assert [(h['old_state'], h['state'])
                for h in agent.health(guest.uuid)] == [
            ('error', 'reported'), ('reported', 'healthy')]


def test_agent_killed_while_the_guest_runs_is_a_warning(make_agent,
                                                        vm_factory,
                                                        wait_for):
    agent = make_agent()
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    guest.kill_agent()
    wait_for(lambda: agent.health(guest.uuid), timeout=30,
             what='the warning')
    (warning,) = agent.health(guest.uuid)
    assert warning['state'] == 'reported'
    assert 'agent down, guest alive' in warning['reason']
    assert 'closed the agent channel' in warning['reason']
    time.sleep(6)
    assert agent.failures(guest.uuid) == []
    guest.start_agent()
    wait_for(lambda: agent.guest_state(guest.uuid) == 'healthy',
             timeout=30, what='the agent to answer again')


def test_a_paused_guest_is_neither_pinged_nor_reported(make_agent,
                                                       vm_factory, domains,
                                                       wait_for):
    agent = make_agent(interval=1.0, timeout=0.5)
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    domains.virsh('suspend', guest.name)
    wait_for(lambda: agent.guest_state(guest.uuid) == 'suppressed',
             timeout=10, what='the pause to be seen')
    pinged_at = last_ping_at(agent, guest)
    time.sleep(8)
    assert last_ping_at(agent, guest) == pinged_at
    assert agent.health(guest.uuid) == [] and \
        agent.failures(guest.uuid) == []
    domains.virsh('resume', guest.name)
    wait_for(lambda: agent.guest_state(guest.uuid) == 'healthy',
             timeout=15, what='pings after the resume')


def test_a_reboot_goes_through_discovery_back_to_healthy(make_agent,
                                                          vm_factory,
                                                          wait_for):
    agent = make_agent(interval=1.0, timeout=0.5)
    guest = vm_factory()
    healthy(agent, guest, wait_for)
    guest.send('reboot')
    wait_for(lambda: agent.guest_state(guest.uuid) == 'discovery',
             timeout=30, what='the reboot to reset the machine')
    healthy(agent, guest, wait_for)
    assert agent.failures(guest.uuid) == []
