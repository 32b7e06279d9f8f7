"""The guest-agent monitor: finds guests that hang while libvirt says
"running", and reports each hang once.

Which VMs: running, monitored domains (``selection``) whose XML has a
``org.qemu.guest_agent.0`` channel, unless their metadata says
``<vmha:guest-agent enabled="false"/>``.  Per-VM interval, timeout,
threshold and action come from that element, else from ``[guest_agent]``.

How: a ``monitor.Monitor`` (read that module first): one task runs the
loop; every libvirt call (XML, pings, counters, corrective actions) runs
on a ``NativePool`` of native threads, so a slow guest never delays
another and the eventlet hub never blocks.  Pings have two budgets:
healthy guests' (``max_concurrent_pings``) and suspects'
(``max_suspect_pings``: guests known to be failing, whose pings libvirt
holds ~5 s, and any ping out longer than ``SLOW_AFTER``), so hung
guests never hold the slots healthy guests wait for.  Events reach the
loop through an inbox: the listener only appends and wakes it.  A VM
whose ping is still out is not pinged again.  Each step handles the
inbox, the finished calls and what is due (``schedule``), then writes
every change of the step (states, notifications) in one journal
transaction (``journal.batch``).  A transaction that fails keeps its
changes for the next try; the loop wakes at least every ``HEARTBEAT``
seconds, so a stale turnover means a wedged monitor (health's
``guest_agent`` check).
The per-VM view is ``guest_tracker.Watched``, the counters are read by
``evidence_gathering``, corrective actions are bounded by ``actions``.

Counting failures.  A first failure is counted when libvirt answers with
an error (a ping queued in a busy libvirtd is late, not failed).  Once a
guest failed, libvirt holds its next pings ~5 s whatever the timeout:
then a ping still unanswered ``timeout`` (+0.5 s) after it was sent
counts as failed, and an answer that comes later still counts as a
recovery.  At ``failure_threshold`` the monitor reads host-side counters
and judges (``evidence``).  See ``guest_states`` for the machine.

Why this module is over 400 lines: what is left here is the monitor's
decisions (events, pings, verdicts, and the machine's side effects),
which read and change one ``Watched`` within one step and one commit;
cut apart, each half would reach into the other's state.  Everything
that stands alone lives beside it: the schedule, the tracker, the
evidence gathering, the action policy and the batched writer.
"""

import logging
import time

from vmha import concurrency
from vmha import supervision
from vmha.journal import batch
from vmha.manager import actions as actions_lib
from vmha.manager import batched
from vmha.manager import decisions
from vmha.manager import evidence
from vmha.manager import evidence_gathering
from vmha.manager import failure_monitor
from vmha.manager import guest_states as gs
from vmha.manager import guest_store
from vmha.manager import guest_tracker
from vmha.manager import monitor
from vmha.manager import schedule as schedule_lib
from vmha.manager import selection
from vmha.objects import fields
from vmha.objects import guest_health
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt import power_state

LOG = logging.getLogger(__name__)

PING = {'execute': 'guest-ping'}
DEADLINE_GRACE = 0.5
# A ping out this long is slow (healthy agents answer in milliseconds):
# from then on it holds a suspect's slot, not a healthy guest's.
SLOW_AFTER = 0.1
JUDGE_BOUND = 10  # seconds the counters for a verdict may take
# Changes that send nothing (a guest became healthy) are committed at most
# this often; notifications are committed at once.
WRITE_WINDOW = 0.2
HEARTBEAT = supervision.HEARTBEAT
_ERR_OPERATION_INVALID = 55  # "domain is not running": not the guest's doing

_SUPPRESSING = frozenset({
    ev.EVENT_LIFECYCLE_PAUSED, ev.EVENT_LIFECYCLE_SUSPENDED,
    ev.EVENT_LIFECYCLE_POSTCOPY_STARTED,
    ev.EVENT_LIFECYCLE_MIGRATION_COMPLETED,
    ev.EVENT_LIFECYCLE_SHUTTING_DOWN, ev.EVENT_LIFECYCLE_CRASHED})
