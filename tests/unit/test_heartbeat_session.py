"""One heartbeat connection's engine, on a fake clock.

A ``Guest`` here plays the in-guest client: it writes the messages the
contract describes (counting its own ``seq``) and reads the host's
``Send`` outputs to learn the challenges.  Time is whatever ``now`` the
test passes.  No-false-failure tests come first: a healthy guest, a
busy host, a paused VM, a guest that leaves, a frozen guest's backlog.
"""

import itertools
import json

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from vmha.manager import heartbeat_protocol as protocol
from vmha.manager import heartbeat_session as hs

BOUNDS = hs.Bounds(min_interval=0.5, max_interval=10.0, default_interval=1.0,
                   miss_threshold=2, max_action='reboot', max_notice=60.0,
                   max_messages_per_second=20, max_bad_in_a_row=10)
ACTION_ID = 'c0' * 16


def counting_nonces():
    counter = itertools.count()
    return lambda nbytes: '%0*x' % (2 * nbytes, next(counter))


def session(bounds=BOUNDS, now=0.0):
    return hs.Session(bounds, now, nonce=counting_nonces(), name='vm-1')


def sent(outputs):
    """The host messages among ``outputs``, parsed."""
    return [protocol.parse(o.data[:-1]) for o in outputs
            if type(o) is hs.Send]


def of_type(outputs, kind):
    return [o for o in outputs if type(o) is kind]


class Guest:
    """The guest end: its own seq, the latest challenge it heard."""

    def __init__(self, session):
        self.session = session
        self.seq = 0
        self.nonces = []
        self.heard = []

    def encode(self, kind, **fields):
        self.seq += 1
        return protocol.encode(kind, self.seq, **fields)

    def read(self, outputs):
        for message in sent(outputs):
            self.heard.append(message)
            if message.type == 'challenge':
                self.nonces.append(message.fields['nonce'])
        return outputs

    def feed(self, data, now):
        return self.read(self.session.feed(data, now))

    def send(self, now, kind, **fields):
        return self.feed(self.encode(kind, **fields), now)

    def init(self, now, **fields):
        return self.send(now, 'init', **fields)

    def answer(self, now, health='healthy', nonce=None, **fields):
        return self.send(now, 'challenge_response',
                         nonce=nonce or self.nonces[-1], health=health,
                         **fields)

    def tick(self, now):
        return self.read(self.session.tick(now))


def enabled(now=0.0, bounds=BOUNDS, **init):
    guest = Guest(session(bounds, now))
    guest.init(now, **init)
    guest.answer(now + 0.01)
    assert guest.session.state == 'enabled'
    return guest


def run_healthy(guest, start, intervals, answer_after=0.005, lateness=0.0):
    """Tick on time (or late) and answer every challenge; the outputs."""
    outputs = []
    now = start
    for _ in range(intervals):
        now = guest.session.next_due() + lateness
        outputs += guest.tick(now)
        outputs += guest.answer(now + answer_after)
    return outputs, now


# -- registration ----------------------------------------------------------

def test_init_is_acknowledged_with_what_is_granted_then_challenged():
    guest = Guest(session())
    outputs = guest.init(0.0, heartbeat_interval_ms=100,
                         corrective_action='stop', vote_secs=90)
    ack, challenge = sent(outputs)
    assert ack.type == 'init_ack'
    assert ack.fields['init_seq'] == 1
    assert ack.fields['heartbeat_interval_ms'] == 500
    assert ack.fields['corrective_action'] == 'reboot'
    assert ack.fields['vote_secs'] == 60.0
    assert challenge.type == 'challenge'
    assert len(challenge.fields['nonce']) == 32
    assert hs.StateChange('waiting', 'enabling', 'registered') in outputs
    assert guest.session.granted == {
        k: v for k, v in ack.fields.items() if k != 'init_seq'}
    assert guest.session.next_due() == 0.5


def test_the_first_healthy_answer_enables():
    guest = Guest(session())
    guest.init(0.0)
    outputs = guest.answer(0.2)
    assert outputs == [hs.StateChange('enabling', 'enabled',
                                      'answered healthy')]
    assert guest.session.last_answer_at == 0.2


def test_host_seq_counts_up_across_every_message_it_sends():
    guest = enabled()
    run_healthy(guest, 0.0, 3)
    assert [m.seq for m in guest.heard] == list(range(1, len(guest.heard) + 1))


def test_messages_before_init_are_nacked_not_registered():
    guest = Guest(session())
    outputs = guest.answer(0.0, nonce='ab' * 16)
    (nack,) = sent(outputs)
    assert nack.type == 'nack'
    assert nack.fields['reason'] == 'not_registered'
    assert nack.fields['nack_seq'] == 1
    assert guest.session.state == 'waiting'
    assert guest.session.tick(100.0) == []
    assert guest.session.next_due() is None


