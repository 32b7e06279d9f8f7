"""vmha-guest's protocol state, driven without processes or sockets.

A fake channel stands in for the virtio-serial port and a fake clock
for time: the daemon's answers, its re-registration timer and its
health verdicts are checked message by message.
"""

import json
import os
import pathlib
import sys

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

GUEST = pathlib.Path(__file__).resolve().parents[2] / 'guest'
sys.path.insert(0, str(GUEST))

import vmha_guest  # noqa: E402


class FakeChannel:
    """The channel with a host that is always there and always reads."""

    def __init__(self):
        self.connected = True
        self.written = b''
        self.accepting = True

    def try_open(self, now):
        return True

    def read(self):
        return None

    def write(self, data):
        if not self.accepting:
            return 0
        self.written += data
        return len(data)

    def fileno(self):
        return -1

    def close(self):
        self.connected = False

    def messages(self):
        out = [json.loads(line) for line in self.written.splitlines()]
        self.written = b''
        return out


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def daemon():
    config = vmha_guest.parse_config('HB_INTERVAL=1000\n')
    daemon = vmha_guest.Daemon(config, clock=Clock())
    daemon.channel = FakeChannel()
    yield daemon
    daemon.channel.close()
    os.close(daemon.wake_r)
    os.close(daemon.wake_w)


def host_says(daemon, *messages, now=None):
    data = b''.join(vmha_guest.encode(dict(m, version=1)) for m in messages)
    daemon.on_channel_data(data, daemon.clock() if now is None else now)


def register(daemon, action='reboot', interval_ms=1000):
    daemon.tick(daemon.clock())
    init = daemon.channel.messages()[-1]
    assert init['type'] == 'init'
    host_says(daemon, {'type': 'init_ack', 'seq': 1, 'init_seq': init['seq'],
                       'heartbeat_interval_ms': interval_ms,
                       'corrective_action': action})
    assert daemon.registered


def test_init_is_repeated_every_second_until_acknowledged(daemon):
    clock = daemon.clock
    daemon.tick(clock())
    clock.now += 0.5
    daemon.tick(clock())
    clock.now += 0.6
    daemon.tick(clock())
    sent = daemon.channel.messages()
    assert [m['type'] for m in sent] == ['init', 'init']
    assert sent[1]['seq'] > sent[0]['seq']


def test_two_challenges_in_one_read_are_both_answered(daemon):
    register(daemon)
    host_says(daemon, {'type': 'challenge', 'seq': 2, 'nonce': 'a' * 32},
              {'type': 'challenge', 'seq': 3, 'nonce': 'b' * 32})
    answers = daemon.channel.messages()
    assert [(m['type'], m['nonce'], m['health']) for m in answers] == [
        ('challenge_response', 'a' * 32, 'healthy'),
        ('challenge_response', 'b' * 32, 'healthy')]


def test_three_silent_intervals_bring_a_new_init_but_two_do_not(daemon):
    clock = daemon.clock
    register(daemon)
    for _ in range(2):
        clock.now += 0.9
        host_says(daemon, {'type': 'challenge', 'seq': 5, 'nonce': 'c'})
        daemon.tick(clock())
    clock.now += 2.9
    daemon.tick(clock())
    assert 'init' not in [m['type'] for m in daemon.channel.messages()]
    clock.now += 0.2
    daemon.tick(clock())
    assert daemon.channel.messages()[-1]['type'] == 'init'
    assert not daemon.registered


def test_granted_interval_governs_the_silence_timer(daemon):
    clock = daemon.clock
    register(daemon, interval_ms=5000)
    daemon.channel.messages()
    clock.now += 14
    daemon.tick(clock())
    assert daemon.channel.messages() == []
    clock.now += 1.5
    daemon.tick(clock())
    assert daemon.channel.messages()[-1]['type'] == 'init'


def test_not_registered_nack_brings_init_and_other_nacks_are_not_answered(
        daemon):
    register(daemon)
    daemon.channel.messages()
    host_says(daemon, {'type': 'nack', 'seq': 3, 'nack_seq': 4,
                       'reason': 'stale'})
    assert daemon.channel.messages() == []
    host_says(daemon, {'type': 'nack', 'seq': 4, 'nack_seq': None,
                       'reason': 'not_registered'})
    assert [m['type'] for m in daemon.channel.messages()] == ['init']


@pytest.mark.parametrize('message, reason', [
    ({'type': 'challenge', 'seq': 2}, 'invalid'),
    ({'type': 'challenge', 'seq': 2, 'nonce': 'x' * 65}, 'invalid'),
    ({'type': 'init_ack', 'seq': 2, 'heartbeat_interval_ms': 'fast',
      'corrective_action': 'reboot'}, 'invalid'),
    ({'type': 'action_notify', 'seq': 2, 'action_id': 'a', 'event': 'nuke',
      'notification': 'revocable', 'phase': 'pre', 'timeout_secs': 5},
     'invalid'),
    ({'type': 'action_notify', 'seq': 2, 'action_id': 'a', 'event': 'stop',
      'notification': 'revocable', 'phase': 'pre', 'timeout_secs': -1},
     'invalid'),
    ({'type': 'shutdown_now', 'seq': 2}, 'unknown_type'),
])
def test_bad_host_messages_get_a_nack_and_change_nothing(
        daemon, message, reason):
    register(daemon)
    daemon.channel.messages()
    host_says(daemon, message)
    nack, = daemon.channel.messages()
    assert (nack['type'], nack['reason'], nack['nack_seq']) == (
        'nack', reason, 2)
    assert daemon.registered
    assert daemon.granted['heartbeat_interval_ms'] == 1000


