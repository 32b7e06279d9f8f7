"""Lifecycle actions through the whole agent (``vmha.agent.build``, its
real heartbeat monitor and ActionRunner) on test:///default, with a
simulated guest on the channel socket its domain XML names, voting from
its own thread.  On this run's backend.

What the caller, the guest and an operator see: the verdict and the
guest's reason, the notices the guest got, the domain's state, and no
heartbeat failure for an action vmha ran.
"""

import time
import uuid as uuid_lib

import pytest

from tests.fixtures import heartbeat_guest
from tests.functional import test_heartbeat_agent as harness

pytestmark = pytest.mark.functional
RUNNING, PAUSED = 1, 3
# The harness's fixtures, used as they are there.
agent = harness.agent
sockets = harness.sockets


class VotingGuest(heartbeat_guest.AnsweringGuest):
    """Answers challenges, and every vote and notice with ``result``."""

    def __init__(self, path, result='accept', reason='ready'):
        super().__init__(path, interval_ms=400)
        self.result = result
        self.reason = reason

    def answer(self, *args, **kwargs):
        nonce = super().answer(*args, **kwargs)
        self.respond_to_actions(self.result, self.reason)
        return nonce

    def notices(self):
        return [(m['event'], m['notification'], m['phase'])
                for m in self.of_type('action_notify')]


def start(agent, sockets, wait_for, persistent=False, **how):
    name = 'act-%s' % uuid_lib.uuid4().hex[:8]
    guest = VotingGuest('%s/%s.sock' % (sockets, name), **how).start()
    conn = agent.driver.host.get_connection()
    xml = harness.domain_xml(name, guest.path)
    if persistent:  # a managed save needs a defined domain
        dom = conn.define_domain(xml)
        dom.start()
    else:
        dom = conn.create_domain(xml)
    wait_for(lambda: harness.row_of(agent, name)['heartbeat'] ==
             'enabled 0.4s', timeout=10, what='the guest enabled')
    return dom, guest


def test_a_stop_the_guest_rejects_is_not_done_and_the_caller_hears_why(
        agent, sockets, wait_for):
    dom, guest = start(agent, sockets, wait_for, result='reject',
                       reason='database resync in progress')
    try:
        answer = agent.actions.request(dom.uuid, dom.name, 'stop')

        assert answer['verdict'] == 'rejected'
        assert answer['reason'] == 'database resync in progress'
        assert dom.state()[0] == RUNNING
        assert guest.notices() == [('stop', 'revocable', 'pre')]
        assert harness.row_of(agent, dom.name)['heartbeat'] == \
            'enabled 0.4s'
        assert harness.failures(agent) == []
    finally:
        dom.destroy()
        guest.stop()


def test_pause_and_unpause_tell_the_guest_before_and_after(
        agent, sockets, wait_for):
    dom, guest = start(agent, sockets, wait_for)
    try:
        paused = agent.actions.request(dom.uuid, dom.name, 'pause')
        assert paused['done'] and dom.state()[0] == PAUSED
        assert paused['phases'][0]['reason'] == 'ready'  # the guest's

        unpaused = agent.actions.request(dom.uuid, dom.name, 'unpause')
        assert unpaused['done'] and dom.state()[0] == RUNNING

        wait_for(lambda: guest.notices() == [
            ('pause', 'revocable', 'pre'),
            ('pause', 'irrevocable', 'pre'),
            ('unpause', 'irrevocable', 'post')], timeout=5,
            what='the pre- and post-notices in order')
        ids = {m['action_id'] for m in guest.of_type('action_notify')}
        assert ids == {paused['action_id'], unpaused['action_id']}
        wait_for(lambda: harness.row_of(agent, dom.name)['heartbeat'] ==
                 'enabled 0.4s', timeout=10, what='challenged again')
        assert harness.failures(agent) == []
    finally:
        dom.destroy()
        guest.stop()


def test_a_stop_the_guest_accepts_shuts_it_down_without_a_failure(
        agent, sockets, wait_for):
    dom, guest = start(agent, sockets, wait_for)
    try:
        answer = agent.actions.request(dom.uuid, dom.name, 'stop')

        assert answer['done']
        assert answer['reason'].startswith('shut down by the guest')
        # A transient domain: gone once it is off.
        assert dom.uuid not in {i.uuid for i in harness.RUN_BLOCKING(
            agent.driver.list_instances)}
        assert guest.notices() == [('stop', 'revocable', 'pre'),
                                   ('stop', 'irrevocable', 'pre')]
        wait_for(lambda: not agent.heartbeat_monitor.status(), timeout=10,
                 what='the stopped VM forgotten')
        assert harness.failures(agent) == []
    finally:
        guest.stop()


@pytest.mark.xfail(strict=False, reason='a product bug, found 2026-12-07: '
                   'after a resume from saved memory the post-notice is '
                   'sometimes skipped ("no heartbeat guest": the guest has '
                   'not registered again yet and the resume began with no '
                   'registration, so nothing waits for it); 1-4 runs in 8 '
                   'on a loaded machine')
def test_suspend_and_resume_tell_the_guest_before_and_after(
        agent, sockets, wait_for):
    dom, guest = start(agent, sockets, wait_for, persistent=True)
    try:
        suspended = agent.actions.request(dom.uuid, dom.name, 'suspend')
        assert suspended['done']

        resumed = agent.actions.request(dom.uuid, dom.name, 'resume')

        assert resumed['done'] and dom.state()[0] == RUNNING
        # The post-notice is written as the action ends: the guest's
        # thread reads it in its own time.
        expected = [('suspend', 'revocable', 'pre'),
                    ('suspend', 'irrevocable', 'pre'),
                    ('resume', 'irrevocable', 'post')]
        deadline = time.monotonic() + 5
        while guest.notices() != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert guest.notices() == expected, resumed['phases']
        assert resumed['phases'][-1]['reason'] == 'ready'
        wait_for(lambda: harness.row_of(agent, dom.name)['heartbeat'] ==
                 'enabled 0.4s', timeout=10, what='challenged again')
        assert harness.failures(agent) == []
    finally:
        dom.destroy()
        dom.undefine()
        guest.stop()