def test_a_waiting_session_never_fails():
    s = session()
    for now in range(0, 1000, 7):
        assert s.tick(float(now)) == []
    assert s.state == 'waiting'


def test_status_shows_what_an_operator_needs():
    guest = enabled(corrective_action='stop', heartbeat_interval_ms=2000)
    guest.tick(2.0)
    guest.tick(4.0)                        # one miss
    status = guest.session.status(4.5)
    assert {k: status[k] for k in (
        'state', 'interval', 'corrective_action', 'misses',
        'last_answer_age', 'episode_open', 'paused_why', 'pending_answers',
        'cut_off_reason')} == {
        'state': 'enabled', 'interval': 2.0, 'corrective_action': 'reboot',
        'misses': 1, 'last_answer_age': pytest.approx(4.49),
        'episode_open': False, 'paused_why': None, 'pending_answers': 0,
        'cut_off_reason': None}
    guest.session.pause(5.0, 'migrating')
    assert guest.session.status()['paused_why'] == 'migrating'


def test_asking_with_a_malformed_action_id_is_the_callers_bug():
    guest = enabled()
    with pytest.raises(ValueError):
        guest.session.ask('not-hex', 'stop', 'revocable', 'pre', 8, 0.5)


# -- no false failures -----------------------------------------------------

def test_a_healthy_guest_stays_enabled_for_many_intervals():
    guest = enabled()
    outputs, _ = run_healthy(guest, 0.0, 500, answer_after=0.9)
    assert not of_type(outputs, hs.Failure)
    assert not of_type(outputs, hs.StateChange)
    assert guest.session.state == 'enabled'
    assert guest.session.misses == 0


def test_a_busy_host_ticking_late_counts_no_miss():
    # Regression: a host that wakes up late must not blame the guest (the
    # StarlingX CPU-steal guard, on the host side).
    guest = enabled()
    now = 0.0
    outputs = []
    for _ in range(50):
        now = guest.session.next_due() + 0.6  # more than half an interval
        outputs += guest.tick(now)            # the guest hung long ago
    assert not of_type(outputs, hs.Failure)
    assert guest.session.misses == 0
    # The first late tick found its challenge answered: nothing to judge.
    assert guest.session.status()['late_ticks'] == 49
    assert guest.session.state == 'enabled'


def test_a_tick_late_by_less_than_half_an_interval_still_counts():
    guest = enabled()
    guest.tick(1.0)                       # unanswered
    guest.tick(guest.session.next_due() + 0.4)
    assert guest.session.misses == 1


def test_a_late_challenge_still_leaves_the_guest_a_whole_interval():
    guest = enabled()
    late = guest.session.next_due() + 0.7
    guest.tick(late)
    assert guest.session.next_due() == pytest.approx(late + 1.0)
    guest.answer(late + 0.95)
    outputs = guest.tick(late + 1.0)
    assert guest.session.misses == 0
    assert not of_type(outputs, hs.Failure)


def test_a_frozen_guest_answering_its_backlog_counts_nothing():
    guest = enabled()
    guest.tick(1.0)                       # challenge 1: the guest froze
    guest.tick(2.0)                       # miss 1, challenge 2
    assert guest.session.misses == 1
    backlog = b''.join(
        guest.encode('challenge_response', nonce=nonce, health='healthy')
        for nonce in guest.nonces[:-1])  # every challenge but the latest
    outputs = guest.feed(backlog, 2.5)
    assert not of_type(outputs, hs.StateChange)
    assert {m.fields['reason'] for m in sent(outputs)} == {'stale'}
    assert guest.session.misses == 1      # nothing was reset...
    outputs = guest.tick(3.0)             # ... so the loss is still seen
    assert len(of_type(outputs, hs.Failure)) == 1


def test_answers_to_old_challenges_after_a_failure_do_not_end_it():
    guest = enabled()
    for now in (1.0, 2.0, 3.0):
        guest.tick(now)
    assert guest.session.state == 'failed'
    old = b''.join(
        guest.encode('challenge_response', nonce=nonce, health='healthy')
        for nonce in guest.nonces[:-1])
    outputs = guest.feed(old, 3.5)
    assert not of_type(outputs, hs.Recovered)
    assert guest.session.state == 'failed'
    assert guest.session.status()['stale_answers'] == len(guest.nonces) - 1


def test_the_same_challenge_answered_twice_counts_once():
    guest = enabled()
    outputs = guest.answer(0.5)
    assert sent(outputs)[0].fields['reason'] == 'stale'
    assert guest.session.status()['stale_answers'] == 1


