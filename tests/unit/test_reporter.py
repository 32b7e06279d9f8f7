"""Failure episodes and the limits on other failures, through the agent's
event path (fake libvirt, real SQLite journal, fake clock): issue 11
items 4 and 6.

What a user notices: each failure episode of an instance names an id of
its own, so a second failure is never taken for a resend of the first;
a guest whose watchdog keeps firing sends one notification per window
with the count of the others; a host where a thousand guests do so at
once sends what the cap allows, says so once and counts the rest; and a
failure Masakari recovers is never held back by either.
"""

import logging
import os

from prometheus_client import parser
import pytest

from tests.unit.test_failure_monitor import Agent
from vmha.manager import metrics as metrics_lib
from vmha.manager import rate_limit
from vmha.manager import service

RUNNING, SHUTOFF = 1, 5
WATCHDOG_EVENT, WATCHDOG_RESET = 3, 2


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'))
    agent.path = str(tmp_path / 'vmha.sqlite')
    # As [notifications] repeat_window and
    # max_error_notifications_per_minute default, on the test's clock.
    agent.reporter.limiter = rate_limit.NotificationLimiter(
        300, 60, clock=agent.driver.clock)
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
    assert failure['suppressed'] == 0


def wal_state(agent):
    wal = os.stat(agent.path + '-wal')
    return wal.st_size, wal.st_mtime_ns


def test_a_watchdog_reset_every_second_for_an_hour(agent, caplog):
    dom = agent.fake.add_domain('vm-1')
    caplog.set_level(logging.WARNING)
    watchdog_reset(agent, dom)
    agent.driver.clock.advance(1)
    before = wal_state(agent)
    for _ in range(298):  # the repeats inside the first window
        watchdog_reset(agent, dom)
        agent.driver.clock.advance(1)
    # Counted in memory only: not one journal write for them.
    assert wal_state(agent) == before
    assert len(failures(agent)) == 1

    for _ in range(3600 - 299):
        watchdog_reset(agent, dom)
        agent.driver.clock.advance(1)

    # One per 300 s window; each after the first counts the 299 repeats
    # of the window before it.
    assert [f['suppressed'] for f in failures(agent)] == [0] + [299] * 11
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith('Failure of vm-1')]
    assert len(lines) == 12
    assert '299 repeat(s) not sent since the last one' in lines[-1]


def test_a_thousand_domains_in_a_minute_hit_the_host_cap(agent, caplog):
    doms = [agent.fake.add_domain('vm-%04d' % i) for i in range(1000)]
    crashing = agent.fake.add_domain('vm-crash')
    caplog.set_level(logging.WARNING)

    for i, dom in enumerate(doms):
        watchdog_reset(agent, dom)
        if i == 500:
            crash(agent, crashing)  # a real failure, in the thick of it
        agent.driver.clock.advance(0.05)

    sent = failures(agent)
    watchdog = [f for f in sent if f['cause'] == 'watchdog']
    assert len(watchdog) == 60
    # The crash is reported at once, and the cap never counted it.
    [crashed] = [f for f in sent if f['cause'] == 'qemu_died']
    assert crashed['uuid'] == crashing.UUIDString()
    assert crashed['episode'] is not None
    assert sent.index(crashed) == 60
    [warning] = [r.getMessage() for r in caplog.records
                 if r.name == 'vmha.manager.rate_limit']
    assert warning.startswith('More than 60 failure notifications')
    assert metric(agent, 'host_cap') == 940
    assert metric(agent, 'repeat') == 0


def metric(agent, reason):
    agent_service = service.AgentService(agent.driver, 'compute-1',
                                         audit=agent.audit,
                                         reporter=agent.reporter)
    metrics = metrics_lib.Metrics()
    metrics.watch(agent_service)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in parser.text_string_to_metric_families(
                   metrics.exposition().decode())
               for s in family.samples}
    return samples[('vmha_notifications_suppressed_total',
                    (('reason', reason),))]


def test_repeated_crashes_are_never_held_back(agent):
    dom = agent.fake.add_domain('vm-1')
    for _ in range(5):  # well inside one repeat window
        crash(agent, dom)
        run_again(agent, dom)
        agent.driver.clock.advance(1)
    episodes = [f['episode'] for f in failures(agent)]
    assert len(set(episodes)) == 5
    assert metric(agent, 'repeat') == 0
