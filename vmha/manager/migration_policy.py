"""Live-migration policy as pure tables and functions: no I/O, no clock.

What a migration driver or monitor asks while one migration runs on the
source host, and what it does once one failed.  Every function takes the
time (``now``, a monotonic number of seconds) from its caller, so tests
drive it by hand and the driver decides where the clock comes from.

The rules, in the order ``decide`` applies them:

1. **Post-copy started: hands off.**  Once the guest runs on the
   destination and pulls its missing pages from the source, aborting
   would lose the VM (nova and KubeVirt both refuse); nor does the
   downtime matter any more.
2. **Completion deadline** (``completion_deadline``): past it, the
   ``timeout_action``: ``abort`` (the VM runs on, on the source) or
   ``force_complete`` (switch to post-copy when permitted, else pause
   the guest so that it stops dirtying memory and the migration
   converges; a failure later resumes it: ``after_failure``).  An
   ``abort`` is asked again at each look until the job ends (an abort
   that libvirt refused is tried again); a force-complete once.
3. **Downtime steps** (``downtime_steps``): the maximum downtime is
   raised in linear steps over a time scaled by the data to move.
4. **Stall** (``ProgressWatch``): no progress for ``progress_timeout``
   seconds leads to the same ``timeout_action``.  Each change the
   policy makes (a new downtime, a pause, a post-copy request) restarts
   that clock: the span before it says nothing of the span after.  A
   migration still making no progress ``progress_timeout`` after a
   force-complete is aborted (a pause is then undone): a guest is never
   left paused for ever.

Why a stall is judged on a sliding-window minimum and not on each
sample: the data remaining is a saw tooth (nova bug 1644248; each
iteration of the pre-copy sends what the guest dirtied during the last
one), so "remaining went up" says nothing.  What says something is
whether the lowest point keeps going down, or a new iteration starts
with less to send than the one before.
"""

import collections
import dataclasses

GIB = 1024 ** 3

#: Each of RAM and every block-migrated disk counts at least this many
#: GiB when scaling the delays and the deadline (nova's rule: a small
#: guest still gets steps and a deadline long enough to matter).
MIN_GIB_PER_ITEM = 2

#: A sample "makes progress" when its data remaining is below this share
#: of the reference minimum (KubeVirt's 96 %): jitter of a few percent
#: around a flat floor is not progress.
PROGRESS_RATIO = 0.96

TIMEOUT_ACTIONS = ('abort', 'force_complete')


def data_gib(ram_bytes, block_disk_bytes=()):
    """The data a migration moves, in GiB, as nova counts it: the RAM
    plus each block-migrated disk (disks on shared storage are not
    listed), each counted at least ``MIN_GIB_PER_ITEM`` GiB."""
    total = max(ram_bytes / GIB, MIN_GIB_PER_ITEM)
    for size in block_disk_bytes:
        total += max(size / GIB, MIN_GIB_PER_ITEM)
    return total