def test_a_replayed_seq_counts_for_nothing_even_with_the_latest_nonce():
    guest = enabled()
    guest.tick(1.0)
    replay = protocol.encode('challenge_response', guest.seq,
                             nonce=guest.nonces[-1], health='healthy')
    outputs = guest.feed(replay, 1.1)
    (nack,) = sent(outputs)
    assert (nack.fields['reason'], nack.fields['nack_seq']) == ('stale',
                                                               guest.seq)
    guest.tick(2.0)
    assert guest.session.misses == 1
    assert guest.session.status()['replays'] == 1


def test_exit_stops_heartbeating_without_a_failure():
    guest = enabled()
    outputs = guest.send(0.5, 'exit', reason='shutting down')
    assert hs.Exited('shutting down') in outputs
    assert guest.session.state == 'exited'
    assert guest.session.next_due() is None
    for now in range(1, 100):
        assert guest.session.tick(float(now)) == []
    assert guest.session.state == 'exited'


def test_exit_then_init_registers_again():
    guest = enabled()
    guest.send(0.5, 'exit')
    guest.init(10.0)
    guest.answer(10.1)
    assert guest.session.state == 'enabled'


def test_a_paused_vm_is_not_challenged_and_counts_no_miss():
    guest = enabled()
    guest.tick(1.0)                       # unanswered: the VM is paused now
    outputs = guest.session.pause(1.2, 'paused')
    assert outputs == [hs.StateChange('enabled', 'paused', 'paused: paused')]
    assert guest.session.next_due() is None
    for now in range(2, 600):
        assert guest.session.tick(float(now)) == []
    outputs = guest.read(guest.session.resume(600.0))
    assert hs.StateChange('paused', 'enabling', 'resumed') in outputs
    assert [m.type for m in sent(outputs)] == ['challenge']
    assert guest.session.misses == 0
    guest.answer(600.1)
    assert guest.session.state == 'enabled'


def test_an_answer_to_a_challenge_from_before_the_pause_is_stale():
    guest = enabled()
    guest.tick(1.0)
    guest.session.pause(1.2, 'migrating')
    outputs = guest.answer(1.3)
    assert sent(outputs)[0].fields['reason'] == 'stale'
    assert guest.session.state == 'paused'


def test_init_while_paused_ends_the_pause_and_a_new_pause_voids_it():
    # A guest that registers runs; the monitor pauses again if the VM's
    # reason to be paused still holds, and the challenge is then void.
    guest = enabled()
    guest.session.pause(1.0, 'migrating')
    outputs = guest.init(2.0)
    assert [m.type for m in sent(outputs)] == ['init_ack', 'challenge']
    assert hs.StateChange('paused', 'enabling', 'registered') in outputs
    guest.session.pause(2.0, 'migrating')
    assert guest.session.next_due() is None
    for now in range(3, 30):
        assert guest.session.tick(float(now)) == []
    outputs = guest.read(guest.session.resume(30.0))
    assert [m.type for m in sent(outputs)] == ['challenge']


def test_an_action_pause_ends_when_the_guest_registers_again():
    guest = enabled()
    guest.session.pause(1.0, 'reboot', timeout=300)
    assert guest.session.next_due() == 301.0
    outputs = guest.init(40.0)
    assert hs.StateChange('paused', 'enabling', 'registered') in outputs
    guest.answer(40.1)
    assert guest.session.state == 'enabled'


def test_an_action_pause_that_runs_out_challenges_again():
    guest = enabled()
    guest.session.pause(1.0, 'reboot', timeout=300)
    assert guest.tick(300.0) == []
    outputs = guest.tick(301.0)
    assert [m.type for m in sent(outputs)] == ['challenge']
    assert guest.session.state == 'enabling'
    guest.tick(302.0)
    outputs = guest.tick(303.0)           # the guest never came back
    assert [f.cause for f in of_type(outputs, hs.Failure)] == [
        'heartbeat_lost']


def test_a_connection_closed_while_paused_ends_the_pause_with_it():
    guest = enabled()
    guest.session.pause(1.0, 'reboot', timeout=30)
    guest.session.close(2.0)
    assert guest.session.state == 'waiting'
    assert guest.session.next_due() is None
    assert guest.session.resume(3.0) == []
    assert guest.session.tick(40.0) == []


def test_an_action_pause_running_out_before_anyone_registered_waits():
    s = session()
    s.pause(0.0, 'reboot', timeout=30)
    assert s.next_due() == 30.0
    assert s.tick(30.0) == [hs.StateChange('paused', 'waiting',
                                           'hold ran out (reboot)')]
    assert s.next_due() is None


def test_resume_of_a_vm_paused_before_anyone_registered_waits():
    s = session()
    s.pause(0.0, 'paused')
    assert s.state == 'paused'
    assert s.resume(5.0) == [hs.StateChange('paused', 'waiting', 'resumed')]