def test_an_application_is_unhealthy_only_after_two_missed_intervals(
        daemon):
    clock = daemon.clock
    register(daemon, action='stop')
    app = vmha_guest.Application('web', 500, 'stop', clock())
    daemon.api.apps['web'] = app
    clock.now += 0.99
    assert daemon.health(clock())[0]
    clock.now += 0.02
    healthy, reason, action = daemon.health(clock())
    assert not healthy
    assert 'application web missed its heartbeat' in reason
    assert action == 'stop'


def test_the_strongest_wish_wins_capped_by_the_grant(daemon):
    clock = daemon.clock
    register(daemon, action='reboot')
    daemon.api.apps['a'] = vmha_guest.Application('a', 100, 'log', clock())
    daemon.api.apps['b'] = vmha_guest.Application('b', 100, 'stop', clock())
    clock.now += 1
    healthy, reason, action = daemon.health(clock())
    assert not healthy and action == 'reboot'
    assert 'application a' in reason and 'application b' in reason
    host_says(daemon, {'type': 'challenge', 'seq': 9, 'nonce': 'n'})
    answer = daemon.channel.messages()[-1]
    assert (answer['health'], answer['corrective_action']) == (
        'unhealthy', 'reboot')
    assert len(answer['reason']) <= vmha_guest.MAX_REASON


def test_a_descheduled_daemon_does_not_blame_its_applications(daemon):
    """The guest froze for 10 s (CPU steal, a paused VM): nobody ran, so
    neither the host nor an application was silent by its own fault."""
    clock = daemon.clock
    register(daemon)
    daemon.channel.messages()
    daemon.api.apps['web'] = vmha_guest.Application('web', 500, 'reboot',
                                                clock())
    daemon.start = lambda: None
    daemon.shutdown = lambda *args: None
    passes = []

    def poll_once(timeout):
        passes.append(timeout)
        if len(passes) == 1:
            clock.now += 10          # frozen inside this poll
        else:
            daemon.stopping.set()
    daemon.poll_once = poll_once
    daemon.run()
    assert len(passes) == 2
    assert daemon.health(clock())[0]
    assert daemon.registered
    assert daemon.channel.messages() == []


def test_votes_reject_wins_silence_accepts_notices_cannot_reject():
    def run(notification, votes):
        action = vmha_guest.ActionRun(
            {'action_id': 'a', 'event': 'stop', 'notification': notification,
             'phase': 'pre'}, deadline=0)
        action.votes.update(votes)
        return action.response()
    assert run('revocable', {}) == ('accept', '')
    assert run('revocable', {'x': (True, ''), 'y': (False, 'busy')}) == (
        'reject', 'busy')
    assert run('irrevocable', {'y': (False, 'busy')}) == ('accept', '')


def test_a_vote_with_no_voter_is_answered_at_once(daemon):
    register(daemon)
    daemon.channel.messages()
    host_says(daemon, {'type': 'action_notify', 'seq': 5, 'action_id': 'f0',
                       'event': 'pause', 'notification': 'revocable',
                       'phase': 'pre', 'timeout_secs': 8})
    answer, = daemon.channel.messages()
    assert answer['type'] == 'action_response'
    assert (answer['action_id'], answer['result']) == ('f0', 'accept')


def test_a_host_that_does_not_read_never_grows_the_outbox(daemon):
    register(daemon)
    daemon.channel.accepting = False
    for n in range(5000):
        host_says(daemon, {'type': 'challenge', 'seq': n + 2,
                           'nonce': '%032x' % n})
        assert len(daemon.outbox) <= vmha_guest.MAX_OUTBOX
    daemon.channel.accepting = True
    daemon.flush()
    assert daemon.outbox == b''
    assert not daemon.dropping


def test_after_a_pre_notice_silence_brings_no_init_until_restart_runs_out(
        daemon):
    """The host stops challenging while a notified action (a reboot)
    runs; an init then would look like the guest coming back and end
    the host's wait before the reboot even happened."""
    clock = daemon.clock
    register(daemon)
    host_says(daemon, {'type': 'init_ack', 'seq': 2, 'init_seq': 1,
                       'heartbeat_interval_ms': 1000,
                       'corrective_action': 'reboot', 'restart_secs': 60})
    host_says(daemon, {'type': 'action_notify', 'seq': 3, 'action_id': 'r1',
                       'event': 'reboot', 'notification': 'irrevocable',
                       'phase': 'pre', 'timeout_secs': 8})
    assert daemon.channel.messages()[-1]['result'] == 'accept'
    for _ in range(59):
        clock.now += 1
        daemon.tick(clock())
    assert daemon.channel.messages() == []
    clock.now += 1.5
    daemon.tick(clock())
    assert daemon.channel.messages()[-1]['type'] == 'init'


