"""The heartbeat machine's table, cell by cell.

``EXPECTED`` is the contract written out again by hand, one line per
transition, so that a cell changed in the table by mistake fails here;
the properties below say, in words, what must hold whatever the table
grows into (no failure from a pause or an exit, nothing after a cut-off).
"""

import pytest

from vmha.manager import heartbeat_states as hs

W, ING, ON, FAIL, P, X, CUT = (hs.WAITING, hs.ENABLING, hs.ENABLED,
                               hs.FAILED, hs.PAUSED, hs.EXITED, hs.CUT_OFF)
REPORT, CLOSE = hs.REPORT_FAILURE, hs.CLOSE_EPISODE

# (state, input) -> (next state, effects)
EXPECTED = {}
for _state in (W, ING, ON, FAIL, P, X):
    EXPECTED.update({
        (_state, hs.CONNECTED): (W, set()),
        (_state, hs.INIT): (ING, set()),
        (_state, hs.EXIT): (X, {hs.NOTIFY_EXITED}),
        (_state, hs.CLOSED): (W, set()),
        (_state, hs.VIOLATION): (CUT, {hs.NOTIFY_CUT_OFF}),
    })
EXPECTED.update({
    (W, hs.PAUSE): (P, set()),

    (ING, hs.ANSWER_HEALTHY): (ON, {CLOSE}),
    (ING, hs.ANSWER_UNHEALTHY): (FAIL, {REPORT}),
    (ING, hs.MISSED): (ING, set()),
    (ING, hs.LOST): (FAIL, {REPORT}),
    (ING, hs.PAUSE): (P, set()),

    (ON, hs.ANSWER_HEALTHY): (ON, set()),
    (ON, hs.ANSWER_UNHEALTHY): (FAIL, {REPORT}),
    (ON, hs.MISSED): (ON, set()),
    (ON, hs.LOST): (FAIL, {REPORT}),
    (ON, hs.PAUSE): (P, set()),

    (FAIL, hs.ANSWER_HEALTHY): (ON, {CLOSE}),
    (FAIL, hs.ANSWER_UNHEALTHY): (FAIL, {REPORT}),
    (FAIL, hs.MISSED): (FAIL, set()),
    (FAIL, hs.LOST): (FAIL, {REPORT}),
    (FAIL, hs.PAUSE): (P, set()),

    (P, hs.PAUSE): (P, set()),
    (P, hs.RESUME): (ING, set()),
    (P, hs.RESUME_UNREGISTERED): (W, set()),

    (X, hs.PAUSE): (X, set()),
    (X, hs.RESUME): (X, set()),
    (X, hs.RESUME_UNREGISTERED): (X, set()),
    (X, hs.EXIT): (X, set()),  # a second exit tells nobody again
})
for _event in hs.INPUTS:
    EXPECTED[(CUT, _event)] = (CUT, set())


@pytest.mark.parametrize('state, event', sorted(EXPECTED))
def test_every_declared_transition(state, event):
    transition = hs.step(state, event)
    assert (transition.state, set(transition.effects)) == EXPECTED[
        (state, event)]


@pytest.mark.parametrize('state', hs.ALL_STATES)
@pytest.mark.parametrize('event', hs.INPUTS)
def test_a_pair_not_in_the_contract_is_a_bug_not_a_silent_no_op(state,
                                                                event):
    if (state, event) in EXPECTED:
        hs.step(state, event)
    else:
        with pytest.raises(hs.InvalidTransition):
            hs.step(state, event)


@pytest.mark.parametrize('event', [hs.PAUSE, hs.RESUME, hs.EXIT, hs.CLOSED,
                                   hs.CONNECTED, hs.MISSED, hs.INIT,
                                   hs.VIOLATION, hs.ANSWER_HEALTHY])
def test_only_a_loss_or_ill_health_ever_reports_a_failure(event):
    for state in hs.ALL_STATES:
        try:
            transition = hs.step(state, event)
        except hs.InvalidTransition:
            continue
        assert hs.REPORT_FAILURE not in transition.effects, (state, event)


def test_a_paused_machine_is_never_challenged_and_cannot_fail():
    assert hs.PAUSED not in hs.CHALLENGED
    for event in (hs.MISSED, hs.LOST, hs.ANSWER_UNHEALTHY):
        with pytest.raises(hs.InvalidTransition):
            hs.step(hs.PAUSED, event)


def test_cut_off_is_final_whatever_the_guest_does():
    for event in hs.INPUTS:
        assert hs.step(hs.CUT_OFF, event) == hs.Transition(hs.CUT_OFF,
                                                           frozenset())