def test_registering_again_restarts_registration():
    guest = enabled()
    outputs = guest.init(0.5)
    assert [m.type for m in sent(outputs)] == ['init_ack', 'challenge']
    assert hs.StateChange('enabled', 'enabling', 'registered') in outputs
    assert guest.session.next_due() == 1.5  # nothing was outstanding
    guest.answer(0.6)
    assert guest.session.state == 'enabled'


def test_a_client_restarting_without_answering_still_fails():
    # Each init voids the challenge outstanding; it must not buy time.
    guest = enabled()
    guest.tick(1.0)
    outputs = []
    for now in (1.4, 1.8, 2.0, 2.2, 2.6, 3.0):
        outputs += guest.init(now) if now not in (2.0, 3.0) else guest.tick(
            now)
    (failure,) = of_type(outputs, hs.Failure)
    assert failure.cause == 'heartbeat_lost'


def test_a_restarted_client_answering_in_time_is_no_failure():
    guest = enabled()
    guest.tick(1.0)
    guest.tick(2.0)                       # miss 1, challenge due at 3.0
    guest.init(2.5)
    guest.answer(2.9)
    outputs = guest.tick(3.0)
    assert not of_type(outputs, hs.Failure)
    assert guest.session.misses == 0


def test_an_episode_open_before_the_session_is_not_reported_twice():
    s = hs.Session(BOUNDS, 0.0, nonce=counting_nonces(), name='vm-1',
                   episode_open=True)
    guest = Guest(s)
    guest.init(0.0)
    assert not of_type(guest.tick(1.0) + guest.tick(2.0), hs.Failure)
    assert s.state == 'failed'
    outputs = guest.answer(2.1)
    assert hs.Recovered('answered healthy') in outputs
    assert not s.episode_open


# -- failures --------------------------------------------------------------

def test_one_miss_below_the_threshold_is_no_failure():
    guest = enabled()
    guest.tick(1.0)
    outputs = guest.tick(2.0)
    assert not of_type(outputs, hs.Failure)
    assert guest.session.misses == 1
    guest.answer(2.1)
    assert guest.session.misses == 0


def test_threshold_misses_in_a_row_are_one_failure_with_evidence():
    guest = enabled(corrective_action='reboot')
    guest.tick(1.0)
    guest.tick(2.0)
    outputs = guest.tick(3.0)
    assert outputs[:2] == [
        hs.StateChange('enabled', 'failed',
                       '2 challenges in a row unanswered'),
        hs.Failure('heartbeat_lost', '2 challenges in a row unanswered',
                   {'misses': 2, 'last_answer_age': pytest.approx(2.99),
                    'guest_reason': ''}, 'reboot')]
    assert [m.type for m in sent(outputs)] == ['challenge']  # goes on
    for now in range(4, 50):
        assert not of_type(guest.tick(float(now)), hs.Failure)
    assert guest.session.state == 'failed'


def test_a_guest_that_registers_and_never_answers_fails():
    guest = Guest(session())
    guest.init(0.0)
    guest.tick(1.0)
    outputs = guest.tick(2.0)
    (failure,) = of_type(outputs, hs.Failure)
    assert failure.evidence['last_answer_age'] is None
    assert guest.session.state == 'failed'


def test_a_healthy_answer_ends_the_failure_once():
    guest = enabled()
    for now in (1.0, 2.0, 3.0):
        guest.tick(now)
    outputs = guest.answer(3.2)
    assert outputs == [
        hs.StateChange('failed', 'enabled', 'answered healthy'),
        hs.Recovered('answered healthy')]
    outputs, _ = run_healthy(guest, 3.2, 5)
    assert not of_type(outputs, hs.Recovered)


def test_a_new_failure_after_recovery_is_reported_again():
    guest = enabled()
    for now in (1.0, 2.0, 3.0):
        guest.tick(now)
    guest.answer(3.2)
    outputs = guest.tick(4.0) + guest.tick(5.0) + guest.tick(6.0)
    assert len(of_type(outputs, hs.Failure)) == 1


def test_unhealthy_is_a_failure_at_once_with_the_guests_reason():
    guest = enabled(corrective_action='stop')   # capped to reboot
    guest.tick(1.0)
    outputs = guest.answer(1.1, health='unhealthy', reason='db down')
    assert outputs == [
        hs.StateChange('enabled', 'failed',
                       'the guest says it is unhealthy: db down'),
        hs.Failure('guest_unhealthy',
                   'the guest says it is unhealthy: db down',
                   {'misses': 0, 'last_answer_age': 0.0,
                    'guest_reason': 'db down'}, 'reboot')]


