"""Failure episodes through the agent's event path (fake libvirt, real
SQLite journal, fake clock): issue 11 item 4.

What a user notices: each failure episode of an instance names an id of
its own, so a second failure is never taken for a resend of the first.
"""

import pytest

from tests.unit.test_failure_monitor import Agent

RUNNING, SHUTOFF = 1, 5
WATCHDOG_EVENT, WATCHDOG_RESET = 3, 2


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'))
    yield agent
    agent.close()


def failures(agent):
    return [m.payload['vmha_object.data']
            for m in agent.messages('instance.failure')]


def crash(agent, dom):
    agent.fire(dom, 0, 5, 5)  # QEMU died
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()


def run_again(agent, dom):
    dom.state_value = (RUNNING, 1)
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()


def watchdog_reset(agent, dom):
    agent.fire(dom, WATCHDOG_EVENT, WATCHDOG_RESET)
    agent.dispatch()


def episode_in_journal(agent, uuid):
    return agent.reporter.store.all()[uuid].failure_episode


def test_crash_run_again_crash_again_gives_two_distinct_episodes(agent):
    dom = agent.fake.add_domain('vm-1')
    uuid = dom.UUIDString()
    crash(agent, dom)
    [first] = failures(agent)
    assert episode_in_journal(agent, uuid) == first['episode']
    agent.audit.run_once()  # the same failure seen again: same episode
    assert len(failures(agent)) == 1
    run_again(agent, dom)
    assert episode_in_journal(agent, uuid) is None

    crash(agent, dom)

    [first, second] = failures(agent)
    assert first['episode'] and second['episode']
    assert first['episode'] != second['episode']
    assert episode_in_journal(agent, uuid) == second['episode']


def test_a_failure_masakari_does_not_act_on_opens_no_episode(agent):
    dom = agent.fake.add_domain('vm-1')
    watchdog_reset(agent, dom)
    [failure] = failures(agent)
    assert failure['cause'] == 'watchdog'
    assert failure['episode'] is None