def downtime_steps(data_gib, max_downtime_ms=500, steps=10,
                   delay_per_gib=75):
    """The maximum-downtime table: ``[(after_seconds, downtime_ms)]``.

    ``steps + 1`` entries, nova's semantics.  With ``D`` = max_downtime_ms,
    ``s`` = steps and ``T = int(delay_per_gib * data_gib)``, entry ``i``
    (0 to ``s``) is::

        after_seconds = T * i
        downtime_ms   = floor(D * (s + i * (s - 1)) / s**2)

    that is ``D/s + i * (D - D/s)/s``: the first step (at 0 s) is
    ``D/s``, the last (at ``s * T``) is exactly ``D``.  nova computes the
    same line in floating point and may land 1 ms low; this table uses
    integer arithmetic so the last step is always the configured
    maximum.  A step is due once the elapsed time is *past* its
    ``after_seconds`` (nova's ``elapsed > after``), so the first step is
    set at the first look after the start.

    For the defaults (500 ms, 10 steps, 75 s/GiB): a 1 GiB guest counts
    2 GiB, so steps of 150 s: 50 ms at 0 s, 95 at 150 s ... 500 at
    1500 s; an 8 GiB guest: steps of 600 s, 500 ms at 6000 s.
    """
    if steps < 1:
        raise ValueError('downtime steps must be at least 1, not %r'
                         % (steps,))
    if max_downtime_ms <= 0 or delay_per_gib < 0 or data_gib <= 0:
        raise ValueError(
            'downtime steps need a positive downtime and data size and a '
            'non-negative delay (got %r ms, %r GiB, %r s/GiB)'
            % (max_downtime_ms, data_gib, delay_per_gib))
    delay = int(delay_per_gib * data_gib)
    return [(delay * i,
             max_downtime_ms * (steps + i * (steps - 1)) // steps ** 2)
            for i in range(steps + 1)]


def completion_deadline(data_gib, completion_timeout_per_gib=800):
    """Seconds after its start by which a migration must have completed
    (before post-copy), or None for no deadline (a timeout of 0).

    ``int(completion_timeout_per_gib * data_gib)``, with the same
    ``data_gib`` as the downtime steps (nova's rule): 1600 s for a
    1 GiB guest (it counts 2 GiB), 6400 s for an 8 GiB one.
    """
    if completion_timeout_per_gib < 0:
        raise ValueError('the completion timeout cannot be negative (%r)'
                         % (completion_timeout_per_gib,))
    if not completion_timeout_per_gib:
        return None
    return int(completion_timeout_per_gib * data_gib)


def due_downtime(steps, elapsed):
    """The downtime (ms) of the last step whose time has passed, or None
    before the first one."""
    due = None
    for after, downtime in steps:
        if elapsed > after:
            due = downtime
    return due


Sample = collections.namedtuple(
    'Sample', ['time', 'data_remaining', 'iteration'])


class ProgressWatch:
    """Is a migration still getting anywhere?  Fed job-stats samples.

    ``stalled(now)`` is true when, over the last ``progress_timeout``
    seconds, the data remaining never went below ``PROGRESS_RATIO`` (96 %)
    of its minimum over the ``window`` seconds before them, and no memory
    iteration started there with less to send (below 96 % of what the
    iteration before it started with).

    So a saw tooth whose floor keeps going down is progress; one that
    returns to the same floor is a stall; a pre-copy whose iterations
    each start lower converges even while its floor (QEMU's switch-over
    threshold) stays put.  A migration watched for less than
    ``progress_timeout`` (since its start, or since ``since``) is never
    stalled: there is nothing to compare with.  Once post-copy started it
    is never stalled either (rule 1 of the module).

    The window is a minimum over a span, not "the last sample", because
    remaining data that shrinks slowly but steadily (1 % per sample) is
    progress too: each sample beats the previous one by little, but the
    last ``progress_timeout`` seconds beat the span before them by much.

    ``window`` defaults to ``progress_timeout``; it must cover one
    iteration of the pre-copy (RAM / link speed), or a saw tooth's
    descent would look like a new minimum each time.  Samples older than
    ``progress_timeout + window`` are dropped: memory is bounded.
    ``progress_timeout`` 0 switches stall detection off (nova's choice).
    """

    def __init__(self, progress_timeout=150, window=None):
        if progress_timeout < 0:
            raise ValueError('progress_timeout cannot be negative (%r)'
                             % (progress_timeout,))
        if window is not None and window <= 0:
            raise ValueError('the window must be positive (%r)' % (window,))
        self.progress_timeout = progress_timeout
        self.window = progress_timeout if window is None else window
        self.postcopy = False
        self._samples = collections.deque()
        # (time, data remaining) of the first sample seen of each memory
        # iteration.
        self._iterations = collections.deque()
        self._last_iteration = None

    def feed(self, now, data_remaining, iteration=None, postcopy=False,
             data_total=None):
        """Record one job-stats sample.  Returns False (and records
        nothing) for a sample that cannot be judged: no data remaining,
        a ``data_total`` of 0 (the job is still setting up: its 0
        remaining would pass for "nothing left" and hide a stall), or a
        time before the last sample's (the caller's clock went back)."""
        if postcopy:
            self.postcopy = True
        if data_remaining is None or data_remaining < 0 or data_total == 0:
            return False
        if self._samples and now < self._samples[-1].time:
            return False
        self._samples.append(Sample(now, data_remaining, iteration))
        if iteration is not None and iteration != self._last_iteration:
            if self._last_iteration is None or \
                    iteration > self._last_iteration:
                self._iterations.append((now, data_remaining))
            self._last_iteration = iteration
        horizon = now - self.progress_timeout - self.window
        while self._samples and self._samples[0].time < horizon:
            self._samples.popleft()
        # Keep the last iteration that began before the horizon: the next
        # one is compared with it.
        while len(self._iterations) > 1 and self._iterations[1][0] < horizon:
            self._iterations.popleft()
        return True

    def stalled(self, now, since=None):
        """True if the migration made no progress for ``progress_timeout``
        seconds up to ``now``, looking only at samples from ``since`` on
        (the time the policy last changed something: a new downtime, a
        pause)."""
        if self.postcopy or not self.progress_timeout:
            return False
        split = now - self.progress_timeout
        start = split - self.window
        if since is not None:
            start = max(start, since)
        earlier = [s.data_remaining for s in self._samples
                   if start <= s.time <= split]
        recent = [s.data_remaining for s in self._samples
                  if split < s.time <= now]
        if not earlier or not recent:
            return False
        reference = min(earlier)
        if reference == 0:
            # Nothing left to send: the switch-over is under way and the
            # completion deadline still covers it.
            return False
        if min(recent) < PROGRESS_RATIO * reference:
            return False
        return not self._iteration_progress(split)

    def _iteration_progress(self, split):
        """True if an iteration that began after ``split`` had less to
        send than the one before it."""
        starts = list(self._iterations)
        return any(began > split and remaining < PROGRESS_RATIO * before
                   for (_, before), (began, remaining)
                   in zip(starts, starts[1:], strict=False))


#: What ``decide`` asks the driver to do now.
NONE = 'none'
SET_DOWNTIME = 'set_downtime'
ABORT = 'abort'
FORCE_COMPLETE_POSTCOPY = 'force_complete_postcopy'
PAUSE_GUEST = 'pause_guest'

Action = collections.namedtuple('Action', ['kind', 'downtime_ms', 'reason'],
                                defaults=(None, None))
Action.__doc__ = """One step of the policy: ``kind`` (one of the module's
constants), ``downtime_ms`` for ``set_downtime``, ``reason`` (why:
``completion_timeout``, ``stalled``, ``stalled_after_force_complete``,
``downtime_step``) for the notification and the log."""

NOTHING_TO_DO = Action(NONE)

# Reasons.
COMPLETION_TIMEOUT = 'completion_timeout'
STALLED = 'stalled'
STALLED_AFTER_FORCE_COMPLETE = 'stalled_after_force_complete'
DOWNTIME_STEP = 'downtime_step'


@dataclasses.dataclass
class MigrationState:
    """What the policy knows of one outgoing migration.

    The driver builds it at the start (``started_at``, the step table,
    the deadline, the options), feeds ``watch`` with job stats and
    records what it did with the ``*_at`` setters; ``decide`` only
    reads it.
    """

    started_at: float
    steps: list[tuple[int, int]]
    deadline: int | None  # seconds after the start
    watch: ProgressWatch
    timeout_action: str = 'abort'
    permit_post_copy: bool = False
    downtime_ms: int | None = None  # the maximum downtime last set
    changed_at: float | None = None  # the policy's last change
    paused_at: float | None = None  # vmha paused the guest to converge
    postcopy_requested_at: float | None = None
    postcopy_started: bool = False

    def __post_init__(self):
        if self.timeout_action not in TIMEOUT_ACTIONS:
            raise ValueError('timeout_action must be one of %s, not %r'
                             % (', '.join(TIMEOUT_ACTIONS),
                                self.timeout_action))

    def downtime_set(self, now, downtime_ms):
        self.downtime_ms = downtime_ms
        self.changed_at = now

    def guest_paused(self, now):
        self.paused_at = self.changed_at = now

    def postcopy_requested(self, now):
        self.postcopy_requested_at = self.changed_at = now

    def postcopy_began(self):
        self.postcopy_started = True


def decide(now, state):
    """The one thing to do now for this migration (an ``Action``).

    One action per call: the driver acts, records it on ``state``, and
    asks again at its next look (every ``progress_interval``).
    """
    if state.postcopy_started or state.watch.postcopy:
        return NOTHING_TO_DO
    elapsed = now - state.started_at
    if state.deadline is not None and elapsed > state.deadline:
        action = _timeout_action(state, COMPLETION_TIMEOUT)
        if action is not None:
            return action
    due = due_downtime(state.steps, elapsed)
    if (due is not None and due != state.downtime_ms
            and state.postcopy_requested_at is None
            and state.paused_at is None):
        return Action(SET_DOWNTIME, due, DOWNTIME_STEP)
    if state.watch.stalled(now, since=state.changed_at):
        if state.paused_at is not None or \
                state.postcopy_requested_at is not None:
            # The force-complete did not help (or the switch to post-copy
            # never began): the guest is still whole on the source.
            return Action(ABORT, reason=STALLED_AFTER_FORCE_COMPLETE)
        return _timeout_action(state, STALLED) or NOTHING_TO_DO
    return NOTHING_TO_DO


def _timeout_action(state, reason):
    """The ``timeout_action`` once; None when it was already taken (the
    switch or the pause is under way: wait for it, watch it stall)."""
    if state.timeout_action == 'abort':
        return Action(ABORT, reason=reason)
    if state.postcopy_requested_at is not None or \
            state.paused_at is not None:
        return None
    if state.permit_post_copy:
        return Action(FORCE_COMPLETE_POSTCOPY, reason=reason)
    return Action(PAUSE_GUEST, reason=reason)


def features(permit_post_copy, permit_auto_converge):
    """The migration features to ask libvirt for (nova's rule): post-copy
    when permitted; auto-converge (throttling the guest's vCPUs) only when
    post-copy is not, since post-copy converges without slowing the
    guest down."""
    if permit_post_copy:
        return frozenset({'postcopy'})
    if permit_auto_converge:
        return frozenset({'auto_converge'})
    return frozenset()


# Failure recovery.
PRECOPY = 'precopy'
POSTCOPY = 'postcopy'
PHASES = (PRECOPY, POSTCOPY)

#: Source power states ``after_failure`` knows (``vmha.virt.power_state``
#: names); "gone" is a domain the source no longer lists.
SOURCE_STATES = ('running', 'paused', 'shutdown', 'crashed', 'suspended',
                 'pending', 'gone')

RESUME_SOURCE = 'resume_source'
REPORT_FAILURE = 'report_failure'

Recovery = collections.namedtuple('Recovery', ['kind', 'cause'])
Recovery.__doc__ = """What to do after a failed migration: ``kind`` is
``none``, ``resume_source`` or ``report_failure``; ``cause`` says why
(the notification's and the log's words)."""

#: (phase, source state) -> recovery.  Before post-copy the source still
#: holds the whole guest: a pause that vmha or libvirt left is undone, a
#: running guest needs nothing, and a source that stopped is the
#: lifecycle path's to judge (a crash is a failure, a shutdown is not).
#: After the post-copy switch the pages the guest dirtied on the
#: destination exist only there: whatever the source says, the VM cannot
#: run again from it.
_AFTER_FAILURE = {
    (PRECOPY, 'running'): Recovery(NONE, 'migration_failed_source_running'),
    (PRECOPY, 'paused'): Recovery(RESUME_SOURCE,
                                  'migration_failed_source_paused'),
    (PRECOPY, 'shutdown'): Recovery(NONE, 'source_stopped_during_migration'),
    (PRECOPY, 'crashed'): Recovery(NONE, 'source_stopped_during_migration'),
    (PRECOPY, 'gone'): Recovery(NONE, 'source_stopped_during_migration'),
    (PRECOPY, 'suspended'): Recovery(NONE, 'source_saved_during_migration'),
    (PRECOPY, 'pending'): Recovery(NONE, 'migration_failed_source_pending'),
}
for _state in SOURCE_STATES:
    _AFTER_FAILURE[(POSTCOPY, _state)] = Recovery(
        REPORT_FAILURE, 'postcopy_migration_failed')
del _state


def after_failure(phase, source_state, paused_by_operator=False):
    """What a failed (or aborted) migration leaves to do on the source.

    ``phase``: ``precopy`` (failed or aborted before the switch to
    post-copy) or ``postcopy``.  ``source_state``: the source domain's
    power state read after the failure (one of ``SOURCE_STATES``).
    ``paused_by_operator``: the guest was paused before the migration
    (or by an operator during it): its pause is theirs, not undone.
    """
    if phase not in PHASES:
        raise ValueError('unknown migration phase %r (expected %s)'
                         % (phase, ' or '.join(PHASES)))
    if source_state not in SOURCE_STATES:
        raise ValueError('unknown source state %r (expected one of %s)'
                         % (source_state, ', '.join(SOURCE_STATES)))
    recovery = _AFTER_FAILURE[(phase, source_state)]
    if recovery.kind == RESUME_SOURCE and paused_by_operator:
        return Recovery(NONE, 'migration_failed_paused_by_operator')
    return recovery


def begin(now, data_gib, downtime_ms=500, steps=10, delay_per_gib=75,
          completion_timeout_per_gib=800, timeout_action='abort',
          permit_post_copy=False, progress_timeout=150, window=None):
    """The state of a migration starting at ``now`` that moves
    ``data_gib`` (see ``data_gib()``), from the ``[migration]``
    options."""
    return MigrationState(
        started_at=now,
        steps=downtime_steps(data_gib, downtime_ms, steps, delay_per_gib),
        deadline=completion_deadline(data_gib, completion_timeout_per_gib),
        watch=ProgressWatch(progress_timeout, window),
        timeout_action=timeout_action,
        permit_post_copy=permit_post_copy)