def test_the_action_asked_in_an_unhealthy_answer_is_capped():
    guest = enabled(bounds=BOUNDS._replace(max_action='log'))
    guest.tick(1.0)
    outputs = guest.answer(1.1, health='unhealthy', corrective_action='stop')
    assert of_type(outputs, hs.Failure)[0].action == 'log'
    guest = enabled(corrective_action='stop',
                    bounds=BOUNDS._replace(max_action='stop'))
    guest.tick(1.0)
    outputs = guest.answer(1.1, health='unhealthy', corrective_action='log')
    assert of_type(outputs, hs.Failure)[0].action == 'log'


def test_still_unhealthy_or_then_silent_is_the_same_episode():
    guest = enabled()
    guest.tick(1.0)
    guest.answer(1.1, health='unhealthy')
    outputs = []
    guest.tick(2.0)
    outputs += guest.answer(2.1, health='unhealthy')
    for now in (3.0, 4.0, 5.0):
        outputs += guest.tick(now)
    assert not of_type(outputs, hs.Failure)
    guest.answer(5.5)
    assert guest.session.state == 'enabled'


def test_a_rebooted_guest_registering_again_ends_the_failure_when_healthy():
    guest = enabled()
    for now in (1.0, 2.0, 3.0):
        guest.tick(now)
    guest.session.pause(3.1, 'corrective reboot', timeout=300)
    fresh = Guest(guest.session)          # the guest restarted: seq anew
    outputs = fresh.init(40.0)
    assert hs.StateChange('paused', 'enabling', 'registered') in outputs
    assert not of_type(outputs, hs.Recovered)
    outputs = fresh.answer(40.2)
    assert hs.Recovered('answered healthy') in outputs


# -- votes and notices -----------------------------------------------------

def ask(guest, now, action_id=ACTION_ID, event='stop',
        notification='revocable', phase='pre', timeout=8):
    return guest.read(guest.session.ask(action_id, event, notification,
                                        phase, timeout, now))


def respond(guest, result, action_id=ACTION_ID, event='stop',
            notification='revocable', phase='pre', reason=''):
    return guest.encode('action_response', action_id=action_id, event=event,
                        notification=notification, phase=phase,
                        result=result, reason=reason)


def test_a_vote_is_sent_and_its_reject_returns_the_reason():
    guest = enabled()
    (notify,) = sent(ask(guest, 0.5))
    assert notify.type == 'action_notify'
    assert notify.fields == {'action_id': ACTION_ID, 'event': 'stop',
                             'notification': 'revocable', 'phase': 'pre',
                             'timeout_secs': 8}
    outputs = guest.feed(respond(guest, 'reject', reason='db resync'), 0.7)
    assert outputs == [hs.Answer(ACTION_ID, 'reject', 'db resync', 'stop',
                                 'revocable', 'pre')]
    assert guest.session.status()['pending_answers'] == 0


def test_two_action_responses_in_one_read_are_both_handled():
    # Regression: StarlingX lost a reject vote that came two in one read.
    guest = enabled()
    other = 'd1' * 16
    ask(guest, 0.5)
    ask(guest, 0.5, action_id=other, event='reboot')
    data = (respond(guest, 'accept') +
            respond(guest, 'reject', action_id=other, event='reboot',
                    reason='busy'))
    outputs = guest.feed(data, 0.6)
    assert of_type(outputs, hs.Answer) == [
        hs.Answer(ACTION_ID, 'accept', '', 'stop', 'revocable', 'pre'),
        hs.Answer(other, 'reject', 'busy', 'reboot', 'revocable', 'pre')]
    assert hs.aggregate(outputs).result == 'reject'


def test_a_vote_not_answered_in_time_accepts():
    guest = enabled()
    ask(guest, 0.5, timeout=2)
    assert guest.session.next_due() == 1.0  # the next challenge comes first
    guest.tick(1.0)
    guest.answer(1.1)
    assert guest.session.next_due() == 2.0
    outputs = guest.tick(2.5)
    assert hs.Answer(ACTION_ID, 'timeout', 'no answer in time', 'stop',
                     'revocable', 'pre') in outputs
    assert hs.aggregate(of_type(outputs, hs.Answer)) == hs.Verdict(
        'accept', '')


def test_an_answer_after_the_timeout_is_dropped():
    guest = enabled()
    ask(guest, 0.5, timeout=0.2)
    guest.tick(0.8)
    outputs = guest.feed(respond(guest, 'reject'), 0.9)
    assert not of_type(outputs, hs.Answer)
    assert guest.session.status()['unmatched_answers'] == 1


def test_an_answer_to_another_phase_or_event_is_dropped():
    guest = enabled()
    ask(guest, 0.5)
    outputs = guest.feed(respond(guest, 'reject', phase='post') +
                         respond(guest, 'reject', event='reboot') +
                         respond(guest, 'reject', notification='irrevocable'),
                         0.6)
    assert not of_type(outputs, hs.Answer)
    assert guest.session.status()['pending_answers'] == 1


