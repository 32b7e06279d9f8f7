"""The bridge follows each forwarded failure to its outcome
(``vmha.bridge.follow``): the state machine on a fake clock, Masakari's
answers scripted, the state file real."""

import logging

import pytest

from vmha.bridge import follow
from vmha.bridge import recovery_store
from vmha.masakari import client as masakari_client
import vmha.objects

vmha.objects.register_all()

UUID = '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c'
DETECTED = '2026-03-01T10:20:30+00:00'
T0 = 1772360430.0  # DETECTED as a POSIX time
POLICY = follow.Policy(poll_interval=2.0, poll_max_interval=16.0,
                       give_up=3600.0, error_timeout=300.0)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class ScriptedMasakari:
    """``get_notification`` answers from a script: a status string, an
    exception to raise, or a dict; the last entry repeats."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.gets = []
        self.steps = None

    def get_notification(self, notification_uuid, microversion=None):
        self.gets.append((notification_uuid, microversion))
        if microversion is not None:
            if self.steps is None:
                raise masakari_client.MasakariUnavailable('HTTP 500: no '
                                                          'engine', 500)
            return {'status': 'x', 'recovery_workflow_details': self.steps}
        answer = (self.answers.pop(0) if len(self.answers) > 1
                  else self.answers[0])
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, dict):
            return answer
        return {'notification_uuid': notification_uuid, 'status': answer}

    def polls(self):
        return [g for g in self.gets if g[1] is None]


class Published(list):
    def __call__(self, notification):
        self.append(notification)

    def statuses(self):
        return [n.payload.status for n in self]


@pytest.fixture
def store(tmp_path):
    store = recovery_store.RecoveryStore(tmp_path / 'state.sqlite')
    yield store
    store.close()


def make(store, masakari, clock, published=None, told=None):
    return follow.Follower(
        store, masakari, published if published is not None else Published(),
        POLICY, 'controller-1', clock=clock,
        tell_agent=None if told is None else
        (lambda host, recovery: told.append((host, recovery))))


def accept(follower, episode='e1', status=202, reason=None,
           notification_uuid='n-1'):
    result = masakari_client.Result(
        masakari_client.Result.ACCEPTED if status == 202
        else masakari_client.Result.REJECTED, status, reason=reason,
        notification_uuid=notification_uuid if status == 202 else None)
    follower.on_answer({'uuid': UUID, 'host': 'compute-1',
                        'episode': episode, 'detected_at': DETECTED}, result)


def run(follower, clock, seconds, tick=1.0):
    end = clock.now + seconds
    while clock.now < end:
        clock.now += tick
        follower.step()


# --- no false outcome --------------------------------------------------------

def test_a_recovery_masakari_has_not_started_stays_accepted(store):
    """``new`` for a long time is not a failure: accepted, polled less
    and less often (bounded), nothing else published."""
    clock = Clock(T0 + 1.5)
    masakari, published = ScriptedMasakari('new'), Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 600)

    assert published.statuses() == ['accepted']
    # 2, 4, 8, 16, 16, ... seconds apart: about 40 looks in 10 minutes
    # at the cap, never more than one per poll_interval.
    assert 30 <= len(masakari.polls()) <= 45
    record = store.get(UUID, 'e1')
    assert record.interval == POLICY.poll_max_interval
    assert not record.final


def test_an_error_the_engine_still_retries_is_not_failed(store):
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('running', 'error'), Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, POLICY.error_timeout - 30)

    assert published.statuses() == ['accepted', 'running']
    record = store.get(UUID, 'e1')
    assert not record.final
    assert 'retries' in record.reason


# --- each status sequence ----------------------------------------------------

@pytest.mark.parametrize('sequence,expected', [
    (['new', 'running', 'finished'], ['accepted', 'running', 'finished']),
    (['running', 'failed'], ['accepted', 'running', 'failed']),
    (['new', 'ignored'], ['accepted', 'ignored']),
    # a status is published once, whatever Masakari says in between
    (['running', 'error', 'running', 'finished'],
     ['accepted', 'running', 'finished']),
])
def test_each_status_is_published_in_order(store, sequence, expected):
    clock = Clock(T0 + 1.5)
    masakari, published = ScriptedMasakari(*sequence), Published()
    told = []
    follower = make(store, masakari, clock, published, told)
    accept(follower)

    run(follower, clock, 120)

    assert published.statuses() == expected
    last = published[-1].payload
    assert (last.uuid, last.host, last.episode, last.notification_uuid) == (
        UUID, 'compute-1', 'e1', 'n-1')
    assert published[-1].publisher.publisher_id == \
        'vmha-masakari-bridge:controller-1'
    # took: detection to the change, on the bridge's clock
    assert 1.5 < last.took < 120
    assert [r['status'] for _, r in told] == expected
    assert {host for host, _ in told} == {'compute-1'}
    assert store.get(UUID, 'e1').final
    polls = len(masakari.polls())
    run(follower, clock, 600)
    assert len(masakari.polls()) == polls  # an outcome is not polled


def test_error_past_the_engine_retries_is_failed(store):
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('error'), Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, POLICY.error_timeout + 60)

    assert published.statuses() == ['accepted', 'running', 'failed']
    assert 'error for' in published[-1].payload.reason
    assert published[-1].priority == 'warn'


def test_workflow_details_are_published_when_masakari_has_them(store):
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('running', 'finished'), Published()
    masakari.steps = [
        {'name': 'StopInstanceTask', 'state': 'SUCCESS', 'progress': 1.0,
         'progress_details': [{'timestamp': '2026-03-01 10:20:35',
                               'message': 'Stopping instance', 'progress':
                               '0.0'}]},
        {'name': 'bogus'},  # no state: dropped, not fatal
    ]
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 30)

    [step] = published[-1].payload.workflow_details
    assert (step.name, step.state, step.progress) == (
        'StopInstanceTask', 'SUCCESS', 1.0)
    assert step.progress_details[0]['message'] == 'Stopping instance'


def _masakari_22_step(message, state='SUCCESS'):
    """One step of masakari-engine 22's ``recovery_workflow_details``
    (NotificationProgressDetails: name, progress, progress_details as
    StopInstanceTask.update_details writes them, state)."""
    return {'name': 'StopInstanceTask', 'progress': 1.0, 'state': state,
            'progress_details': [{'timestamp': '2026-03-01 10:20:35.123456',
                                  'progress': 1.0, 'message': message}]}


def test_an_instance_masakari_skipped_is_ignored_not_finished(store):
    """masakari-engine 22 calls a VM without HA_Enabled "finished"; an
    operator reading "finished" would think it runs again."""
    skip = ('Skipping recovery for instance: %s as it is not Ha_Enabled'
            % UUID)
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('finished'), Published()
    masakari.steps = [_masakari_22_step(skip, state='FAILURE')]
    told = []
    follower = make(store, masakari, clock, published, told)
    accept(follower)

    run(follower, clock, 10)

    assert published.statuses() == ['accepted', 'ignored']
    assert published[-1].payload.reason == skip
    assert [r['status'] for _, r in told] == ['accepted', 'ignored']


def test_a_finished_recovery_without_the_skip_message_stays_finished(store):
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('finished'), Published()
    masakari.steps = [_masakari_22_step('Stopping instance: %s' % UUID),
                      _masakari_22_step("Confirmed instance '%s' vm_state "
                                        "is 'active'" % UUID)]
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 10)

    assert published.statuses() == ['accepted', 'finished']
    assert published[-1].payload.reason is None


def test_without_workflow_details_the_status_still_goes_out(store):
    """masakari-api answers 1.1 GETs only with an engine behind it."""
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('finished'), Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 10)

    assert published.statuses() == ['accepted', 'finished']
    assert published[-1].payload.workflow_details is None


# --- rejected ----------------------------------------------------------------

@pytest.mark.parametrize('status,reason', [
    (409, "Notification received from host compute-1 of type 'VM' is "
          'duplicate.'),
    (400, 'Host with name compute-1 could not be found.'),
])
def test_a_rejection_is_an_outcome(store, status, reason):
    clock = Clock(T0)
    masakari, published = ScriptedMasakari('new'), Published()
    follower = make(store, masakari, clock, published)
    accept(follower, status=status, reason=reason)

    run(follower, clock, 60)

    assert published.statuses() == ['rejected']
    payload = published[0].payload
    assert payload.reason == 'HTTP %d: %s' % (status, reason)
    assert payload.notification_uuid is None
    assert masakari.gets == []  # nothing to poll


# --- GET errors, the bound ---------------------------------------------------

def test_get_errors_are_retried_with_backoff(store, caplog):
    clock = Clock(T0)
    masakari = ScriptedMasakari(
        masakari_client.MasakariUnavailable('connection refused'),
        masakari_client.MasakariUnavailable('HTTP 503: busy', 503),
        {'status': 'no-such-status'},
        'finished')
    published = Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 60)

    assert published.statuses() == ['accepted', 'finished']
    assert 'connection refused' in caplog.text
    assert "'no-such-status'" in caplog.text
    assert UUID in caplog.text


def test_a_notification_masakari_lost_is_failed(store):
    clock = Clock(T0)
    masakari = ScriptedMasakari(masakari_client.NotificationGone('gone'))
    published = Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, 10)

    assert published.statuses() == ['accepted', 'failed']
    assert 'no longer has' in published[-1].payload.reason


def test_polling_gives_up_after_the_bound(store):
    clock = Clock(T0)
    masakari = ScriptedMasakari(
        masakari_client.MasakariUnavailable('connection refused'))
    published = Published()
    follower = make(store, masakari, clock, published)
    accept(follower)

    run(follower, clock, POLICY.give_up + 60, tick=5.0)

    assert published.statuses() == ['accepted', 'failed']
    assert 'no outcome from Masakari within 1 h' in \
        published[-1].payload.reason
    polls = len(masakari.polls())
    # at most one look per poll_max_interval once backed off
    assert polls <= POLICY.give_up / POLICY.poll_max_interval + 10
    run(follower, clock, 3600, tick=60.0)
    assert len(masakari.polls()) == polls


# --- the bridge restarts -----------------------------------------------------

def test_a_restarted_bridge_resumes_from_the_state_file(tmp_path):
    path = tmp_path / 'state.sqlite'
    clock = Clock(T0)
    store = recovery_store.RecoveryStore(path)
    published = Published()
    follower = make(store, ScriptedMasakari('running'), clock, published)
    accept(follower)
    run(follower, clock, 5)
    assert published.statuses() == ['accepted', 'running']
    store.close()  # the bridge stops (or dies)

    store = recovery_store.RecoveryStore(path)
    masakari, published = ScriptedMasakari('finished'), Published()
    follower = make(store, masakari, clock, published)
    run(follower, clock, 30)
    store.close()

    assert published.statuses() == ['finished']
    assert masakari.polls()[0][0] == 'n-1'


def test_a_change_not_yet_published_goes_out_after_a_restart(tmp_path):
    path = tmp_path / 'state.sqlite'
    clock = Clock(T0)
    store = recovery_store.RecoveryStore(path)

    def broker_down(notification):
        raise ConnectionError('broker down')

    follower = make(store, ScriptedMasakari('finished'), clock, broker_down)
    accept(follower)
    run(follower, clock, 5)
    store.close()

    store = recovery_store.RecoveryStore(path)
    published = Published()
    follower = make(store, ScriptedMasakari('finished'), clock, published)
    run(follower, clock, 2)
    store.close()

    assert published.statuses() == ['finished']


def test_two_bridges_cannot_share_a_state_file(tmp_path):
    path = tmp_path / 'state.sqlite'
    first = recovery_store.RecoveryStore(path)
    with pytest.raises(recovery_store.StateFileError,
                       match='in use by another'):
        recovery_store.RecoveryStore(path)
    first.close()
    recovery_store.RecoveryStore(path).close()  # free once closed


def test_a_second_answer_for_one_episode_keeps_the_first(store):
    """A redelivery of the same episode gets 409 from Masakari: the
    first answer (202) is the recovery that runs."""
    clock = Clock(T0)
    published = Published()
    follower = make(store, ScriptedMasakari('new'), clock, published)
    accept(follower)
    accept(follower, status=409, reason='duplicate')

    run(follower, clock, 3)

    assert published.statuses() == ['accepted']


def test_a_state_file_that_fails_does_not_lose_the_forward(store, caplog):
    caplog.set_level(logging.ERROR)
    clock = Clock(T0)
    follower = make(store, ScriptedMasakari('new'), clock)
    store.close()

    accept(follower)  # does not raise: the failure was delivered

    assert 'not followed' in caplog.text


def test_took_is_masakaris_own_time_of_the_outcome(store):
    """Backed off to 16 s between looks, ``took`` still says when
    Masakari finished (its ``updated_at``), not when the bridge looked."""
    clock = Clock(T0 + 1.0)
    finished_at = '2026-03-01T10:21:10.500000'  # 40.5 s after detection
    masakari = ScriptedMasakari('running')
    published = Published()
    follower = make(store, masakari, clock, published)
    accept(follower)
    run(follower, clock, 35)
    masakari.answers = [{'status': 'finished', 'updated_at': finished_at}]

    run(follower, clock, 60)

    assert published.statuses() == ['accepted', 'running', 'finished']
    assert published[-1].payload.took == pytest.approx(40.5)


def test_a_failure_without_an_episode_is_followed_by_its_time(store):
    """InstanceFailurePayload 1.0 (an older agent) has no episode: two
    failures of one instance are still two recoveries."""
    clock = Clock(T0)
    published = Published()
    follower = make(store, ScriptedMasakari('new'), clock, published)
    for detected, masakari_id in ((DETECTED, 'n-1'),
                                  ('2026-03-01T10:30:00+00:00', 'n-2')):
        follower.on_answer(
            {'uuid': UUID, 'host': 'compute-1', 'detected_at': detected},
            masakari_client.Result(masakari_client.Result.ACCEPTED, 202,
                                   notification_uuid=masakari_id))

    run(follower, clock, 2)

    assert sorted(n.payload.notification_uuid for n in published) == [
        'n-1', 'n-2']
    assert {n.payload.episode for n in published} == {None}
