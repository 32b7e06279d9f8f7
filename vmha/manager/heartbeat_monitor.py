"""The guest heartbeat monitor: one protocol session per guest that has a
heartbeat channel, connected through the channel hub.

Which VMs: running domains whose live XML has a virtio-serial channel
named ``[heartbeat] channel_name`` (the guest opts in by having it),
unless an operator turned the domain's monitoring off.

How: a ``monitor.Monitor`` (read that module first).  One task runs the
loop.  Socket I/O is the ``ChannelHub``'s (one native thread, never
blocking; it wakes the loop when bytes arrive); the protocol is the
``heartbeat_session.Session``'s (pure: bytes and times in, outputs out);
libvirt calls (the channel's path in the XML, corrective actions) run on
the monitor's ``NativePool``, so a SIGSTOPped QEMU blocks a pool thread,
never the loop.  Each step handles the inbox (lifecycle events, ``ask``
and ``hold`` requests from RPC workers), the finished calls, what the
hub read, and the sessions that are due (the ``schedule``), then writes
every change of the step in one journal transaction (``journal.batch``).

No false failures.  Only a session can fail a guest, and only while the
VM runs: a session is paused while the VM is paused, suspended, saved or
migrating, while an action voted through vmha runs (``hold``) and after a
guest reboot until it registers again; a VM that stops, shuts down,
migrates away or is undefined is forgotten without a failure; a closed
connection is never a failure (vmha connects again with backoff); a
challenge the host sent late counts no miss (the session's guard).

Failures.  A session's ``Failure`` is one failure episode: the guest's
corrective action, capped by ``[heartbeat] max_action``, runs through the
``actions.ActionPolicy`` shared with the guest-agent monitor (one budget
and one ledger per VM).  ``log``, or an action past the budget, reports
to Masakari (``QEMU_GUEST_AGENT_ERROR`` / ``STOPPED_FAILED``, which it
recovers); ``reboot`` is a hard reset by vmha, not reported to Masakari
(the ``instance.heartbeat`` notification says so); ``stop`` powers the VM
off and records the failure as ``LIFECYCLE`` / ``STOPPED_DESTROYED``,
which Masakari records and does not recover.  A guest already in an
episode another monitor opened (qemu-ga) is not acted on again.
"""

import collections
import logging
import secrets
import time

from vmha import backoff
from vmha import concurrency
from vmha import supervision
from vmha.journal import batch
from vmha.manager import batched
from vmha.manager import decisions
from vmha.manager import heartbeat_session as hsession
from vmha.manager import heartbeat_store
from vmha.manager import heartbeat_tracker as tracker
from vmha.manager import monitor
from vmha.manager import schedule as schedule_lib
from vmha.objects import fields
from vmha.objects import heartbeat as heartbeat_objects
from vmha.timestamps import utc
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt import power_state
from vmha.virt.libvirt import channel

LOG = logging.getLogger(__name__)

HEARTBEAT = supervision.HEARTBEAT
State = fields.HeartbeatState
Cause = fields.FailureCause
WRITE_WINDOW = 0.2  # seconds changes that send nothing may wait
REFRESH_INTERVAL = 60.0  # seconds between two listings of the domains
# A migration's iterations keep the session paused; this long after the
# last one (no end event seen) it resumes.
MIGRATION_QUIET = 30.0
# Seconds a rebooted guest has, at least, to register again.  The granted
# ``restart_secs`` is capped by ``[heartbeat] max_notice`` (60 s by
# default), shorter than many boots: a slow boot must not look like a
# hang, so a reboot waits for the longer of the two.
DEFAULT_RESTART = 300.0
ASK_GRACE = 1.0
# Seconds a corrective action may take before the failure goes to
# Masakari anyway (a reset of a SIGSTOPped QEMU blocks until SIGCONT).
ACTION_BOUND = 30.0
# Sessions handled in one turn between two reads of what the hub got.
COLLECT_EVERY = 32  # seconds ``ask`` waits beyond the timeout it passes on

# The guest's words for corrective actions -> ActionPolicy's.
_POLICY_ACTIONS = {'log': 'notify', 'reboot': 'reset', 'stop': 'stop'}
_DRASTIC = ('log', 'reboot', 'stop')
# What a failure vmha stopped itself is reported as: Masakari records it
# and does not recover it (an operator's destroy looks the same to it).
STOPPED_BY_VMHA = ('LIFECYCLE', 'STOPPED_DESTROYED')
_CAUSES = {'heartbeat_lost': Cause.HEARTBEAT_LOST,
           'guest_unhealthy': Cause.GUEST_UNHEALTHY}