def test_a_reject_of_an_irrevocable_notice_has_no_effect():
    guest = enabled()
    ask(guest, 0.5, notification='irrevocable')
    outputs = guest.feed(respond(guest, 'reject', notification='irrevocable',
                                 reason='no'), 0.6)
    assert [a.result for a in of_type(outputs, hs.Answer)] == ['accept']


def test_asking_a_guest_that_cannot_answer_accepts_at_once():
    s = session()
    (answer,) = s.ask(ACTION_ID, 'stop', 'revocable', 'pre', 8, 0.0)
    assert (answer.result, answer.reason) == ('timeout',
                                              'guest cannot answer (waiting)')
    guest = enabled()
    guest.session.pause(1.0, 'paused')
    assert [a.result for a in ask(guest, 1.5)] == ['timeout']


def test_a_pause_answers_waiting_votes_timeout():
    guest = enabled()
    ask(guest, 0.5)
    outputs = guest.session.pause(0.6, 'paused')
    assert [a.result for a in of_type(outputs, hs.Answer)] == ['timeout']
    assert guest.session.next_due() is None


def test_exit_and_close_answer_waiting_votes_timeout():
    guest = enabled()
    ask(guest, 0.5)
    outputs = guest.send(0.6, 'exit')
    assert [a.result for a in of_type(outputs, hs.Answer)] == ['timeout']
    guest = enabled()
    ask(guest, 0.5)
    outputs = guest.session.close(0.6)
    assert [a.result for a in of_type(outputs, hs.Answer)] == ['timeout']
    assert guest.session.state == 'waiting'
    assert guest.session.next_due() is None


@pytest.mark.parametrize('results, verdict', [
    ([], 'accept'), (['accept'], 'accept'), (['timeout'], 'accept'),
    (['accept', 'timeout'], 'accept'), (['reject'], 'reject'),
    (['accept', 'reject', 'timeout'], 'reject'),
    (['timeout', 'timeout', 'reject'], 'reject')])
def test_aggregate_one_reject_wins_timeout_accepts(results, verdict):
    answers = [hs.Answer(ACTION_ID, result, 'why %d' % i, 'stop',
                         'revocable', 'pre')
               for i, result in enumerate(results)]
    result = hs.aggregate(answers)
    assert result.result == verdict
    if verdict == 'reject':
        assert result.reason == 'why %d' % results.index('reject')


# -- the untrusted guest ---------------------------------------------------

def test_bad_lines_are_nacked_and_the_next_good_one_is_handled():
    guest = enabled()
    guest.tick(1.0)
    data = (b'\xff\n' + b'{"no json\n' + b'x' * 10000 + b'\n' +
            guest.encode('challenge_response', nonce=guest.nonces[-1],
                         health='healthy'))
    outputs = guest.feed(data, 1.1)
    assert [m.fields['reason'] for m in sent(outputs)] == [
        'not_utf8', 'not_json', 'too_long']
    assert guest.session.last_answer_at == 1.1
    assert guest.session.status()['bad_messages'] == 3


def test_a_host_message_from_the_guest_is_invalid():
    guest = enabled()
    outputs = guest.send(0.5, 'challenge', nonce='ab' * 16)
    (nack,) = sent(outputs)
    assert nack.fields['reason'] == 'invalid'


def test_a_nack_from_the_guest_is_never_answered():
    guest = enabled()
    outputs = guest.send(0.5, 'nack', nack_seq=3, reason='invalid')
    assert outputs == []
    assert guest.session.status()['nacks_received'] == 1


def test_empty_lines_are_ignored():
    guest = enabled()
    assert guest.feed(b'\n\r\n  \n', 0.5) == []


def test_too_many_bad_messages_in_a_row_cut_the_guest_off():
    guest = enabled()
    outputs = guest.feed(b'garbage\n' * 10, 0.5)
    assert guest.session.state == 'enabled'
    outputs = guest.feed(b'garbage\n' * 5, 0.6)
    assert outputs[-2:] == [
        hs.StateChange('enabled', 'cut_off',
                       'more than 10 bad messages in a row'),
        hs.CutOff('more than 10 bad messages in a row')]
    assert len(sent(outputs)) == 1        # nothing after the cut-off
    assert guest.session.feed(b'garbage\n', 0.7) == []
    assert guest.session.tick(100.0) == []
    assert guest.session.next_due() is None


def test_a_good_message_resets_the_bad_count():
    guest = enabled()
    for i in range(5):
        guest.feed(b'garbage\n' * 10, 2.0 * i + 0.5)
        guest.tick(2.0 * i + 1.0)
        guest.answer(2.0 * i + 1.1)
    assert guest.session.state == 'enabled'