def test_a_challenge_ends_the_quiet_after_a_pre_notice(daemon):
    clock = daemon.clock
    register(daemon)
    host_says(daemon, {'type': 'action_notify', 'seq': 3, 'action_id': 'p1',
                       'event': 'pause', 'notification': 'irrevocable',
                       'phase': 'pre', 'timeout_secs': 8})
    clock.now += 5
    host_says(daemon, {'type': 'challenge', 'seq': 4, 'nonce': 'n'})
    daemon.channel.messages()
    clock.now += 3.1
    daemon.tick(clock())
    assert daemon.channel.messages()[-1]['type'] == 'init'


def test_a_vote_alone_does_not_silence_the_guest(daemon):
    clock = daemon.clock
    register(daemon)
    host_says(daemon, {'type': 'action_notify', 'seq': 3, 'action_id': 'v1',
                       'event': 'stop', 'notification': 'revocable',
                       'phase': 'pre', 'timeout_secs': 8})
    daemon.channel.messages()
    clock.now += 3.1
    daemon.tick(clock())
    assert daemon.channel.messages()[-1]['type'] == 'init'


def test_empty_lines_from_the_host_carry_nothing(daemon):
    register(daemon)
    daemon.channel.messages()
    daemon.on_channel_data(b'\n  \n\t\n', daemon.clock())
    assert daemon.channel.messages() == []


def test_stale_nacks_are_expected_and_change_nothing(daemon, caplog):
    """A guest that was frozen answers the challenges it missed; the
    host refuses them as stale.  That is no reason to register again,
    nor to fill the log."""
    register(daemon)
    daemon.channel.messages()
    with caplog.at_level('INFO', logger='vmha-guest'):
        for seq in range(2, 30):
            host_says(daemon, {'type': 'nack', 'seq': seq, 'nack_seq': seq,
                               'reason': 'stale'})
    assert daemon.channel.messages() == []
    assert daemon.registered
    assert caplog.records == []


def test_a_host_sending_garbage_in_a_loop_gets_nacks_but_few_log_lines(
        daemon, caplog):
    register(daemon)
    daemon.channel.messages()
    with caplog.at_level('WARNING', logger='vmha-guest'):
        for _ in range(500):
            daemon.on_channel_data(b'garbage\n', daemon.clock())
        daemon.clock.now += vmha_guest.LOG_INTERVAL
        daemon.on_channel_data(b'garbage\n', daemon.clock())
    assert len(daemon.channel.messages()) == 501
    assert len(caplog.records) == 2
    assert '499 more like it' in caplog.records[1].getMessage()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=80),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)
host_messages = st.fixed_dictionaries(
    {'version': st.sampled_from([1, 1, 1, 2, '1', None]),
     'type': st.sampled_from(['init_ack', 'challenge', 'action_notify',
                              'nack', 'init', 'bogus', 7]),
     'seq': st.one_of(st.integers(min_value=-2, max_value=2 ** 60),
                      st.just(True))},
    optional={'nonce': st.one_of(st.just('ab' * 16), json_values),
              'heartbeat_interval_ms': st.one_of(
                  st.integers(min_value=-5, max_value=10 ** 7), json_values),
              'corrective_action': st.sampled_from(
                  ['log', 'reboot', 'stop', 'none', 3]),
              'restart_secs': json_values,
              'action_id': st.one_of(st.just('cd' * 16), json_values),
              'event': st.sampled_from(['stop', 'pause', 'x', None]),
              'notification': st.sampled_from(
                  ['revocable', 'irrevocable', '']),
              'phase': st.sampled_from(['pre', 'post', 'during']),
              'timeout_secs': st.one_of(
                  st.floats(min_value=0.01, max_value=20), json_values),
              'reason': json_values})
chunks = st.lists(st.one_of(
    host_messages.map(lambda m: json.dumps(m).encode() + b'\n'),
    st.binary(max_size=200)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(chunks=chunks)
def test_whatever_the_host_sends_the_guest_answers_in_valid_lines(chunks):
    config = vmha_guest.parse_config('')
    daemon = vmha_guest.Daemon(config, clock=Clock())
    daemon.channel = FakeChannel()
    try:
        for chunk in chunks:
            daemon.on_channel_data(chunk, daemon.clock())
            daemon.tick(daemon.clock())
        seqs = []
        for line in daemon.channel.written.splitlines():
            assert len(line) + 1 <= vmha_guest.MAX_LINE
            message = json.loads(line)
            assert message['version'] == 1
            assert message['type'] in ('init', 'challenge_response',
                                       'action_response', 'nack', 'exit')
            seqs.append(message['seq'])
            if message['type'] == 'challenge_response':
                assert message['health'] in ('healthy', 'unhealthy')
        assert seqs == sorted(set(seqs))
        assert len(daemon.actions) <= vmha_guest.MAX_ACTIONS
    finally:
        os.close(daemon.wake_r)
        os.close(daemon.wake_w)