_PAUSING = frozenset({
    ev.EVENT_LIFECYCLE_PAUSED, ev.EVENT_LIFECYCLE_SUSPENDED,
    ev.EVENT_LIFECYCLE_POSTCOPY_STARTED,
    ev.EVENT_LIFECYCLE_MIGRATION_COMPLETED})
_LEAVING = frozenset({
    ev.EVENT_LIFECYCLE_STOPPED, ev.EVENT_LIFECYCLE_UNDEFINED,
    ev.EVENT_LIFECYCLE_SHUTTING_DOWN, ev.EVENT_LIFECYCLE_CRASHED})
_NOT_A_BOOT = frozenset({'STARTED_MIGRATED', 'STARTED_RESTORED',
                         'STARTED_FROM_SNAPSHOT'})
_INBOX = (ev.InstanceEvent, ev.ConnectionRestoredEvent,
          ev.ResyncRequiredEvent)

Answer = collections.namedtuple('Answer', ['result', 'reason'])
Answer.__doc__ = """What the guest said to an ``action_notify``: result
'accept', 'reject' or 'timeout' (no answer: a vote then counts as
accepted), and its reason."""

Settings = collections.namedtuple(
    'Settings', ['channel_name', 'max_action', 'cut_off_time',
                 'reconnect_interval', 'reconnect_max_interval'],
    defaults=['org.vmha.heartbeat.0', 'reboot', 60.0, 1.0, 5.0])
Settings.__doc__ = """The monitor's own ``[heartbeat]`` options (the
session's are its ``Bounds``)."""


def cap_action(wished, max_action):
    """``wished`` made no more drastic than ``max_action`` (an unknown
    wish counts as the mildest)."""
    if wished not in _DRASTIC:
        return 'log'
    return _DRASTIC[min(_DRASTIC.index(wished), _DRASTIC.index(max_action))]


class _Ask:
    def __init__(self, uuid, event, notification, phase, timeout, reply,
                 action_id=None):
        self.uuid = uuid
        self.action_id = action_id
        self.event = event
        self.notification = notification
        self.phase = phase
        self.timeout = timeout
        self.reply = reply


class _Hold:
    def __init__(self, uuid, why, seconds):
        self.uuid = uuid
        self.why = why
        self.seconds = seconds