def test_a_flood_cuts_the_guest_off_and_no_failure_is_reported():
    guest = enabled()
    outputs = guest.feed(b'\n' * 101, 0.5)  # 101 messages within 5 s
    assert of_type(outputs, hs.CutOff)
    assert not of_type(outputs, hs.Failure)
    assert guest.session.state == 'cut_off'


def test_a_steady_guest_at_the_rate_limit_is_not_cut_off():
    guest = enabled()
    now = 1.0
    for _ in range(19 * 30):              # 19 a second for 30 s
        now += 1 / 19.0
        guest.feed(b'\n', now)
    assert guest.session.state == 'enabled'


def test_a_cut_off_ends_votes_as_timeout():
    guest = enabled()
    ask(guest, 0.5)
    outputs = guest.feed(b'garbage\n' * 11, 0.6)
    assert [a.result for a in of_type(outputs, hs.Answer)] == ['timeout']


# -- properties ------------------------------------------------------------

_message = st.fixed_dictionaries({
    'version': st.sampled_from([1, 1, 1, 2, '1']),
    'type': st.sampled_from(sorted(protocol.SCHEMAS) + ['other']),
    'seq': st.integers(min_value=-1, max_value=40),
}, optional={
    'nonce': st.sampled_from(['%032x' % i for i in range(4)] + ['x']),
    'health': st.sampled_from(['healthy', 'unhealthy', 'meh']),
    'reason': st.text(max_size=300),
    'action_id': st.sampled_from([ACTION_ID, 'c0']),
    'event': st.sampled_from(['stop', 'reboot']),
    'notification': st.sampled_from(['revocable', 'irrevocable']),
    'phase': st.sampled_from(['pre', 'post']),
    'result': st.sampled_from(['accept', 'reject']),
    'heartbeat_interval_ms': st.integers(min_value=0, max_value=20000),
    'corrective_action': st.sampled_from(['log', 'reboot', 'stop', 'x']),
})
_line = st.one_of(
    _message.map(lambda m: json.dumps(m).encode() + b'\n'),
    st.binary(max_size=200),
    st.just(b'x' * 5000 + b'\n'))


def _chunk(stream, cuts):
    cuts = sorted(c % (len(stream) + 1) for c in cuts)
    bounds = zip([0] + cuts, cuts + [len(stream)], strict=True)
    return [stream[a:b] for a, b in bounds]


def _drive(chunks, script):
    """Feed ``chunks`` interleaved with ``script`` steps on one session."""
    s = session()
    outputs = []
    now = 0.0
    chunks = list(chunks)
    for op in script:
        now += 0.3
        if op == 'tick':
            outputs += s.tick(now)
        elif op == 'ask':
            outputs += s.ask(ACTION_ID, 'stop', 'revocable', 'pre', 1, now)
        elif op == 'pause':
            outputs += s.pause(now, 'test')
        elif op == 'pause_action':
            outputs += s.pause(now, 'test', timeout=1.0)
        elif op == 'resume':
            outputs += s.resume(now)
        elif op == 'close':
            outputs += s.close(now)
        elif op == 'init':                # seq 0: the random ones follow
            outputs += s.feed(protocol.encode('init', 0), now)
        elif chunks:
            outputs += s.feed(chunks.pop(0), now)
        assert s._framer.pending() < protocol.MAX_LINE
        assert len(s._arrivals) <= BOUNDS.max_messages_per_second * 5 + 1
        assert len(s._pending) <= 1
    for chunk in chunks:
        outputs += s.feed(chunk, now)
    return s, outputs


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=40),
       st.lists(st.integers(min_value=0), max_size=30),
       st.lists(st.sampled_from(['feed', 'feed', 'tick', 'tick', 'ask',
                                 'pause', 'pause_action', 'resume',
                                 'close', 'init']), max_size=60))
def test_any_input_in_any_chunking_never_raises_and_stays_bounded(
        lines, cuts, script):
    stream = b''.join(lines)
    s, outputs = _drive(_chunk(stream, cuts), script)
    for output in outputs:
        assert type(output) in (hs.Send, hs.StateChange, hs.Failure,
                                hs.Recovered, hs.Answer, hs.CutOff,
                                hs.Exited)
        if type(output) is hs.Send:
            assert len(output.data) <= protocol.MAX_LINE
            protocol.parse(output.data[:-1])
    assert len(of_type(outputs, hs.Failure)) <= (
        len(of_type(outputs, hs.Recovered)) + 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, max_size=40),
       st.lists(st.integers(min_value=0), max_size=30),
       st.lists(st.integers(min_value=0), max_size=30))