# A live migration's guest now runs on this host.
_ARRIVED = frozenset({'RESUMED_MIGRATED', 'RESUMED_POSTCOPY'})
_GONE = frozenset({ev.EVENT_LIFECYCLE_STOPPED, ev.EVENT_LIFECYCLE_UNDEFINED})
_INBOX_EVENTS = (ev.InstanceEvent, ev.ConnectionRestoredEvent,
                 ev.ResyncRequiredEvent)

HUNG_VERDICT = decisions.Verdict(
    fields.FailureCause.GUEST_HUNG, 'QEMU_GUEST_AGENT_ERROR',
    'STOPPED_FAILED', None, False)

Settings = guest_tracker.Settings


class GuestAgentMonitor(monitor.Monitor):
    """:param driver: the virt driver
    :param journal: the Journal
    :param reporter: the failure_monitor.Reporter (failure notifications
        and episodes, shared with the event path and the audit)
    :param selector: the selection.Selector
    :param pool: a ``vmha.concurrency.NativePool`` (tests pass an inline
        one)
    :param backend: the concurrency backend (spawn, native_sleep)
    :param defaults: the ``Settings`` from ``[guest_agent]``
    """

    check_name = 'guest_agent'
    description = 'guest-agent monitor loop'
    log_name = 'Guest-agent monitor'
    thread_name = 'vmha-guest-agent'
    lost_writes_hint = 'pings find them again'

    def __init__(self, driver, journal, reporter, selector, pool, backend,
                 defaults, discovery_timeout=300.0, action_budget=3,
                 action_window=3600.0, action_min_uptime=300.0,
                 refresh_interval=60.0, evidence_settle=1.0,
                 clock=time.monotonic, wall=time.time, action_policy=None,
                 suspect_pings=0):
        super().__init__(pool, backend, clock)
        self._driver = driver
        self._reporter = reporter
        self._store = guest_store.GuestStore(journal)
        self._selector = selector
        self._defaults = defaults
        self._discovery_timeout = discovery_timeout
        # Shared with the heartbeat monitor when the agent passes one: one
        # budget per VM whichever monitor acts.
        self._actions = action_policy or actions_lib.ActionPolicy(
            driver, action_budget, action_window, action_min_uptime, wall)
        self._refresh_interval = refresh_interval
        self._gatherer = evidence_gathering.CounterGatherer(
            driver.get_guest_counters, backend.native_sleep,
            evidence_settle, clock)
        self._wall = wall
        self._watched = {}
        self._saved = {}  # rows of the last run, until each VM is seen
        self.writes = batch.WriteBatch(journal, self.log_name, WRITE_WINDOW,
                                       clock)
        self._schedule = schedule_lib.Schedule(origin=clock())
        self._next_refresh = None
        self._refreshing = False
        # Domains a listing found: their XML read in batches, one job at
        # a time (thousands at start-up).
        self._describer = batched.Batcher(
            self._submit, 'describe', driver.describe_guests,
            selection.NAMESPACE)
        # What a finished call of each kind means (``_finish_one``).
        self._on_finished = {
            'describe': self._on_describe, 'ping': self._on_ping,
            'baseline': self._on_baseline, 'judge': self._on_judge,
            'action': self._on_action}
        # Two budgets of pings in flight (0 suspect: one shared budget).
        # A guest known to be failing (``_suspect``), and any ping out
        # longer than SLOW_AFTER, count against ``max_suspect``: libvirt
        # holds them ~5 s, and they must never keep the healthy guests'
        # ``max_in_flight`` slots meanwhile.
        self.max_suspect = suspect_pings
        self.max_in_flight = pool.size - suspect_pings
        self._out = {}  # ping job -> sent to a suspect?
        self._blocked = False
        self.pings_total = 0
        # callable(seconds) for each answered ping (the metrics histogram)
        self.observe_ping = None

    @classmethod
    def from_conf(cls, conf, driver, journal, reporter, selector, backend,
                  action_policy=None):
        agent = conf.guest_agent
        defaults = Settings(True, agent.interval, agent.timeout,
                            agent.failure_threshold, agent.action)
        pool = concurrency.NativePool(
            backend, agent.max_concurrent_pings + agent.max_suspect_pings,
            name='vmha-guest-agent')
        return cls(driver, journal, reporter, selector, pool, backend,
                   defaults, discovery_timeout=agent.discovery_timeout,
                   action_budget=agent.action_budget,
                   action_window=agent.action_window,
                   action_min_uptime=agent.action_min_uptime,
                   action_policy=action_policy,
                   suspect_pings=agent.max_suspect_pings)

    # --- the monitor contract (``monitor.Monitor``) ------------------------

    def accepts(self, event):
        return isinstance(event, _INBOX_EVENTS)

    def load(self):
        """Read the last run's states; the first step lists the domains."""
        self._saved = self._store.all()
        self._next_refresh = self.first_listing_at()

    def wake_in(self):
        if self._blocked or self._pool.busy >= self._pool.size:
            # Room comes with a finished call or a ping turning slow.
            return monitor.BUSY_POLL
        now = self._clock()
        due = [self._next_refresh, now + HEARTBEAT,
               self._schedule.next_due(), self.writes.next_commit_at()]
        return max(0.0, min(d for d in due if d is not None) - now)

    def flush(self):
        """Commit every change not yet written, in one transaction; if
        the journal fails, they all stay for the next try."""
        self.writes.flush()

    def _plan(self, watched, when, job=None):
        """Ping ``watched`` at ``when`` (or, with ``job``, check then
        whether that ping is overdue)."""
        if job is None:
            watched.next_ping = when
        self._schedule.plan(when, watched.uuid, job)

    def _next_tick(self, now, interval):
        return self._schedule.next_tick(now, interval)

    def step(self, jobs=()):
        """Handle events, finished calls and what is due; write once."""
        now = self._clock()
        self.stamp_turnover()
        if self.take_release():
            self._next_refresh = min(self._next_refresh, now)
        while self._inbox:
            self._on_event(self._inbox.popleft(), now)
        self._finish(list(jobs) + self._pool.collect())
        if now >= self._next_refresh and not self._refreshing:
            self._refreshing = True
            self._submit(('list', None), self._driver.list_instances)
        blocked = []
        young, slow = self._in_flight(now)
        for entry in self._schedule.pop_due(now):
            watched = self._watched.get(entry.uuid)
            if watched is None or not self._pingable(watched):
                continue
            if entry.job is not None:
                self._overdue(watched, entry.job, now)
            elif entry.when != watched.next_ping or watched.ping is not None:
                continue  # planned again since, or its ping is still out
            elif not self._room(self._suspect(watched), young, slow):
                blocked.append(entry)
            else:
                suspect = self._due(watched, now)
                if suspect and self.max_suspect:
                    slow += 1
                else:
                    young += 1
        for entry in blocked:
            self._schedule.put_back(entry)
        self._blocked = bool(blocked)
        self.writes.commit_due()

    def _finish(self, jobs):
        for job in jobs:
            # One job's handler failing (a domain's hostile metadata, a
            # bug) must not drop the other jobs of the batch: their VMs
            # would stop being pinged and judged.
            try:
                self._finish_one(job)
            except Exception:
                kind, uuid = job.key
                watched = self._watched.get(uuid)
                LOG.exception('%s (%s): handling its %s call failed; the '
                              'other guests go on', watched.name if watched
                              else '-', uuid or '-', kind)

    def _finish_one(self, job):
        kind, uuid = job.key
        if kind == 'ping':
            self._out.pop(job, None)
        if kind == 'list':
            self._refreshing = False
            self._next_refresh = self._clock() + self._refresh_interval
            self._reconcile(job)
            return
        if kind == self._describer.batch_kind:
            self._finish(self._describer.finished(job))
            return
        watched = self._watched.get(uuid)
        if watched is not None:
            self._on_finished[kind](watched, job)

    def _submit(self, key, function, *args):
        return self._pool.submit(key, function, *args)

    # --- what libvirt says about the domains -------------------------------

    def _reconcile(self, job):
        if job.error is not None:
            LOG.warning('Guest-agent monitor cannot list domains: %s',
                        job.error)
            return
        now = self._clock()
        seen = set()
        for info in job.result:
            seen.add(info.uuid)
            watched = self._watched.get(info.uuid)
            running = info.power_state == power_state.RUNNING and \
                not info.state_reason.startswith('SHUTDOWN')
            if watched is None:
                if running or info.uuid in self._saved:
                    watched = self._watch(info.uuid, info.name, now,
                                          batch=True)
                else:
                    continue
            if not running:
                self._input(watched, gs.SUPPRESS, info.state_reason)
            elif watched.state == gs.SUPPRESSED:
                self._input(watched, gs.RESET, 'running again (%s)'
                            % info.state_reason)
        for uuid in list(self._watched):
            if uuid not in seen:
                self._forget(uuid, 'no longer defined')
        for uuid in list(self._saved):
            if uuid not in seen:  # gone while vmha was down
                self._saved.pop(uuid)
                self.writes.add(lambda tx, u=uuid: self._store.forget(tx, u))
        self._describer.pump()

    def _watch(self, uuid, name, now, batch=False):
        watched = guest_tracker.Watched(uuid, name, self._defaults, now,
                                        self._wall())
        saved = self._saved.pop(uuid, None)
        if saved is not None:
            watched.restore(saved)
            self._actions.remember(uuid, watched.actions)
        self._watched[uuid] = watched
        if batch:
            watched.pingable = None
            self._describer.add(uuid)
        else:
            self._describe(watched)
        return watched

    def _describe(self, watched):
        watched.pingable = None
        self._submit(('describe', watched.uuid), self._driver.describe_guest,
                     watched.uuid, selection.NAMESPACE)

    def _on_describe(self, watched, job):
        if isinstance(job.error, exception.DomainNotFound):
            self._forget(watched.uuid, 'undefined')
            return
        if isinstance(job.error, ValueError):
            LOG.warning('%s (%s): domain XML unusable, not pinged: %s',
                        watched.name, watched.uuid, job.error)
            watched.pingable = False
            return
        if job.error is not None:
            LOG.info('%s (%s): cannot read its XML (%s); trying again on '
                     'the next refresh', watched.name, watched.uuid,
                     job.error)
            self._forget(watched.uuid, None, keep_row=True)
            return
        description = job.result
        # Parsed once for both readers (a tenant may have written it).
        element = selection.parse_monitoring(
            description.metadata, watched.name, watched.uuid)
        watched.settings = self._defaults._replace(
            **selection.guest_agent_settings(
                element, watched.name, watched.uuid, self._defaults))
        monitored = self._selector.decide(watched.uuid, watched.name,
                                          element)
        watched.pingable = bool(description.agent_channel and monitored
                                and watched.settings.enabled)
        if watched.pingable:
            LOG.info('%s (%s): pinging its guest agent (%s)', watched.name,
                     watched.uuid, watched.settings)
            self._plan(watched, watched.next_ping)
            self._save(watched)
        else:
            self.writes.add(lambda tx: self._store.forget(tx, watched.uuid))

    def _forget(self, uuid, why, keep_row=False):
        self._describer.discard(uuid)
        watched = self._watched.pop(uuid, None)
        if watched is not None and why:
            LOG.debug('%s (%s): no longer pinged: %s', watched.name, uuid,
                      why)
        if not keep_row:
            self.writes.add(lambda tx: self._store.forget(tx, uuid))
        elif watched is not None:
            self._saved[uuid] = watched.row()

    def reconsider(self, uuid):
        """Read the domain's settings and monitoring choice again (an
        operator changed it); any thread may call it."""
        self._inbox.append(_Reconsider(uuid))
        self._pool.wake()

    def _on_event(self, event, now):
        if isinstance(event, _Reconsider):
            watched = self._watched.get(event.uuid)
            if watched is not None:
                if self._selector.disabled(watched.uuid):
                    watched.judging = None  # a verdict under way is dropped
                self._describe(watched)
            return
        if not isinstance(event, ev.InstanceEvent):
            self._next_refresh = now  # reconnected or events lost
            return
        watched = self._watched.get(event.uuid)
        if isinstance(event, ev.LifecycleEvent):
            transition = event.transition
            if transition in _GONE:
                self._forget(event.uuid, event.vir_domain_event)
            elif transition == ev.EVENT_LIFECYCLE_STARTED:
                if watched is None:
                    watched = self._watch(event.uuid, event.name, now)
                self._input(watched, gs.RESET, event.vir_domain_event,
                            boot=True)
            elif watched is None:
                return
            elif transition == ev.EVENT_LIFECYCLE_RESUMED:
                self._input(watched, gs.RESET, event.vir_domain_event)
                if event.vir_domain_event in _ARRIVED:
                    # Hand-over: the guest runs here from now on; ask it
                    # at once, not one interval later.
                    self._plan(watched, now)
            elif transition in _SUPPRESSING:
                self._input(watched, gs.SUPPRESS, event.vir_domain_event)
            elif transition == ev.EVENT_LIFECYCLE_DEFINED:
                self._describe(watched)  # its settings may have changed
        elif watched is None:
            return
        elif isinstance(event, ev.RebootEvent):
            self._input(watched, gs.RESET, 'REBOOT', boot=True)
        elif isinstance(event, ev.MigrationIterationEvent):
            self._input(watched, gs.SUPPRESS, 'migrating')
        elif isinstance(event, ev.JobCompletedEvent):
            self._next_refresh = now  # a migration or save ended
        elif isinstance(event, ev.AgentLifecycleEvent):
            if event.connected:
                watched.channel_closed_at = None
                if watched.state == gs.DISCOVERY:
                    self._plan(watched, now)  # the agent is up: ask now
            elif event.reason == 'CHANNEL':
                watched.channel_closed_at = now

    # --- pings -------------------------------------------------------------

    def _pingable(self, watched):
        return watched.pingable and watched.state in gs.PINGED

    @staticmethod
    def _suspect(watched):
        """Known to be failing: it missed a ping (or its last one
        failed), or its failure episode is open."""
        return watched.state in (gs.ERROR, gs.REPORTED) or \
            watched.last_error is not None

    def _in_flight(self, now):
        """(healthy, suspect) pings in flight, by budget: a ping out
        longer than SLOW_AFTER counts as a suspect's."""
        young = slow = 0
        for job, suspect in self._out.items():
            if self.max_suspect and (suspect or
                                     now - job.submitted >= SLOW_AFTER):
                slow += 1
            else:
                young += 1
        return young, slow

    def _room(self, suspect, young, slow):
        if suspect and self._pool.busy >= self._pool.size:
            # Every native thread is taken: a suspect's ping would wait
            # for one, and its deadline (``_overdue``) would count a
            # ping never sent.  A healthy guest's may wait: late pings
            # of healthy guests are never counted.
            return False
        if suspect and self.max_suspect:
            return slow < self.max_suspect
        return young < self.max_in_flight

    def _overdue(self, watched, job, now):
        if watched.ping is job and not watched.ping_counted and \
                watched.state in (gs.ERROR, gs.REPORTED):
            # libvirt holds it ~5 s: no answer in time is a failure.
            watched.ping_counted = True
            watched.last_outcome_at = now
            self._ping_failed(watched, 'no answer in %.1fs'
                              % (now - job.submitted))

    def _due(self, watched, now):
        settings = watched.settings
        if watched.state == gs.DISCOVERY and not watched.discovery_warned \
                and self._wall() - watched.booted_at >= \
                self._discovery_timeout:
            self._discovery_warning(watched)
        watched.ping = self._submit(('ping', watched.uuid),
                                    self._driver.guest_agent_command,
                                    watched.uuid, PING, settings.timeout)
        suspect = self._suspect(watched)
        self._out[watched.ping] = suspect
        watched.ping_counted = False
        watched.last_ping_at = now
        self.pings_total += 1
        self._plan(watched, self._next_tick(now, settings.interval))
        self._plan(watched, now + settings.timeout + DEADLINE_GRACE,
                   watched.ping)
        return suspect

    def _on_ping(self, watched, job):
        if watched.ping is job:
            watched.ping = None
            if watched.next_ping <= self._clock():
                self._plan(watched, watched.next_ping)  # it waited for us
        counted, watched.ping_counted = watched.ping_counted, False
        if self._selector.disabled(watched.uuid):
            return  # an answer to a ping sent before the operator's choice
        watched.last_latency = job.finished - job.submitted
        if not counted:
            watched.last_outcome_at = self._clock()
        error = job.error
        if error is None:
            if self.observe_ping is not None:
                self.observe_ping(watched.last_latency)
            watched.last_error = None
            self._input(watched, gs.PING_OK, 'answered in %.3fs'
                        % watched.last_latency)
            return
        watched.last_error = str(error)
        if isinstance(error, exception.DomainNotFound):
            self._forget(watched.uuid, 'undefined')
        elif isinstance(error, exception.NotSupported):
            LOG.info('%s (%s): guest-agent calls not supported here; not '
                     'pinged', watched.name, watched.uuid)
            watched.pingable = False
        elif isinstance(error, exception.AgentError) and \
                error.code != _ERR_OPERATION_INVALID:
            if not counted:
                self._ping_failed(watched, str(error))
        else:
            # libvirtd unreachable, or the domain stopped running: not the
            # guest's doing; the events or the next refresh say more.
            LOG.debug('%s (%s): ping not counted: %s', watched.name,
                      watched.uuid, error)

    def _ping_failed(self, watched, why):
        if watched.state == gs.DISCOVERY:
            LOG.debug('%s (%s): agent not answering yet: %s', watched.name,
                      watched.uuid, why)
            return
        self._input(watched, gs.PING_FAILED, why)

    # --- the machine -------------------------------------------------------

    def _input(self, watched, event, why, boot=False):
        old = watched.state
        new = gs.next_state(old, event)
        watched.state = new
        if event == gs.PING_OK:
            self._answered(watched, old, why)
        elif event == gs.PING_FAILED:
            self._failed(watched, old, why)
        elif event in (gs.HUNG, gs.AGENT_DOWN):
            self._judged(watched, old, event, why)
        else:  # SUPPRESS, RESET
            reported = old == gs.REPORTED and watched.verdict == gs.HUNG
            watched.forget_evidence()
            if event == gs.RESET:
                watched.discovery_warned = False
                self._plan(watched, self._next_tick(
                    self._clock(), watched.settings.interval))
                if boot:
                    watched.booted_at = self._wall()
            if reported:
                self._close_episode(watched)
            if old != new or boot:
                LOG.info('%s (%s): guest agent %s -> %s (%s)', watched.name,
                         watched.uuid, old, new, why)
                self._save(watched)

    def _answered(self, watched, old, why):
        closed = old == gs.REPORTED and watched.verdict == gs.HUNG
        failures = watched.failures
        watched.forget_evidence()
        if old == gs.HEALTHY:
            return
        LOG.info('%s (%s): guest agent %s -> healthy (%s)', watched.name,
                 watched.uuid, old, why)
        if closed:
            self._close_episode(watched)
        if old == gs.REPORTED:
            self._notify(watched, old, 'the guest agent answers again after '
                         '%d failed ping(s)' % failures,
                         fields.NotificationPriority.INFO, failures)
        self._save(watched)

    def _failed(self, watched, old, why):
        watched.failures += 1
        LOG.info('%s (%s): guest-ping failed (%d in a row): %s', watched.name,
                 watched.uuid, watched.failures, why)
        if old == gs.HEALTHY:
            self._submit(('baseline', watched.uuid),
                         self._driver.get_guest_counters, watched.uuid)
        threshold = watched.settings.failure_threshold
        stuck = watched.judging is not None and \
            self._clock() - watched.judging.submitted > JUDGE_BOUND
        if stuck:
            # libvirt waits on QEMU for the counters: no more waiting.
            LOG.warning('%s (%s): no counters in %ds; judging without',
                        watched.name, watched.uuid, JUDGE_BOUND)
            self._on_judge(watched, None)
        elif watched.judging is None and watched.failures >= threshold and (
                old != gs.REPORTED or watched.verdict == gs.AGENT_DOWN):
            watched.judging = self._submit(('judge', watched.uuid),
                                           self._gatherer.gather,
                                           watched.uuid,
                                           watched.baseline)
        self._save(watched)

    def _on_baseline(self, watched, job):
        if job.error is None and watched.state in (gs.ERROR, gs.REPORTED):
            watched.baseline = (job.result, job.finished)

    def _on_judge(self, watched, job):
        """The verdict from ``job``'s counters (None: without any)."""
        if job is not None and job is not watched.judging:
            return  # given up on (JUDGE_BOUND), or of an older episode
        watched.judging = None
        if self._selector.disabled(watched.uuid):
            return  # an operator turned its monitoring off meanwhile
        if watched.state not in (gs.ERROR, gs.REPORTED):
            return  # recovered, paused or rebooted meanwhile
        if watched.state == gs.REPORTED and watched.verdict == gs.HUNG:
            return
        baseline, after, disk = (job.result if job and job.error is None
                                 else (None, None, None))
        closed = watched.channel_closed_at
        judgement = evidence.judge(
            watched.failures,
            after[1] - baseline[1] if baseline and after else 0,
            baseline[0] if baseline else None,
            after[0] if after else None, disk,
            None if closed is None else self._clock() - closed)
        if after is not None:
            watched.baseline = after  # the next window starts here
        if watched.verdict == judgement.verdict:
            return  # still only the agent: said once already
        self._input(watched, judgement.verdict, judgement.evidence)

    def _judged(self, watched, old, verdict, why):
        watched.verdict = verdict
        if verdict == gs.AGENT_DOWN:
            LOG.warning('%s (%s): guest agent down, guest alive: %s',
                        watched.name, watched.uuid, why)
            self._notify(watched, old, 'agent down, guest alive: ' + why,
                         fields.NotificationPriority.WARN, watched.failures)
        else:
            choice = self._actions.choose(watched.settings.action,
                                          watched.actions, watched.booted_at,
                                          uuid=watched.uuid)
            watched.actions = choice.actions
            action, reason = choice.function, choice.why
            LOG.warning('%s (%s): guest hung: %s; %s', watched.name,
                        watched.uuid, why, reason)
            if action is None:
                self._report(watched, why)
            else:
                acted_at = self._wall()
                watched.actions.append(acted_at)
                self._actions.record(watched.uuid, acted_at)
                self._submit(('action', watched.uuid), action, watched.uuid)
            self._notify(watched, old, 'guest hung: %s; %s' % (why, reason),
                         fields.NotificationPriority.ERROR, watched.failures)
        self._save(watched)

    # --- corrective actions ---------------------------------------------

    def _on_action(self, watched, job):
        action = watched.settings.action
        if job.error is None:
            LOG.info('%s (%s): %s done', watched.name, watched.uuid, action)
            return
        if self._selector.disabled(watched.uuid):
            LOG.warning('%s (%s): %s failed: %s; not reported: an operator '
                        'turned its monitoring off', watched.name,
                        watched.uuid, action, job.error)
            return
        why = '%s failed: %s' % (action, job.error)
        LOG.error('%s (%s): %s; reporting the failure', watched.name,
                  watched.uuid, why)
        self._report(watched, why)
        self._notify(watched, watched.state, why + '; failure reported',
                     fields.NotificationPriority.ERROR, watched.failures)

    # --- writing -----------------------------------------------------------

    def _report(self, watched, why):
        verdict = HUNG_VERDICT._replace(evidence='guest agent: ' + why)
        when = self._wall()
        self.writes.add(lambda tx: self._reporter.report_failure(
            tx, watched.uuid, watched.name, verdict, when), urgent=True)

    def _close_episode(self, watched):
        self.writes.add(lambda tx: self._reporter.close_episode(
            tx, watched.uuid, fields.FailureCause.GUEST_HUNG))

    def _discovery_warning(self, watched):
        watched.discovery_warned = True
        why = ('the guest agent has not answered in the %.0fs since boot '
               '(discovery_timeout): not installed, not started, or the '
               'guest is stuck booting' % self._discovery_timeout)
        LOG.warning('%s (%s): %s', watched.name, watched.uuid, why)
        self._notify(watched, gs.DISCOVERY, why,
                     fields.NotificationPriority.WARN, 0)
        self._save(watched)

    def _notify(self, watched, old, reason, priority, failures):
        notification = guest_health.guest_health_notification(
            self._reporter.host, watched.uuid, watched.name, old,
            watched.state, reason, failures,
            failure_monitor.utc(self._wall()),
            priority=priority)
        self.writes.add(lambda tx: self._reporter.send(tx, notification),
                        urgent=True)

    def _save(self, watched):
        if watched.pingable is False:
            return  # no agent channel (or opted out): nothing to keep
        watched.changed_at = self._wall()
        row = watched.row()
        self.writes.add(lambda tx: self._store.save(tx, row))

    # --- what operators see ------------------------------------------------

    def status(self):
        """One dict per VM the monitor knows, for status and metrics;
        times are this monitor's monotonic clock."""
        return [watched.status() for watched in list(self._watched.values())]


class _Reconsider:
    """Inbox item: describe ``uuid`` again."""

    def __init__(self, uuid):
        self.uuid = uuid
