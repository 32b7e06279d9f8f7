"""The corrective-action policy: the budget per window and the minimum
uptime, on a fake wall clock (pure: nothing is run)."""

from tests.fixtures import virt
from vmha.manager import actions


def make(clock, **kwargs):
    driver = virt.make_driver(clock=clock)
    options = dict(budget=2, window=3600.0, min_uptime=300.0)
    options.update(kwargs)
    return driver, actions.ActionPolicy(driver, wall=clock, **options)


def test_notify_never_acts():
    clock = virt.FakeClock()
    _, policy = make(clock)
    choice = policy.choose('notify', [], booted_at=1.0)
    assert choice.function is None and choice.why == 'failure reported'


def test_an_action_runs_within_its_budget_then_the_failure_is_reported():
    clock = virt.FakeClock(10_000.0)
    driver, policy = make(clock)
    done = []
    for _ in range(2):
        choice = policy.choose('reset', done, booted_at=1.0)
        assert choice.function == driver.reset_instance
        done = choice.actions + [clock()]
        clock.advance(60)
    assert policy.choose('restart', [], 1.0).function == \
        driver.restart_instance
    choice = policy.choose('reset', done, booted_at=1.0)
    assert choice.function is None
    assert choice.why == ('no reset: 2 already in the last 3600s '
                          '(action_budget); failure reported')
    clock.advance(3500)  # the first one leaves the window
    choice = policy.choose('reset', done, booted_at=1.0)
    assert choice.function == driver.reset_instance
    assert choice.why == 'reset 2 of 2 in 3600s; no failure reported'
    assert choice.actions == done[1:]


def test_a_guest_up_too_briefly_is_not_acted_on():
    clock = virt.FakeClock(10_000.0)
    _, policy = make(clock)
    choice = policy.choose('restart', [], booted_at=clock() - 120)
    assert choice.function is None
    assert choice.why == ('no restart: up only 120s (action_min_uptime '
                          '300s); failure reported')