def test_the_same_stream_chunked_differently_gives_the_same_outputs(
        lines, cuts_a, cuts_b):
    stream = b''.join(lines)
    a = session()
    b = session()
    outputs_a = [o for chunk in _chunk(stream, cuts_a)
                 for o in a.feed(chunk, 1.0)]
    outputs_b = [o for chunk in _chunk(stream, cuts_b)
                 for o in b.feed(chunk, 1.0)]
    assert outputs_a == outputs_b
    assert a.status() == b.status()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.floats(min_value=0.0, max_value=0.95),   # answer delay, in intervals
    st.floats(min_value=0.0, max_value=3.0),    # how late the host ticks
    st.integers(min_value=1, max_value=4),      # read chunks of the answer
    st.sampled_from(['', 'stale', 'garbage', 'pause', 'reinit'])),
    max_size=60),
    st.sampled_from([500, 1000, 2500]))
def test_no_failure_while_every_challenge_is_answered_in_time(steps,
                                                              interval_ms):
    guest = Guest(session())
    guest.init(0.0, heartbeat_interval_ms=interval_ms)
    interval = interval_ms / 1000.0
    sent_at = 0.0
    outputs = []
    for delay, lateness, pieces, extra in steps:
        answer_at = sent_at + delay * interval
        data = b''
        if extra == 'stale' and len(guest.nonces) > 1:
            data = guest.encode('challenge_response', nonce=guest.nonces[0],
                                health='healthy')
        elif extra == 'garbage':
            data = b'{"junk"\n'
        elif extra == 'reinit':           # the client restarted: seq anew
            guest.seq = 0
            outputs += guest.init(answer_at, heartbeat_interval_ms=interval_ms)
        data += guest.encode('challenge_response', nonce=guest.nonces[-1],
                             health='healthy')
        size = -(-len(data) // pieces)
        for start in range(0, len(data), size):
            outputs += guest.feed(data[start:start + size], answer_at)
        if extra == 'pause':
            outputs += guest.session.pause(answer_at, 'test')
            outputs += guest.read(guest.session.resume(answer_at + 5.0))
            sent_at = answer_at + 5.0
            continue
        now = max(guest.session.next_due() + lateness * interval, answer_at)
        before = len(guest.nonces)
        outputs += guest.tick(now)
        assert len(guest.nonces) == before + 1
        sent_at = now
    assert not of_type(outputs, hs.Failure)
    assert not of_type(outputs, hs.CutOff)
    assert guest.session.state in ('enabling', 'enabled')


# -- the answer window ([heartbeat] answer_window) --------------------------

HALF = BOUNDS._replace(answer_window=0.5)


def drive(guest, until, answer_after=None):
    """Run the clock to ``until``: tick whenever something is due and
    answer each new challenge ``answer_after`` seconds after it was sent
    (None: never), in time order.  The outputs, each with its time."""
    timed = []
    answer = None  # (when, nonce)
    seen = len(guest.nonces)
    while True:
        due = guest.session.next_due()
        if answer is not None and (due is None or answer[0] < due):
            now, nonce = answer
            answer = None
            if now > until:
                break
            timed += [(now, o) for o in guest.answer(now, nonce=nonce)]
            continue
        if due is None or due > until:
            break
        timed += [(due, o) for o in guest.tick(due)]
        if answer_after is not None and len(guest.nonces) > seen:
            seen = len(guest.nonces)
            answer = (due + answer_after, guest.nonces[-1])
    return timed


def test_half_an_interval_is_enough_for_a_healthy_guest():
    guest = enabled(bounds=HALF)
    timed = drive(guest, 500.0, answer_after=0.45)
    assert not [o for _, o in timed if type(o) is hs.Failure]
    assert guest.session.misses == 0
    assert guest.session.state == 'enabled'


@pytest.mark.parametrize('phase', [0.0, 0.2, 0.5, 0.8, 0.99])
def test_a_guest_that_stops_is_lost_within_two_and_a_half_intervals(phase):
    guest = enabled(bounds=HALF)
    drive(guest, 10.0 + phase, answer_after=0.005)  # healthy until 10+phase
    timed = drive(guest, 20.0)                       # then silent
    failures = [t for t, o in timed if type(o) is hs.Failure]
    assert len(failures) == 1
    took = failures[0] - (10.0 + phase)
    assert 1.5 - 1e-9 <= took <= 2.5 + 1e-9, took


def test_an_answer_after_the_window_is_a_miss_not_a_failure():
    guest = enabled(bounds=HALF)
    timed = drive(guest, 30.0, answer_after=0.7)  # every answer too slow
    failures = [o for _, o in timed if type(o) is hs.Failure]
    # Each late answer still ends the streak: one miss at a time.
    assert not failures
    assert guest.session.status()['misses_total'] >= 25


def test_a_host_late_past_the_window_counts_no_miss():
    guest = enabled(bounds=HALF)
    outputs = []
    for _ in range(50):
        now = guest.session.next_due() + 0.6
        outputs += guest.tick(now)
    assert not of_type(outputs, hs.Failure)
    assert guest.session.misses == 0
