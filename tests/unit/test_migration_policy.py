"""Live-migration policy: downtime steps, deadline, stall, what to do.

No-false-action tests first: a migration that makes progress (steadily
or as a saw tooth whose floor or iteration starts go down) is never
stalled; a migration in post-copy is never aborted.  Time is passed in
by hand: samples every 5 s, as ``[migration] progress_interval``.
"""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from oslo_config import cfg
import pytest

import vmha.conf
from vmha.manager import migration_policy as mp

GIB = 1024 ** 3
INTERVAL = 5


def feed(watch, samples):
    """``samples``: (time, remaining, iteration) tuples."""
    for now, remaining, iteration in samples:
        watch.feed(now, remaining, iteration)


def sawtooth(start, end, period, floor, peak, floor_factor=1.0,
             peak_factor=1.0):
    """Remaining data of a pre-copy: each iteration starts at ``peak``
    and falls linearly to ``floor``; each next iteration's floor and peak
    are the previous ones times the factors."""
    samples, iteration = [], 1
    now = start
    while now <= end:
        phase = ((now - start) % period) / period
        iteration = 1 + int((now - start) // period)
        scale_floor = floor * floor_factor ** (iteration - 1)
        scale_peak = peak * peak_factor ** (iteration - 1)
        remaining = scale_peak - (scale_peak - scale_floor) * phase
        samples.append((now, int(remaining), iteration))
        now += INTERVAL
    return samples


def stalled_at(watch, samples):
    """The first sample time at which the watch says stalled, or None."""
    for now, remaining, iteration in samples:
        watch.feed(now, remaining, iteration)
        if watch.stalled(now):
            return now
    return None


# -- How much data, downtime steps, deadline -------------------------------

def test_data_counts_ram_and_each_block_disk_at_least_two_gib():
    assert mp.data_gib(1 * GIB) == 2
    assert mp.data_gib(8 * GIB) == 8
    assert mp.data_gib(8 * GIB, [1 * GIB, 10 * GIB]) == 20
    assert mp.data_gib(512 * 1024 ** 2) == 2


def test_downtime_steps_for_a_1_gib_guest():
    """1 GiB counts 2: int(75 * 2) = 150 s between steps; downtime
    500 * (10 + 9 i) / 100 ms."""
    steps = mp.downtime_steps(mp.data_gib(1 * GIB))
    assert steps == [(0, 50), (150, 95), (300, 140), (450, 185), (600, 230),
                     (750, 275), (900, 320), (1050, 365), (1200, 410),
                     (1350, 455), (1500, 500)]


def test_downtime_steps_for_an_8_gib_guest():
    steps = mp.downtime_steps(mp.data_gib(8 * GIB))
    assert steps == [(600 * i, 50 + 45 * i) for i in range(11)]


def test_the_last_step_is_exactly_the_maximum():
    """nova's floating-point line can land 1 ms short (400 ms in 3 steps:
    133.33 + 3 * 88.89); the integer formula cannot."""
    steps = mp.downtime_steps(3, max_downtime_ms=400, steps=3,
                              delay_per_gib=30)
    assert steps == [(0, 133), (90, 222), (180, 311), (270, 400)]
    for downtime, count in ((500, 7), (1000, 3), (123, 11)):
        assert mp.downtime_steps(2, downtime, count)[-1][1] == downtime


def test_a_step_is_due_once_its_time_has_passed():
    steps = mp.downtime_steps(2)
    assert mp.due_downtime(steps, 0) is None
    assert mp.due_downtime(steps, 0.1) == 50
    assert mp.due_downtime(steps, 150) == 50
    assert mp.due_downtime(steps, 150.1) == 95
    assert mp.due_downtime(steps, 10 ** 6) == 500


@pytest.mark.parametrize('args', [(2, 500, 0), (2, 0, 10), (0, 500, 10),
                                  (2, 500, 10, -1)])
def test_impossible_steps_are_refused(args):
    with pytest.raises(ValueError):
        mp.downtime_steps(*args)


def test_completion_deadline():
    assert mp.completion_deadline(mp.data_gib(1 * GIB)) == 1600
    assert mp.completion_deadline(mp.data_gib(8 * GIB)) == 6400
    assert mp.completion_deadline(2.5, 150) == 375
    assert mp.completion_deadline(8, 0) is None
    with pytest.raises(ValueError):
        mp.completion_deadline(8, -1)


# -- Progress: no false stall first -----------------------------------------

def test_steady_slow_progress_is_not_a_stall():
    """1 % less at each sample: no sample beats the last by 4 %, but each
    150 s beats the 150 s before by far."""
    watch = mp.ProgressWatch(150)
    samples = [(t, int(10 * GIB * 0.99 ** (t // INTERVAL)), 1)
               for t in range(0, 1200, INTERVAL)]
    assert stalled_at(watch, samples) is None


def test_a_sawtooth_making_new_minima_is_not_a_stall():
    """Bug 1644248's saw tooth, converging: each tooth's floor 10 % lower
    than the last, while the peaks stay high."""
    watch = mp.ProgressWatch(150)
    samples = sawtooth(0, 1500, period=60, floor=2 * GIB, peak=6 * GIB,
                       floor_factor=0.9)
    assert stalled_at(watch, samples) is None


def test_iterations_starting_with_less_are_progress():
    """The floor is QEMU's switch-over threshold and stays put; what
    converges is how much each iteration starts with (7 % less each
    time): the first sample of each 40 s iteration is its start, the
    others sit on the floor."""
    watch = mp.ProgressWatch(150)
    floor = 100 * 1024 ** 2
    samples = [(t, int(4 * GIB * 0.93 ** (t // 40)) if t % 40 == 0
                else floor, 1 + t // 40) for t in range(0, 1500, INTERVAL)]
    assert stalled_at(watch, samples) is None
    # The same with every iteration starting at 4 GiB: stalled.
    watch = mp.ProgressWatch(150)
    samples = [(t, 4 * GIB if t % 40 == 0 else floor, 1 + t // 40)
               for t in range(0, 1500, INTERVAL)]
    assert stalled_at(watch, samples) == 5 + 150


def test_a_jump_up_then_below_the_old_floor_is_progress():
    """Down to 4 GiB by 95 s, a burst of dirtying up to 6 GiB, then 3 GiB
    from 150 s: progress.  That floor then stays put: stalled 150 s
    later."""
    watch = mp.ProgressWatch(150)
    samples = ([(t, 8 * GIB - t * GIB // 25, 1)
                for t in range(0, 100, INTERVAL)]
               + [(t, 6 * GIB, 2) for t in range(100, 150, INTERVAL)]
               + [(t, 3 * GIB, 3) for t in range(150, 600, INTERVAL)])
    assert stalled_at(watch, samples) == 300


def test_postcopy_is_never_stalled():
    watch = mp.ProgressWatch(150)
    for now in range(0, 1000, INTERVAL):
        watch.feed(now, 1 * GIB, 1, postcopy=now >= 100)
        assert not watch.stalled(now)


def test_progress_timeout_zero_never_stalls():
    watch = mp.ProgressWatch(0)
    feed(watch, [(t, GIB, 1) for t in range(0, 1000, INTERVAL)])
    assert not watch.stalled(995)


def test_nothing_left_to_send_is_not_a_stall():
    watch = mp.ProgressWatch(150)
    feed(watch, [(t, 0, 3) for t in range(0, 400, INTERVAL)])
    assert not watch.stalled(395)


def test_samples_without_data_or_from_the_past_are_ignored():
    watch = mp.ProgressWatch(150)
    assert watch.feed(0, 4 * GIB, 1)
    assert not watch.feed(5, None, 1)
    assert not watch.feed(10, -1, 1)
    assert watch.feed(20, 3 * GIB, 1)
    assert not watch.feed(15, 1, 1)  # would have been a new minimum
    assert watch.feed(200, 3 * GIB, 1)
    assert watch.stalled(200)


def test_a_job_still_setting_up_does_not_hide_a_stall():
    """libvirt reports 0 of 0 bytes while the job sets up; that 0 must
    not count as "nothing left to send"."""
    watch = mp.ProgressWatch(150)
    for now in range(0, 20, INTERVAL):
        assert not watch.feed(now, 0, 0, data_total=0)
    samples = [(t, 3 * GIB, 1) for t in range(20, 400, INTERVAL)]
    assert stalled_at(watch, samples) == 20 + 150


# -- Real stalls -------------------------------------------------------------

def test_a_flat_migration_stalls_after_progress_timeout():
    watch = mp.ProgressWatch(150)
    samples = [(t, 3 * GIB, 1) for t in range(0, 400, INTERVAL)]
    assert stalled_at(watch, samples) == 150


def test_a_sawtooth_back_to_the_same_floor_stalls():
    """The guest dirties as fast as the link sends: every iteration
    starts and ends at the same place."""
    watch = mp.ProgressWatch(150)
    samples = sawtooth(0, 1000, period=40, floor=1 * GIB, peak=3 * GIB)
    # The first descent is progress; its lowest sample is at 35 s and
    # nothing goes lower after it.
    assert stalled_at(watch, samples) == 35 + 150


def test_jitter_of_a_few_percent_is_not_progress():
    watch = mp.ProgressWatch(150)
    samples = [(t, int(3 * GIB * (0.98 if (t // INTERVAL) % 2 else 1.0)),
                1 + t // 40) for t in range(0, 400, INTERVAL)]
    assert stalled_at(watch, samples) == 150


def test_a_migration_that_stops_moving_after_progress_stalls():
    watch = mp.ProgressWatch(150)
    moving = [(t, int(8 * GIB * 0.95 ** (t // INTERVAL)), 1)
              for t in range(0, 300, INTERVAL)]
    stuck_at = moving[-1][1]
    stuck = [(t, stuck_at, 1) for t in range(300, 700, INTERVAL)]
    assert stalled_at(watch, moving) is None
    # The last progress was the sample at 295: stalled 150 s later.
    assert stalled_at(watch, stuck) == 445


def test_since_restarts_the_clock():
    watch = mp.ProgressWatch(150)
    feed(watch, [(t, 3 * GIB, 1) for t in range(0, 400, INTERVAL)])
    assert watch.stalled(395)
    assert not watch.stalled(395, since=300)
    feed(watch, [(t, 3 * GIB, 1) for t in range(400, 460, INTERVAL)])
    assert watch.stalled(455, since=300)


def test_the_watch_keeps_a_bounded_history():
    watch = mp.ProgressWatch(150, window=100)
    feed(watch, [(t, GIB + t, 1 + t // 40) for t in range(0, 100000, 5)])
    assert len(watch._samples) <= (150 + 100) // INTERVAL + 1
    assert len(watch._iterations) <= (150 + 100) // 40 + 2


def test_a_wrong_watch_is_refused():
    with pytest.raises(ValueError):
        mp.ProgressWatch(-1)
    with pytest.raises(ValueError):
        mp.ProgressWatch(150, window=0)


# -- decide ------------------------------------------------------------------

def run(state, samples, postcopy_from=None):
    """Feed samples, ask ``decide`` at each, apply what it says the way a
    driver would; return the (time, action) list of everything but
    ``none``."""
    acted = []
    for now, remaining, iteration in samples:
        postcopy = postcopy_from is not None and now >= postcopy_from
        state.watch.feed(now, remaining, iteration, postcopy=postcopy)
        if postcopy:
            state.postcopy_began()
        action = mp.decide(now, state)
        if action.kind == mp.NONE:
            continue
        acted.append((now, action))
        if action.kind == mp.SET_DOWNTIME:
            state.downtime_set(now, action.downtime_ms)
        elif action.kind == mp.PAUSE_GUEST:
            state.guest_paused(now)
        elif action.kind == mp.FORCE_COMPLETE_POSTCOPY:
            state.postcopy_requested(now)
        elif action.kind == mp.ABORT:
            break
    return acted


def flat(start, end, remaining=3 * GIB):
    return [(t, remaining, 1) for t in range(start, end, INTERVAL)]


def converging(start, end):
    return [(t, int(8 * GIB * 0.99 ** ((t - start) // INTERVAL)), 1)
            for t in range(start, end, INTERVAL)]


def test_a_converging_migration_only_gets_its_downtime_steps():
    state = mp.begin(0, mp.data_gib(1 * GIB))
    acted = run(state, converging(1, 1600))
    assert [(now, a.kind, a.downtime_ms) for now, a in acted] == [
        (1, mp.SET_DOWNTIME, 50)] + [
        (151 + 150 * i, mp.SET_DOWNTIME, 95 + 45 * i) for i in range(10)]
    assert state.downtime_ms == 500


def test_past_the_deadline_abort():
    state = mp.begin(0, mp.data_gib(1 * GIB))
    acted = run(state, converging(1, 2000))
    assert acted[-1] == (1601, mp.Action(mp.ABORT,
                                         reason=mp.COMPLETION_TIMEOUT))


def test_past_the_deadline_force_complete_with_postcopy():
    state = mp.begin(0, mp.data_gib(1 * GIB), timeout_action='force_complete',
                     permit_post_copy=True)
    acted = run(state, converging(1, 2000))
    assert acted[-1] == (1601, mp.Action(mp.FORCE_COMPLETE_POSTCOPY,
                                         reason=mp.COMPLETION_TIMEOUT))
    assert [a.kind for _, a in acted].count(mp.FORCE_COMPLETE_POSTCOPY) == 1


def test_force_complete_without_postcopy_pauses_the_guest_once():
    state = mp.begin(0, mp.data_gib(1 * GIB), timeout_action='force_complete')
    acted = run(state, converging(1, 2000))
    assert acted[-1] == (1601, mp.Action(mp.PAUSE_GUEST,
                                         reason=mp.COMPLETION_TIMEOUT))
    assert state.paused_at == 1601


def test_a_paused_guest_is_not_left_paused_when_nothing_moves():
    state = mp.begin(0, mp.data_gib(1 * GIB), timeout_action='force_complete')
    acted = run(state, converging(1, 1610) + flat(1610, 2200))
    assert acted[-2] == (1601, mp.Action(mp.PAUSE_GUEST,
                                         reason=mp.COMPLETION_TIMEOUT))
    assert acted[-1] == (1755, mp.Action(
        mp.ABORT, reason=mp.STALLED_AFTER_FORCE_COMPLETE))


def test_a_postcopy_switch_that_never_began_is_aborted_when_stalled():
    state = mp.begin(0, mp.data_gib(1 * GIB), timeout_action='force_complete',
                     permit_post_copy=True)
    acted = run(state, converging(1, 1610) + flat(1610, 2200))
    assert acted[-1] == (1755, mp.Action(
        mp.ABORT, reason=mp.STALLED_AFTER_FORCE_COMPLETE))


def test_postcopy_is_never_aborted():
    """Past the deadline, stalled, in post-copy: nothing.  Aborting now
    would lose the VM."""
    for action in mp.TIMEOUT_ACTIONS:
        state = mp.begin(0, mp.data_gib(1 * GIB), timeout_action=action,
                         permit_post_copy=True)
        acted = run(state, converging(1, 1000) + flat(1000, 5000),
                    postcopy_from=1000)
        assert all(a.kind == mp.SET_DOWNTIME for _, a in acted)
        assert acted[-1][0] < 1000


def test_postcopy_seen_in_the_stats_alone_stops_everything():
    state = mp.begin(0, mp.data_gib(1 * GIB))
    state.watch.feed(1700, GIB, 4, postcopy=True)
    assert mp.decide(1700, state) == mp.NOTHING_TO_DO


def test_a_stall_takes_the_timeout_action():
    """An 8 GiB guest: its steps are 600 s apart, so a migration that
    does not converge at 50 ms is acted on at 150 s (the help text of
    progress_timeout says so)."""
    state = mp.begin(0, mp.data_gib(8 * GIB))
    acted = run(state, flat(1, 1000))
    assert acted == [(1, mp.Action(mp.SET_DOWNTIME, 50, mp.DOWNTIME_STEP)),
                     (151, mp.Action(mp.ABORT, reason=mp.STALLED))]
    state = mp.begin(0, mp.data_gib(8 * GIB), timeout_action='force_complete')
    acted = run(state, flat(1, 1000))
    assert acted == [
        (1, mp.Action(mp.SET_DOWNTIME, 50, mp.DOWNTIME_STEP)),
        (151, mp.Action(mp.PAUSE_GUEST, reason=mp.STALLED)),
        (301, mp.Action(mp.ABORT, reason=mp.STALLED_AFTER_FORCE_COMPLETE))]


def test_each_downtime_step_gives_the_migration_a_fresh_chance():
    """A 1 GiB guest's steps are 150 s apart: a flat migration gets every
    step; the deadline ends it, not the stall."""
    state = mp.begin(0, mp.data_gib(1 * GIB))
    acted = run(state, flat(1, 2000))
    kinds = [a.kind for _, a in acted]
    assert kinds == [mp.SET_DOWNTIME] * 11 + [mp.ABORT]
    assert acted[-1] == (1601, mp.Action(mp.ABORT,
                                         reason=mp.COMPLETION_TIMEOUT))


def test_no_stall_detection_leaves_only_the_deadline():
    state = mp.begin(0, mp.data_gib(8 * GIB), progress_timeout=0)
    acted = run(state, flat(1, 7000))
    assert acted[-1] == (6401, mp.Action(mp.ABORT,
                                         reason=mp.COMPLETION_TIMEOUT))


def test_no_deadline_and_no_stall_detection_never_acts_but_the_steps():
    state = mp.begin(0, 2, completion_timeout_per_gib=0, progress_timeout=0)
    acted = run(state, flat(1, 20000))
    assert all(a.kind == mp.SET_DOWNTIME for _, a in acted)


def test_an_unknown_timeout_action_is_refused():
    with pytest.raises(ValueError) as raised:
        mp.begin(0, 2, timeout_action='pause')
    assert "'pause'" in str(raised.value)


@pytest.mark.parametrize('post_copy, auto_converge, expected', [
    (False, False, set()), (True, False, {'postcopy'}),
    (False, True, {'auto_converge'}), (True, True, {'postcopy'}),
])
def test_postcopy_takes_precedence_over_auto_converge(
        post_copy, auto_converge, expected):
    assert mp.features(post_copy, auto_converge) == expected


# -- After a failure ---------------------------------------------------------

@pytest.mark.parametrize('phase, source, by_operator, kind, cause', [
    ('precopy', 'paused', False, mp.RESUME_SOURCE,
     'migration_failed_source_paused'),
    ('precopy', 'paused', True, mp.NONE,
     'migration_failed_paused_by_operator'),
    ('precopy', 'running', False, mp.NONE,
     'migration_failed_source_running'),
    ('precopy', 'crashed', False, mp.NONE,
     'source_stopped_during_migration'),
    ('precopy', 'gone', False, mp.NONE, 'source_stopped_during_migration'),
    ('postcopy', 'paused', False, mp.REPORT_FAILURE,
     'postcopy_migration_failed'),
    ('postcopy', 'paused', True, mp.REPORT_FAILURE,
     'postcopy_migration_failed'),
    ('postcopy', 'running', False, mp.REPORT_FAILURE,
     'postcopy_migration_failed'),
    ('postcopy', 'gone', False, mp.REPORT_FAILURE,
     'postcopy_migration_failed'),
])
def test_after_a_failure(phase, source, by_operator, kind, cause):
    assert mp.after_failure(phase, source, by_operator) == \
        mp.Recovery(kind, cause)


def test_every_phase_and_state_has_an_answer():
    for phase in mp.PHASES:
        for state in mp.SOURCE_STATES:
            assert mp.after_failure(phase, state).kind in (
                mp.NONE, mp.RESUME_SOURCE, mp.REPORT_FAILURE)


@pytest.mark.parametrize('phase, state, words', [
    ('switchover', 'paused', "'switchover'"),
    ('precopy', 'blocked', "'blocked'"),
])
def test_unknown_phase_or_state_is_refused(phase, state, words):
    with pytest.raises(ValueError) as raised:
        mp.after_failure(phase, state)
    assert words in str(raised.value)


# -- The [migration] options -------------------------------------------------

def make_conf(tmp_path=None, text=None):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    args = []
    if text is not None:
        path = tmp_path / 'vmha.conf'
        path.write_text(text)
        args = ['--config-file', str(path)]
    conf(args, project='vmha', default_config_files=[],
         default_config_dirs=[])
    return conf


def test_migration_defaults_are_novas_and_kubevirts():
    group = make_conf().migration
    assert (group.progress_interval, group.progress_timeout,
            group.completion_timeout, group.timeout_action, group.downtime,
            group.downtime_steps, group.downtime_delay,
            group.permit_post_copy, group.permit_auto_converge) == (
        5.0, 150, 800, 'abort', 500, 10, 75, False, False)


@pytest.mark.parametrize('line, option', [
    ('timeout_action = pause', 'timeout_action'),
    ('downtime = 50', 'downtime'),
    ('downtime_steps = 1', 'downtime_steps'),
    ('progress_timeout = -5', 'progress_timeout'),
    ('permit_post_copy = maybe', 'permit_post_copy'),
    ('progress_interval = 0', 'progress_interval'),
])
def test_a_bad_migration_value_is_one_readable_line(tmp_path, line, option):
    conf = make_conf(tmp_path, '[migration]\n%s\n' % line)
    with pytest.raises(vmha.conf.ConfigError) as raised:
        vmha.conf.validate(conf)
    message = str(raised.value)
    assert '\n' not in message
    assert message.startswith('invalid value for [migration] %s' % option)


# -- Properties ---------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(downtime=st.integers(100, 60000), steps=st.integers(3, 200),
       data=st.floats(0.5, 4096), delay=st.integers(3, 600))
def test_steps_rise_linearly_from_a_step_to_the_maximum(
        downtime, steps, data, delay):
    table = mp.downtime_steps(data, downtime, steps, delay)
    assert len(table) == steps + 1
    assert table[0] == (0, downtime // steps)
    assert table[-1][1] == downtime
    gap = int(delay * data)
    assert [after for after, _ in table] == [gap * i
                                             for i in range(steps + 1)]
    downtimes = [ms for _, ms in table]
    assert downtimes == sorted(downtimes)


@settings(max_examples=100, deadline=None)
@given(noise=st.lists(st.floats(0, 3), min_size=300, max_size=300),
       start=st.integers(1 * GIB, 64 * GIB))
def test_a_floor_that_keeps_falling_is_never_a_stall(noise, start):
    """Whatever the saw tooth does above it, a floor reached at least
    every 30 s and 0.5 % lower every 5 s is progress."""
    watch = mp.ProgressWatch(150)
    for index, extra in enumerate(noise):
        now = index * INTERVAL
        floor = start * 0.995 ** index
        remaining = floor if index % 6 == 0 else floor * (1 + extra)
        watch.feed(now, int(remaining), 1 + index // 6)
        assert not watch.stalled(now)


@settings(max_examples=100, deadline=None)
@given(remaining=st.lists(st.integers(0, 64 * GIB), min_size=1,
                          max_size=200),
       action=st.sampled_from(mp.TIMEOUT_ACTIONS),
       post_copy=st.booleans(), switch=st.integers(0, 199))
def test_nothing_is_ever_done_to_a_migration_in_postcopy(
        remaining, action, post_copy, switch):
    state = mp.begin(0, 2, timeout_action=action, permit_post_copy=post_copy,
                     completion_timeout_per_gib=10)
    for index, left in enumerate(remaining):
        now = 1 + index * 50
        state.watch.feed(now, left, index, postcopy=index >= switch)
        action_now = mp.decide(now, state)
        if index >= switch:
            assert action_now == mp.NOTHING_TO_DO