class HeartbeatMonitor(monitor.Monitor):
    """:param driver: the virt driver (``list_instances``,
        ``channel_path``, the corrective actions)
    :param journal: the Journal
    :param reporter: the ``failure_monitor.Reporter``
    :param selector: the ``selection.Selector`` (operator choices)
    :param pool: a ``NativePool`` for libvirt calls (tests: inline)
    :param backend: the concurrency backend
    :param hub: the ``ChannelHub`` (its ``wake`` wakes this loop)
    :param bounds: the session's ``heartbeat_session.Bounds``
    :param settings: ``Settings``
    :param action_policy: the ``actions.ActionPolicy`` shared with the
        guest-agent monitor
    """

    check_name = 'heartbeat'
    description = 'guest heartbeat monitor loop'
    log_name = 'Heartbeat monitor'
    thread_name = 'vmha-heartbeat'
    lost_writes_hint = 'the guests register again'

    def __init__(self, driver, journal, reporter, selector, pool, backend,
                 hub, bounds, settings, action_policy,
                 clock=time.monotonic, wall=time.time,
                 nonce=secrets.token_hex):
        super().__init__(pool, backend, clock)
        self._driver = driver
        self._reporter = reporter
        self._store = heartbeat_store.HeartbeatStore(journal)
        self._selector = selector
        self._hub = hub
        self._bounds = bounds
        self._settings = settings
        self._actions = action_policy
        self._wall = wall
        self._nonce = nonce
        self._guests = {}  # uuid -> tracker.Beating
        self._no_channel = set()  # running domains without the channel
        # Channel paths read in batches, one job at a time (thousands of
        # domains at start-up).
        self._paths = batched.Batcher(
            self._pool.submit, 'path', driver.channel_paths,
            self._settings.channel_name)
        self.writes = batch.WriteBatch(journal, self.log_name, WRITE_WINDOW,
                                       clock)
        self._schedule = schedule_lib.Schedule(origin=clock())
        self._next_refresh = None
        self._refreshing = False
        self._on_finished = {'path': self._on_path,
                             'action': self._on_action}
        self.failures_total = collections.Counter()  # by cause
        self.observe_latency = None  # callable(seconds), the histogram

    @classmethod
    def from_conf(cls, conf, driver, journal, reporter, selector, backend,
                  action_policy):
        group = conf.heartbeat
        bounds = hsession.Bounds(
            min_interval=group.min_interval,
            max_interval=group.max_interval,
            default_interval=group.default_interval,
            miss_threshold=group.miss_threshold,
            max_action=group.max_action, max_notice=group.max_notice,
            max_messages_per_second=group.max_messages_per_second,
            answer_window=group.answer_window)
        settings = Settings(group.channel_name, group.max_action,
                            group.cut_off_time, group.reconnect_interval,
                            group.reconnect_max_interval)
        pool = concurrency.NativePool(backend, 8, name='vmha-heartbeat')
        hub = channel.ChannelHub(pool.wake, name='vmha-channels')
        return cls(driver, journal, reporter, selector, pool, backend, hub,
                   bounds, settings, action_policy)

    # --- the monitor contract ----------------------------------------------

    def accepts(self, event):
        return isinstance(event, _INBOX)

    def load(self):
        """The last run's rows: ``vmha-status`` shows them at once; the
        first step lists the domains and connects."""
        for uuid, row in self._store.all().items():
            guest = tracker.Beating(uuid, row.name, self._wall())
            guest.restore(row)
            guest.has_channel = True
            self._actions.remember(uuid, guest.actions)
            self._guests[uuid] = guest
        self._next_refresh = self.first_listing_at()

    @property
    def hub(self):
        """The ``ChannelHub`` (a supervised loop of its own: health)."""
        return self._hub

    def start(self):
        self._hub.start()
        super().start()

    def stop(self, timeout=10):
        super().stop(timeout)
        self._hub.stop()

    def wake_in(self):
        now = self._clock()
        due = [self._next_refresh, now + HEARTBEAT,
               self._schedule.next_due(), self.writes.next_commit_at()]
        return max(0.0, min(d for d in due if d is not None) - now)

    def flush(self):
        self.writes.flush()

    def step(self, jobs=()):
        now = self._clock()
        self.stamp_turnover()
        if self.take_release():
            self._next_refresh = min(self._next_refresh, now)
        while self._inbox:
            self._on_item(self._inbox.popleft(), now)
        for job in list(jobs) + self._pool.collect():
            self._guarded(job.key[1], self._finish_one, job)
        self._collect(now)
        if now >= self._next_refresh and not self._refreshing:
            self._refreshing = True
            self._pool.submit(('list', None), self._driver.list_instances)
        handled = 0
        for entry in self._schedule.pop_due(now):
            guest = self._guests.get(entry.uuid)
            if guest is not None and guest.planned == entry.when:
                guest.planned = None
                self._guarded(guest.uuid, self._due, guest, now)
                handled += 1
                if handled % COLLECT_EVERY == 0:
                    # Guests challenged at the start of a long turn have
                    # answered by now: hear them before the rest.
                    self._collect(self._clock())
        if handled >= COLLECT_EVERY:
            self._collect(self._clock())
        self.writes.commit_due()

    def _collect(self, now):
        for event in self._hub.collect():
            self._guarded(event.key[0], self._on_channel, event, now)

    def _guarded(self, uuid, function, *args):
        """One guest's trouble (a bug, hostile input the session let
        through) must never stop the others."""
        try:
            function(*args)
        except Exception:
            guest = self._guests.get(uuid)
            LOG.exception('%s (%s): heartbeat handling failed; the other '
                          'guests go on', guest.name if guest else '-',
                          uuid or '-')

    # --- requests from other threads (the actions' RPC workers) -----------

    def ask(self, uuid, event, notification, phase, timeout,
            action_id=None):
        """Send ``action_notify`` to ``uuid``'s guest and wait (blocking
        the calling greenthread or thread, never the loop) for its
        ``Answer``, at most ``timeout`` seconds (then result 'timeout').
        A VM without a registered guest answers 'accept' at once.
        ``action_id``: the action's (the protocol wants one id for every
        message of one action), else a fresh one."""
        done = self._backend.event()
        box = []

        def reply(answer):
            box.append(answer)
            done.set()
        self._inbox.append(_Ask(uuid, event, notification, phase, timeout,
                                reply, action_id))
        self._pool.wake()
        done.wait(timeout + ASK_GRACE)
        if box:
            return box[0]
        return Answer('timeout', 'no answer within %.0fs' % timeout)

    def ask_async(self, uuid, event, notification, phase, timeout, reply):
        """``ask`` without waiting: ``reply(Answer)`` is called on the
        monitor's loop."""
        self._inbox.append(_Ask(uuid, event, notification, phase, timeout,
                                reply))
        self._pool.wake()

    def hold(self, uuid, why, seconds):
        """Stop challenging ``uuid``'s guest (no misses counted) until it
        registers again or ``seconds`` pass: an action runs on it."""
        self._inbox.append(_Hold(uuid, why, seconds))
        self._pool.wake()

    def registration(self, uuid):
        """The granted ``init_ack`` fields of ``uuid``'s guest (a dict),
        or None while no guest is registered."""
        guest = self._guests.get(uuid)
        granted = guest.granted if guest is not None else None
        return dict(granted) if granted else None

    def _on_item(self, item, now):
        if isinstance(item, _Ask):
            self._on_ask(item, now)
        elif isinstance(item, _Hold):
            guest = self._guests.get(item.uuid)
            if guest is not None:
                self._pause(guest, tracker.HOLD, now + item.seconds, now,
                            item.why)
        elif isinstance(item, ev.InstanceEvent):
            self._on_event(item, now)
        else:
            self._next_refresh = now  # reconnected to libvirt, events lost

    def _on_ask(self, item, now):
        guest = self._guests.get(item.uuid)
        if guest is None or guest.session is None or \
                guest.session.granted is None:
            item.reply(Answer('accept', 'no heartbeat guest'))
            return
        action_id = item.action_id or secrets.token_hex(16)
        # One action asks several times under one id: each ask is its
        # (id, notification, phase), as the session matches answers.
        guest.asks[(action_id, item.notification, item.phase)] = item.reply
        self._handle(guest, guest.session.ask(
            action_id, item.event, item.notification, item.phase,
            item.timeout, now), now)

    # --- the domains and their channels -----------------------------------

    def _finish_one(self, job):
        kind, uuid = job.key
        if kind == 'list':
            self._refreshing = False
            self._next_refresh = self._clock() + REFRESH_INTERVAL
            self._reconcile(job)
            return
        if kind == self._paths.batch_kind:
            for one in self._paths.finished(job):
                self._guarded(one.key[1], self._finish_one, one)
            return
        guest = self._guests.get(uuid)
        if guest is not None:
            self._on_finished[kind](guest, job)

    def _reconcile(self, job):
        if job.error is not None:
            LOG.warning('Heartbeat monitor cannot list domains: %s',
                        job.error)
            return
        now = self._clock()
        live = {}
        for info in job.result:
            if info.power_state in (power_state.RUNNING, power_state.PAUSED):
                live[info.uuid] = info
        for uuid in list(self._guests):
            if uuid not in live:
                self._forget(uuid, 'not running')
        self._no_channel &= set(live)
        for uuid, info in live.items():
            if uuid in self._no_channel:
                continue
            guest = self._guests.get(uuid)
            if guest is None:
                guest = self._track(uuid, info.name)
            if info.power_state == power_state.PAUSED:
                self._pause(guest, tracker.VM_PAUSED, None, now,
                            info.state_reason)
            if guest.key is None and guest.cut_off_until is None and \
                    guest.reconnect_at is None:
                self._discover(guest, pump=False)
        self._paths.pump()

    def _track(self, uuid, name):
        guest = tracker.Beating(uuid, name, self._wall())
        self._guests[uuid] = guest
        return guest

    def _discover(self, guest, pump=True):
        """Read the channel's socket path from the live XML (on the pool,
        in a batch: the path may change with every start)."""
        if guest.uuid in self._paths:
            return
        self._paths.add(guest.uuid)
        if pump:
            self._paths.pump()

    def _on_path(self, guest, job):
        if isinstance(job.error, exception.DomainNotFound):
            self._forget(guest.uuid, 'undefined')
            return
        if job.error is not None:
            LOG.info('%s (%s): cannot read its heartbeat channel (%s); '
                     'trying again on the next refresh', guest.name,
                     guest.uuid, job.error)
            return
        if not job.result:
            self._forget(guest.uuid, None)
            self._no_channel.add(guest.uuid)
            return
        if guest.has_channel is not True or guest.path != job.result:
            LOG.info('%s (%s): heartbeat channel at %s', guest.name,
                     guest.uuid, job.result)
        guest.has_channel = True
        guest.path = job.result
        if guest.key is None and guest.cut_off_until is None:
            self._connect(guest, self._clock())

    def _connect(self, guest, now):
        if self._selector.disabled(guest.uuid):
            LOG.debug('%s (%s): monitoring off; heartbeat not served',
                      guest.name, guest.uuid)
            return
        guest.reconnect_at = None
        guest.attempts += 1
        guest.key = (guest.uuid, guest.attempts)
        self._hub.open(guest.key, guest.path)

    def _on_channel(self, event, now):
        guest = self._guests.get(event.key[0])
        if guest is None or guest.key != event.key:
            if event.kind in ('connected', 'data'):
                self._hub.close(event.key)  # an older connection's
            return
        if event.kind == 'connected':
            guest.reconnect_delay = None
            guest.session = hsession.Session(
                self._bounds, now, nonce=self._nonce,
                name='%s (%s)' % (guest.name, guest.uuid))
            guest.session_paused = None
            guest.answers_seen = None
            LOG.info('%s (%s): heartbeat channel connected', guest.name,
                     guest.uuid)
            self._set(guest, guest.session.state, 'channel connected')
            self._sync_pause(guest, now, 'connected while paused')
            self._replan(guest)
        elif event.kind == 'data':
            if guest.session is not None:
                self._handle(guest, guest.session.feed(event.data, now),
                             now)
        else:  # 'closed', 'failed'
            self._disconnected(guest, '%s: %s' % (event.kind, event.data),
                               now)

    def _disconnected(self, guest, why, now):
        """The connection is gone (never a failure): connect again with
        backoff while the domain runs."""
        was_connected = guest.session is not None
        self._drop_connection(guest, why)
        if was_connected:
            LOG.info('%s (%s): heartbeat channel %s; connecting again',
                     guest.name, guest.uuid, why)
            self._set(guest, State.DISCONNECTED, why)
        else:
            LOG.debug('%s (%s): heartbeat channel %s', guest.name,
                      guest.uuid, why)
        if guest.running:
            delay = guest.reconnect_delay
            delay = self._settings.reconnect_interval if delay is None \
                else min(delay * 2, self._settings.reconnect_max_interval)
            guest.reconnect_delay = delay
            guest.reconnect_at = now + backoff.jittered(delay)
        self._replan(guest)

    def _drop_connection(self, guest, why):
        if guest.key is not None:
            self._hub.close(guest.key)
        guest.key = None
        guest.session = None
        guest.session_paused = None
        guest.granted = None
        asks, guest.asks = guest.asks, {}
        for reply in asks.values():
            reply(Answer('timeout', 'heartbeat channel closed (%s)' % why))

    def _forget(self, uuid, why):
        """The VM left (stopped, migrated away, undefined): no failure."""
        guest = self._guests.pop(uuid, None)
        if guest is None:
            return
        self._drop_connection(guest, why or 'forgotten')
        if why:
            LOG.info('%s (%s): heartbeat no longer served: %s', guest.name,
                     uuid, why)
        self.writes.add(lambda tx: self._store.forget(tx, uuid))

    # --- lifecycle events --------------------------------------------------

    def _on_event(self, event, now):
        guest = self._guests.get(event.uuid)
        if isinstance(event, ev.LifecycleEvent):
            transition, detail = event.transition, event.vir_domain_event
            if transition in _LEAVING or detail == 'STOPPED_MIGRATED':
                self._no_channel.discard(event.uuid)
                self._forget(event.uuid, detail)
            elif transition == ev.EVENT_LIFECYCLE_STARTED:
                self._no_channel.discard(event.uuid)
                if guest is None:
                    guest = self._track(event.uuid, event.name)
                guest.running = True
                if detail not in _NOT_A_BOOT:
                    guest.booted_at = self._wall()
                if detail == 'STARTED_MIGRATED':
                    self._pause(guest, tracker.MIGRATING, None, now, detail)
                self._discover(guest)
            elif transition == ev.EVENT_LIFECYCLE_RESUMED:
                if guest is None:
                    if event.uuid in self._no_channel:
                        return
                    guest = self._track(event.uuid, event.name)
                guest.running = True
                self._unpause(guest, (tracker.VM_PAUSED, tracker.MIGRATING),
                              now, detail)
                if guest.key is None and guest.cut_off_until is None:
                    self._discover(guest)  # a switch-over resets it
            elif transition in _PAUSING and guest is not None:
                self._pause(guest, tracker.VM_PAUSED, None, now, detail)
        elif guest is None:
            return
        elif isinstance(event, ev.RebootEvent):
            self._pause(guest, tracker.REBOOT, now + self._restart(guest),
                        now, 'guest reboot')
        elif isinstance(event, ev.MigrationIterationEvent):
            self._pause(guest, tracker.MIGRATING, now + MIGRATION_QUIET,
                        now, 'migrating')
        elif isinstance(event, ev.JobCompletedEvent):
            self._unpause(guest, (tracker.MIGRATING,), now, 'job completed')
            self._next_refresh = now

    # --- pauses --------------------------------------------------------------

    def _pause(self, guest, reason, until, now, why):
        guest.pauses[reason] = until
        self._sync_pause(guest, now, why)
        self._replan(guest)

    def _unpause(self, guest, reasons, now, why):
        if any(guest.pauses.pop(r, 0) != 0 for r in reasons):
            self._sync_pause(guest, now, why)
            self._replan(guest)

    def _sync_pause(self, guest, now, why):
        """Pause or resume the session to match ``guest.pauses``.

        While any pause that only an event ends is on (the VM paused,
        migrating) the session waits without a limit; with only pauses a
        registration ends (an action, a reboot), it waits until the guest
        registers again or the latest of them runs out, which the
        session itself watches."""
        session = guest.session
        if session is None:
            return
        pauses = guest.pauses
        if any(r not in tracker.ENDED_BY_INIT for r in pauses):
            wanted = ('event', None)
        elif pauses:
            wanted = ('init', max(pauses.values()))
        else:
            wanted = None
        if wanted == guest.session_paused:
            return
        guest.session_paused = wanted
        if wanted is None:
            self._handle(guest, session.resume(now), now)
        elif wanted[1] is None:
            self._handle(guest, session.pause(now, why), now)
        else:
            self._handle(guest, session.pause(now, why, max(
                0.0, wanted[1] - now)), now)

    # --- what is due -------------------------------------------------------

    def _replan(self, guest):
        times = [guest.reconnect_at, guest.cut_off_until,
                 guest.acting_until]
        times.extend(t for r, t in guest.pauses.items()
                     if t is not None and r not in tracker.ENDED_BY_INIT)
        if guest.session is not None:
            times.append(guest.session.next_due())
        times = [t for t in times if t is not None]
        when = min(times) if times else None
        if when is not None and when != guest.planned:
            guest.planned = when
            self._schedule.plan(when, guest.uuid)

    def _due(self, guest, now):
        if guest.cut_off_until is not None and now >= guest.cut_off_until:
            guest.cut_off_until = None
            self._discover(guest)
        if guest.acting_until is not None and now >= guest.acting_until:
            self._action_overdue(guest)
        if guest.reconnect_at is not None and now >= guest.reconnect_at:
            guest.reconnect_at = None
            if guest.path and guest.key is None:
                self._connect(guest, now)
        ended = [r for r, until in guest.pauses.items()
                 if until is not None and now >= until
                 and r not in tracker.ENDED_BY_INIT]
        if ended:
            self._unpause(guest, ended, now, '%s ran out' % ', '.join(ended))
        if guest.session is not None:
            self._handle(guest, guest.session.tick(now), now)
        self._replan(guest)

    # --- what a session says -------------------------------------------------

    def _handle(self, guest, outputs, now):
        session = guest.session
        failing = any(isinstance(o, hsession.Failure) for o in outputs)
        for output in outputs:
            if isinstance(output, hsession.Send):
                if not self._hub.send(guest.key, output.data):
                    self._cut_off(guest, 'the guest does not read what the '
                                  'host writes (%d bytes waiting)'
                                  % self._hub.pending_out(guest.key), now)
                    return
                if b'"type":"challenge"' in output.data:
                    # Real time, not the loop's clock: what the histogram
                    # shows is how long an answer really took.
                    guest.challenge_sent_at = time.monotonic()
            elif isinstance(output, hsession.StateChange):
                self._state_change(guest, output, now, failing)
            elif isinstance(output, hsession.Failure):
                self._failure(guest, output)
            elif isinstance(output, hsession.Recovered):
                self._recovered(guest, output.reason)
            elif isinstance(output, hsession.Answer):
                reply = guest.asks.pop((output.action_id,
                                        output.notification,
                                        output.phase), None)
                if reply is not None:
                    reply(Answer(output.result, output.reason))
            elif isinstance(output, hsession.CutOff):
                self._cut_off(guest, output.reason, now)
                return
            elif isinstance(output, hsession.Exited):
                LOG.info('%s (%s): the guest left the heartbeat on '
                         'purpose: %s', guest.name, guest.uuid,
                         output.reason)
        if session is guest.session and session is not None:
            answered = session.last_answer_at
            if answered != guest.answers_seen:
                guest.answers_seen = answered
                if answered is not None and \
                        guest.challenge_sent_at is not None and \
                        self.observe_latency is not None:
                    self.observe_latency(max(
                        0.0, time.monotonic() - guest.challenge_sent_at))
                    guest.challenge_sent_at = None
        self._replan(guest)

    def _state_change(self, guest, change, now, failing):
        session = guest.session
        old, new = guest.state, change.new
        granted = session.granted if session is not None else None
        guest.granted = dict(granted) if granted else None
        if granted:
            guest.interval = session.interval
            guest.action = granted.get('corrective_action')
        if new == State.ENABLING and change.old != State.PAUSED:
            guest.registered_at = self._wall()
        if (change.old == State.PAUSED and new != State.PAUSED) or (
                new == State.ENABLING):
            # Registered again, or the hold ran out: what waited is over.
            # A registration ends it from any state: a reboot's client
            # says ``exit`` before libvirt's REBOOT event comes, so the
            # new boot registers from ``exited``, not ``paused``.
            for reason in tracker.ENDED_BY_INIT:
                guest.pauses.pop(reason, None)
            guest.session_paused = None
            self._sync_pause(guest, now, 'still paused')
        if new == State.FAILED and failing:
            guest.failed_from = old
            guest.state = new
            return  # the Failure that comes with it says what was done
        if new == State.CUT_OFF:
            return  # the CutOff that comes with it
        if new == State.ENABLED and guest.cause is not None:
            self._recovered(guest, change.reason)
        LOG.info('%s (%s): heartbeat %s -> %s (%s)', guest.name, guest.uuid,
                 old, new, change.reason)
        priority = (fields.NotificationPriority.ERROR if new == State.FAILED
                    else fields.NotificationPriority.INFO)
        self._set(guest, new, change.reason, notify=(old != new),
                  priority=priority)

    def _set(self, guest, state, reason, notify=False, action_taken=None,
             priority=fields.NotificationPriority.INFO, old=None):
        old = guest.state if old is None else old
        guest.state = state
        guest.reason = reason
        session = guest.session
        if session is not None:
            guest.misses = session.misses
            if session.last_answer_at is not None:
                guest.last_answer_at = self._wall() - (
                    self._clock() - session.last_answer_at)
        guest.changed_at = self._wall()
        row = guest.row()
        self.writes.add(lambda tx: self._store.save(tx, row))
        if notify:
            notification = heartbeat_objects.heartbeat_notification(
                self._reporter.host, guest.uuid, guest.name, old, state,
                reason, guest.misses, utc(self._wall()),
                interval=guest.interval, action=guest.action,
                action_taken=action_taken, priority=priority)
            self.writes.add(lambda tx: self._reporter.send(tx, notification),
                            urgent=True)

    # --- failures and corrective actions -----------------------------------

    def _failure(self, guest, failure):
        cause = _CAUSES.get(failure.cause, Cause.HEARTBEAT_LOST)
        self.failures_total[cause] += 1
        evidence = '%s (%s)' % (failure.reason, ', '.join(
            '%s=%s' % item for item in sorted(
                (failure.evidence or {}).items())))
        old = guest.failed_from or State.ENABLED
        error = fields.NotificationPriority.ERROR
        if self._selector.disabled(guest.uuid):
            LOG.warning('%s (%s): heartbeat failed: %s; not reported: an '
                        'operator turned its monitoring off', guest.name,
                        guest.uuid, evidence)
            self._set(guest, State.FAILED, evidence + '; not reported',
                      notify=True, priority=error, old=old)
            return
        other = self._reporter.store.failure_cause(guest.uuid)
        if other is not None:
            # Reported already (by the guest-agent monitor, the event
            # path, or this monitor before a restart): Masakari has it,
            # and an action of vmha's now would race its recovery.
            guest.cause = other if other in _CAUSES.values() else None
            LOG.warning('%s (%s): heartbeat failed: %s; already in a '
                        'failure episode (%s): not reported again, no '
                        'action', guest.name, guest.uuid, evidence, other)
            self._set(guest, State.FAILED, '%s; already reported as %s'
                      % (evidence, other), notify=True, priority=error,
                      old=old)
            return
        wished = cap_action(failure.action or guest.action,
                            self._settings.max_action)
        choice = self._actions.choose(_POLICY_ACTIONS[wished],
                                      guest.actions, guest.booted_at,
                                      uuid=guest.uuid)
        guest.actions = list(choice.actions)
        if choice.function is None:
            taken = 'log'
            guest.cause = cause
            self._report(guest, cause, evidence, decisions.GUEST_HUNG)
        else:
            taken = wished
            acted_at = self._wall()
            guest.actions.append(acted_at)
            self._actions.record(guest.uuid, acted_at)
            self._pool.submit(('action', guest.uuid), choice.function,
                              guest.uuid)
            guest.acting = (wished, cause, evidence)
            guest.acting_until = self._clock() + ACTION_BOUND
            self._replan(guest)
        LOG.warning('%s (%s): heartbeat failed: %s; %s', guest.name,
                    guest.uuid, evidence, choice.why)
        self._set(guest, State.FAILED, '%s; %s' % (evidence, choice.why),
                  notify=True, action_taken=taken, priority=error, old=old)

    def _on_action(self, guest, job):
        if guest.acting is None:
            LOG.info('%s (%s): corrective action ended after %.0fs (%s); '
                     'its failure was reported already', guest.name,
                     guest.uuid, job.finished - job.submitted,
                     job.error or 'done')
            return
        action, cause, evidence = guest.acting
        guest.acting = guest.acting_until = None
        if job.error is None:
            LOG.info('%s (%s): corrective %s done', guest.name, guest.uuid,
                     action)
            if action == 'stop':
                self._report(guest, cause, evidence + '; stopped by vmha',
                             STOPPED_BY_VMHA)
            else:
                now = self._clock()
                self._pause(guest, tracker.REBOOT, now + self._restart(guest),
                            now, 'reset by vmha')
            return
        why = 'corrective %s failed: %s' % (action, job.error)
        LOG.error('%s (%s): %s; reporting the failure', guest.name,
                  guest.uuid, why)
        guest.cause = cause
        self._report(guest, cause, '%s; %s' % (evidence, why),
                     decisions.GUEST_HUNG)
        self._set(guest, guest.state, why + '; failure reported',
                  notify=True, action_taken='log',
                  priority=fields.NotificationPriority.ERROR)

    def _action_overdue(self, guest):
        """The corrective action still runs ``ACTION_BOUND`` seconds on:
        libvirt waits on a QEMU that does not answer (SIGSTOPped, say),
        so vmha cannot recover the guest itself: Masakari must."""
        action, cause, evidence = guest.acting
        guest.acting = guest.acting_until = None
        why = ('corrective %s not done after %.0fs (QEMU does not answer)'
               % (action, ACTION_BOUND))
        LOG.error('%s (%s): %s; reporting the failure', guest.name,
                  guest.uuid, why)
        guest.cause = cause
        self._report(guest, cause, '%s; %s' % (evidence, why),
                     decisions.GUEST_HUNG)
        self._set(guest, guest.state, why + '; failure reported',
                  notify=True, action_taken='log',
                  priority=fields.NotificationPriority.ERROR)

    def _restart(self, guest):
        """Seconds a rebooting guest has to register again."""
        granted = (guest.granted or {}).get('restart_secs') or 0
        return max(granted, DEFAULT_RESTART)

    def _recovered(self, guest, why):
        cause, guest.cause = guest.cause, None
        if cause is not None:
            LOG.info('%s (%s): heartbeat healthy again (%s): failure '
                     'episode (%s) closed', guest.name, guest.uuid, why,
                     cause)
            self.writes.add(lambda tx: self._reporter.close_episode(
                tx, guest.uuid, cause))

    def _report(self, guest, cause, evidence, pair):
        verdict = decisions.Verdict(cause, pair[0], pair[1],
                                    'guest heartbeat: ' + evidence, False)
        when = self._wall()
        self.writes.add(lambda tx: self._reporter.report_failure(
            tx, guest.uuid, guest.name, verdict, when), urgent=True)

    def _cut_off(self, guest, reason, now):
        LOG.warning('%s (%s): heartbeat guest cut off for %.0fs: %s',
                    guest.name, guest.uuid, self._settings.cut_off_time,
                    reason)
        old = guest.state
        self._drop_connection(guest, 'cut off')
        guest.cut_off_until = now + self._settings.cut_off_time
        guest.reconnect_at = None
        self._set(guest, State.CUT_OFF, reason, notify=True, old=old,
                  priority=fields.NotificationPriority.WARN)
        self._replan(guest)

    # --- what operators see ------------------------------------------------

    def status(self):
        """One dict per VM with a heartbeat channel."""
        return [guest.status() for guest in list(self._guests.values())
                if guest.has_channel]
