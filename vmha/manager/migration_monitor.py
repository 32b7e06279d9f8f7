"""The migration monitor: watches every live migration on this host,
whoever started it, and rescues the stuck and the failed.

A ``monitor.Monitor`` (read that module first).  What it watches:

* **Events** (the dispatcher appends them to the inbox): on the source,
  MIGRATION_ITERATION and SUSPENDED_MIGRATED start tracking an outgoing
  migration, SUSPENDED_POSTCOPY marks its switch to post-copy,
  STOPPED_MIGRATED (held back by the dispatcher's STOPPED delay) and
  JOB_COMPLETED end it; on the destination STARTED_MIGRATED starts an
  incoming one, RESUMED_POSTCOPY is its switch, RESUMED_MIGRATED its
  end.  ``*_POSTCOPY_FAILED`` on either side is a VM lost in post-copy.
* **Job statistics** of each outgoing migration, read every
  ``progress_interval`` on the monitor's ``NativePool``
  (``driver.job_stats``).  A read that finds no job any more concludes
  the migration from the domain's state: migrated (success), or failed
  with the source paused (resumed, ``migration_policy.after_failure``),
  running, or stopped (the failure monitor judges a stop).  The
  statistics, not the events, conclude: STOPPED_MIGRATED comes 15 s
  late, and a failed pre-copy sends no event at all when the source was
  not paused.

The policy (``migration_policy.decide``) runs at each read, for every
outgoing migration: the completion deadline and the stall detection
(``progress_timeout``) with ``timeout_action``, for migrations vmha
drives and for those it only watches.  The downtime steps only for
those vmha drives (``drive``): another tool that started a migration
chose its downtime, and may be raising it itself (nova does); vmha
changing it behind its back would fight it.  For a watched migration
``force_complete`` pauses the guest (vmha does not know whether it was
started with post-copy allowed).

Never a false failure: a migration is no failure on either side, however
it ends, except a post-copy one that failed (the VM's memory is split
between the hosts: ``decisions.postcopy_failed``, reported once through
the ``Reporter``, its episode deduplicating the two sides' events).
Other monitors suppress their checks while a domain migrates on their
own (lifecycle events); this one forgets a domain that left (the source
side) without calling it vanished.

State is in memory only: after a restart, the first step lists the
domains and reads the job statistics of those that run or are paused,
so a migration under way is found again (its deadline then counts from
libvirt's own elapsed time).
"""

import collections
import logging
import time

from vmha import concurrency
from vmha import supervision
from vmha.journal import batch
from vmha.manager import decisions
from vmha.manager import failure_monitor
from vmha.manager import migration_policy as policy
from vmha.manager import monitor
from vmha.objects import fields
from vmha.objects import migration as migration_objects
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt import power_state

LOG = logging.getLogger(__name__)

HEARTBEAT = supervision.HEARTBEAT
WRITE_WINDOW = 0.2
#: Seconds a concluded migration's late events (the held-back
#: STOPPED_MIGRATED, an UNDEFINED) are recognised as its own.
ENDED_MEMORY = 120.0

OUTGOING = fields.MigrationDirection.OUTGOING
INCOMING = fields.MigrationDirection.INCOMING
START = fields.MigrationPhase.START
PROGRESS = fields.MigrationPhase.PROGRESS
END = fields.MigrationPhase.END
ERROR = fields.MigrationPhase.ERROR

#: Operator tasks (``task``) and what each does.
TASKS = ('abort', 'force_complete', 'pause')

_POWER_NAMES = {
    power_state.RUNNING: 'running', power_state.PAUSED: 'paused',
    power_state.SHUTDOWN: 'shutdown', power_state.CRASHED: 'crashed',
    power_state.SUSPENDED: 'suspended', power_state.NOSTATE: 'pending',
}

Settings = collections.namedtuple('Settings', [
    'progress_interval', 'progress_timeout', 'completion_timeout',
    'timeout_action', 'downtime', 'downtime_steps', 'downtime_delay',
    'permit_post_copy', 'permit_auto_converge'])
Settings.__doc__ = """The ``[migration]`` options, as the monitor and the
driver read them."""

DEFAULTS = Settings(5.0, 150, 800, 'abort', 500, 10, 75, False, False)


def settings_from_conf(conf):
    group = conf.migration
    return Settings(*(getattr(group, name) for name in Settings._fields))


def source_state(state_reason, power):
    """The ``after_failure`` name of a source domain's state."""
    if state_reason.startswith('SHUTOFF_MIGRATED'):
        return 'gone'
    return _POWER_NAMES.get(power, 'pending')


class Migration:
    """One migration as the monitor knows it."""

    def __init__(self, uuid, name, direction, now, driven=False,
                 destination=None):
        self.uuid = uuid
        self.name = name
        self.direction = direction
        self.driven = driven
        self.destination = destination
        self.seen_at = now
        self.stats = {}
        self.state = None  # migration_policy.MigrationState (outgoing)
        self.postcopy = False
        self.paused_by_operator = False
        self.paused_by_vmha = False
        self.poll = None  # the job-stats call in flight
        self.next_poll = now
        self.iteration = None
        self.notified_iteration = None
        self.aborting = None  # why vmha aborted it
        self.call_ended = False  # driven: migrateToURI3 returned
        self.call_error = None
        self.features = frozenset()
        self.last_action = None

    def percent(self):
        total = self.stats.get('data_total')
        processed = self.stats.get('data_processed')
        if not total or processed is None:
            return None
        return min(100, int(100 * processed / total))

    def column(self):
        """The MIGRATING column of vmha-status: 'out 63% it3 dt=150ms',
        'in', 'out postcopy'."""
        if self.direction == INCOMING:
            return 'in postcopy' if self.postcopy else 'in'
        parts = ['out']
        if self.postcopy:
            parts.append('postcopy')
        elif self.percent() is not None:
            parts.append('%d%%' % self.percent())
        if self.iteration is not None and not self.postcopy:
            parts.append('it%d' % self.iteration)
        downtime = self.state.downtime_ms if self.state else None
        if downtime is not None:
            parts.append('dt=%dms' % downtime)
        return ' '.join(parts)

    def status(self):
        return {'uuid': self.uuid, 'name': self.name,
                'direction': self.direction, 'driven': self.driven,
                'destination': self.destination, 'postcopy': self.postcopy,
                'percent': self.percent(), 'iteration': self.iteration,
                'data_remaining': self.stats.get('data_remaining'),
                'downtime_ms': self.state.downtime_ms if self.state
                else None, 'migrating': self.column()}


class _Drive:
    """Inbox item: vmha starts migrating ``uuid`` (``MigrationDriver``)."""

    def __init__(self, uuid, name, destination, features):
        self.uuid, self.name = uuid, name
        self.destination, self.features = destination, features


class _CallEnded:
    """Inbox item: the migration call of a driven migration returned."""

    def __init__(self, uuid, error):
        self.uuid, self.error = uuid, error


class _Task:
    """Inbox item: an operator's task for a running migration."""

    def __init__(self, uuid, task):
        self.uuid, self.task = uuid, task


_INBOX = (ev.LifecycleEvent, ev.MigrationIterationEvent,
          ev.JobCompletedEvent, ev.ConnectionRestoredEvent,
          ev.ResyncRequiredEvent, _Drive, _CallEnded, _Task)
_MIGRATION_LIFECYCLE = frozenset({
    'STARTED_MIGRATED', 'SUSPENDED_MIGRATED', 'RESUMED_MIGRATED',
    'STOPPED_MIGRATED', 'SUSPENDED_POSTCOPY', 'RESUMED_POSTCOPY',
    'SUSPENDED_POSTCOPY_FAILED', 'RESUMED_POSTCOPY_FAILED'})


class MigrationMonitor(monitor.Monitor):
    """:param driver: the virt driver
    :param journal: the Journal (notifications, failure episodes)
    :param reporter: the ``failure_monitor.Reporter``
    :param pool: a ``NativePool`` for the job-stats reads and the
        policy's calls (set downtime, abort, post-copy, pause, resume)
    :param settings: the ``Settings`` (``[migration]``)
    """

    check_name = 'migration'
    description = 'migration monitor loop'
    log_name = 'Migration monitor'
    thread_name = 'vmha-migration'
    lost_writes_hint = 'their notifications are lost'

    def __init__(self, driver, journal, reporter, pool, backend,
                 settings=DEFAULTS, clock=time.monotonic, wall=time.time):
        super().__init__(pool, backend, clock)
        self._driver = driver
        self._reporter = reporter
        self.settings = settings
        self._wall = wall
        self._migrations = {}
        self._ended = {}  # uuid -> when concluded (late events)
        self._scan_due = None
        self.writes = batch.WriteBatch(journal, self.log_name, WRITE_WINDOW,
                                       clock)
        self._listed = {}
        # Pools of others to close when this monitor stops (the
        # migration driver's: its calls report to this monitor).
        self.also_close = []
        self.polls_total = 0
        self.notifications_total = collections.Counter()

    @classmethod
    def from_conf(cls, conf, driver, journal, reporter, backend,
                  pool_size=8):
        pool = concurrency.NativePool(backend, pool_size,
                                      name='vmha-migration')
        return cls(driver, journal, reporter, pool, backend,
                   settings_from_conf(conf))

    # --- the monitor contract ----------------------------------------------

    def accepts(self, event):
        if isinstance(event, ev.LifecycleEvent):
            return event.vir_domain_event in _MIGRATION_LIFECYCLE or \
                event.transition in (ev.EVENT_LIFECYCLE_STOPPED,
                                     ev.EVENT_LIFECYCLE_UNDEFINED)
        return isinstance(event, _INBOX)

    def load(self):
        self._scan_due = self._clock()

    def wake_in(self):
        now = self._clock()
        due = [now + HEARTBEAT, self.writes.next_commit_at(), self._scan_due]
        due.extend(m.next_poll for m in self._migrations.values()
                   if m.direction == OUTGOING and m.poll is None)
        return max(0.0, min(d for d in due if d is not None) - now)

    def step(self, jobs=()):
        now = self._clock()
        self.stamp_turnover()
        while self._inbox:
            item = self._inbox.popleft()
            try:
                self._on_item(item, now)
            except Exception:
                LOG.exception('Migration monitor: handling %r failed; the '
                              'other migrations go on', item)
        for job in list(jobs) + self._pool.collect():
            try:
                self._finish(job)
            except Exception:
                LOG.exception('Migration monitor: handling the %s call of '
                              '%s failed; going on', job.key[0], job.key[1])
        if self._scan_due is not None and now >= self._scan_due:
            self._scan_due = None
            self._pool.submit(('scan', None), self._scan)
        for migration in list(self._migrations.values()):
            if migration.direction == OUTGOING and migration.poll is None \
                    and now >= migration.next_poll:
                self._poll(migration, now)
        for uuid, when in list(self._ended.items()):
            if now - when > ENDED_MEMORY:
                del self._ended[uuid]
        self.writes.commit_due()

    def stop(self, timeout=10):
        for pool in self.also_close:
            pool.close()
        super().stop(timeout)

    # --- what the RPC layer asks (any thread) --------------------------------

    def drive(self, uuid, name, destination, features):
        """vmha starts migrating ``uuid``: apply the downtime steps."""
        self._inbox.append(_Drive(uuid, name, destination, features))
        self._pool.wake()

    def call_ended(self, uuid, error):
        self._inbox.append(_CallEnded(uuid, error))
        self._pool.wake()

    def task(self, uuid, task):
        """Queue an operator's task (``TASKS``) for ``uuid``'s outgoing
        migration.  Raises ValueError for an unknown task or a domain
        this host is not migrating out."""
        if task not in TASKS:
            raise ValueError('unknown migration task %r (expected one of '
                             '%s)' % (task, ', '.join(TASKS)))
        migration = self._migrations.get(uuid)
        if migration is None or migration.direction != OUTGOING:
            raise ValueError('%s is not migrating out of this host' % uuid)
        self._inbox.append(_Task(uuid, task))
        self._pool.wake()

    def migrating(self, uuid):
        migration = self._migrations.get(uuid)
        return migration.direction if migration else None

    # --- events --------------------------------------------------------------

    def _on_item(self, item, now):
        if isinstance(item, (ev.ConnectionRestoredEvent,
                             ev.ResyncRequiredEvent)):
            self._scan_due = now  # what did the migrations do meanwhile?
        elif isinstance(item, _Drive):
            self._on_drive(item, now)
        elif isinstance(item, _CallEnded):
            migration = self._migrations.get(item.uuid)
            if migration is not None:
                migration.call_ended = True
                migration.call_error = item.error
                migration.next_poll = now  # conclude from libvirt's state
        elif isinstance(item, _Task):
            migration = self._migrations.get(item.uuid)
            if migration is not None:
                self._run_task(migration, item.task, now)
        elif isinstance(item, ev.MigrationIterationEvent):
            migration = self._outgoing(item, now)
            if migration.poll is None:
                migration.next_poll = now  # fresh figures for this pass
        elif isinstance(item, ev.JobCompletedEvent):
            migration = self._migrations.get(item.uuid)
            if migration is not None and migration.direction == OUTGOING:
                migration.next_poll = now
        else:
            self._on_lifecycle(item, now)

    def _on_lifecycle(self, event, now):
        name = event.vir_domain_event
        migration = self._migrations.get(event.uuid)
        if name in ('SUSPENDED_POSTCOPY_FAILED', 'RESUMED_POSTCOPY_FAILED'):
            direction = migration.direction if migration else \
                (INCOMING if name.startswith('RESUMED') else OUTGOING)
            self._postcopy_failed(
                migration or Migration(event.uuid, event.name, direction,
                                       now),
                'libvirt event %s' % name)
        elif name == 'STARTED_MIGRATED':
            self._ended.pop(event.uuid, None)
            migration = Migration(event.uuid, event.name, INCOMING, now)
            self._migrations[event.uuid] = migration
            LOG.info('%s (%s): incoming live migration', event.name,
                     event.uuid)
            self._notify(migration, START)
        elif migration is None:
            if name in ('SUSPENDED_MIGRATED', 'SUSPENDED_POSTCOPY') and \
                    event.uuid not in self._ended:
                migration = self._outgoing(event, now)
                self._on_lifecycle(event, now)
        elif migration.direction == INCOMING:
            if name == 'RESUMED_POSTCOPY':
                migration.postcopy = True
                self._notify(migration, PROGRESS, reason='post-copy: the '
                             'guest runs here now')
            elif name == 'RESUMED_MIGRATED':
                self._conclude(migration, END, reason='resumed here')
            elif event.transition in (ev.EVENT_LIFECYCLE_STOPPED,
                                      ev.EVENT_LIFECYCLE_UNDEFINED):
                # libvirt stops an incoming domain whose migration failed
                # or was cancelled: the source still has the VM.
                self._conclude(migration, ERROR, reason='the incoming '
                               'domain stopped (%s): the migration failed '
                               'or was cancelled' % name)
        elif name == 'SUSPENDED_POSTCOPY':
            self._postcopy_began(migration)
        elif name == 'RESUMED_MIGRATED':
            migration.next_poll = now  # libvirt resumed a failed source
        elif name == 'STOPPED_MIGRATED':
            self._conclude(migration, END, reason='STOPPED_MIGRATED')
        elif event.transition in (ev.EVENT_LIFECYCLE_STOPPED,
                                  ev.EVENT_LIFECYCLE_UNDEFINED):
            # The source stopped some other way (QEMU died, destroyed):
            # the failure monitor judges the stop; the migration is over.
            self._conclude(migration, ERROR, reason='the source domain '
                           'stopped (%s) during the migration' % name)

    def _outgoing(self, event, now):
        migration = self._migrations.get(event.uuid)
        if migration is None:
            self._ended.pop(event.uuid, None)
            migration = Migration(event.uuid, event.name, OUTGOING, now)
            self._migrations[event.uuid] = migration
            LOG.info('%s (%s): outgoing live migration seen (%s)',
                     event.name, event.uuid, event.vir_domain_event)
            self._notify(migration, START)
        if isinstance(event, ev.MigrationIterationEvent):
            migration.iteration = event.iteration
        return migration

    def _on_drive(self, item, now):
        migration = self._migrations.get(item.uuid)
        known = migration is not None
        if not known:
            migration = Migration(item.uuid, item.name, OUTGOING, now)
            self._migrations[item.uuid] = migration
        migration.driven = True
        migration.destination = item.destination
        migration.features = frozenset(item.features)
        if not known:
            self._notify(migration, START, reason='started by vmha')
        # The first read comes one interval after the call began: the
        # job does not exist before libvirt has contacted the peer.
        migration.next_poll = now + self.settings.progress_interval

    def _postcopy_began(self, migration):
        if migration.postcopy:
            return
        migration.postcopy = True
        if migration.state is not None:
            migration.state.postcopy_began()
        LOG.info('%s (%s): migration switched to post-copy',
                 migration.name, migration.uuid)
        self._notify(migration, PROGRESS, reason='switched to post-copy')

    # --- job statistics ------------------------------------------------------

    def _poll(self, migration, now):
        self.polls_total += 1
        migration.poll = self._pool.submit(
            ('stats', migration.uuid), self._driver.job_stats,
            migration.uuid)

    def _scan(self):
        """The outgoing migrations under way (after a start, a reconnect):
        the job statistics of each running or paused domain."""
        found = []
        infos = self._driver.list_instances()
        self._listed = {info.uuid: info for info in infos}
        for info in infos:
            if info.power_state not in (power_state.RUNNING,
                                        power_state.PAUSED):
                continue
            try:
                stats = self._driver.job_stats(info.uuid)
            except exception.HypervisorError:
                continue  # gone meanwhile, or no job support
            if stats['active'] and stats['direction'] == OUTGOING:
                found.append((info, stats))
        return found

    def _finish(self, job):
        kind, uuid = job.key
        if kind == 'scan':
            self._on_scan(job)
            return
        migration = self._migrations.get(uuid)
        if kind == 'stats' and migration is not None and \
                migration.poll is job:
            migration.poll = None
            migration.next_poll = self._clock() + \
                self.settings.progress_interval
            self._on_stats(migration, job)
        elif job.error is not None:
            LOG.warning('%s (%s): %s failed: %s', migration.name
                        if migration else '-', uuid, kind, job.error)
        elif kind == 'resume' and migration is not None:
            LOG.info('%s (%s): resumed on the source after the failed '
                     'migration', migration.name, uuid)

    def _on_scan(self, job):
        if job.error is not None:
            LOG.warning('Migration monitor cannot list the migrations under '
                        'way: %s; trying again in %ds', job.error, HEARTBEAT)
            self._scan_due = self._clock() + HEARTBEAT
            return
        now = self._clock()
        # Incoming migrations whose end was missed (events lost): the
        # listing says whether each arrived (running) or went away.
        listed = self._listed
        for migration in list(self._migrations.values()):
            if migration.direction != INCOMING:
                continue
            info = listed.get(migration.uuid)
            if info is None:
                self._conclude(migration, ERROR, reason='the incoming '
                               'domain is gone')
            elif info.power_state == power_state.RUNNING:
                self._conclude(migration, END, reason='running here (%s)'
                               % info.state_reason)
        for info, stats in job.result:
            if info.uuid not in self._migrations:
                migration = Migration(info.uuid, info.name, OUTGOING, now)
                self._migrations[info.uuid] = migration
                LOG.info('%s (%s): outgoing live migration under way',
                         info.name, info.uuid)
                self._notify(migration, START, reason='found under way')
                self._on_stats(migration, _Done(stats))

    def _on_stats(self, migration, job):
        if isinstance(job.error, exception.DomainNotFound):
            # Undefined on the source: UNDEFINE_SOURCE after success.
            self._conclude(migration, END, reason='undefined on the source')
            return
        if job.error is not None:
            if migration.call_ended:
                # vmha's call returned and libvirt cannot say more (a
                # driver without job statistics): it ended as it said.
                self._conclude(
                    migration, ERROR if migration.call_error else END,
                    reason='%s (no job statistics: %s)' % (
                        migration.call_error or 'completed', job.error))
                return
            LOG.warning('%s (%s): cannot read the migration statistics: %s; '
                        'trying again', migration.name, migration.uuid,
                        job.error)
            return
        stats = job.result
        if not stats['active']:
            self._ended_job(migration, stats)
            return
        if stats['direction'] == INCOMING:
            return  # the destination's figures say nothing to act on
        now = self._clock()
        first = not migration.stats
        migration.stats = stats
        if first and stats['state_reason'] == 'PAUSED_USER':
            migration.paused_by_operator = True
        if migration.state is None:
            migration.state = self._begin(migration, stats, now)
        if stats['postcopy']:
            self._postcopy_began(migration)
        iteration = stats['iteration']
        new_pass = iteration is not None and \
            iteration != migration.notified_iteration
        if iteration is not None:
            migration.iteration = migration.notified_iteration = iteration
        migration.state.watch.feed(now, stats['data_remaining'], iteration,
                                   postcopy=stats['postcopy'],
                                   data_total=stats['data_total'])
        action = policy.decide(now, migration.state)
        if action.kind != policy.NONE:
            self._act(migration, action, now)
        elif new_pass:
            self._notify(migration, PROGRESS)

    def _begin(self, migration, stats, now):
        memory = stats['memory_total'] or stats['data_total'] or 0
        disks = []
        if stats['data_total'] and stats['data_total'] > memory:
            disks.append(stats['data_total'] - memory)
        settings = self.settings
        # Since vmha asked for it, or since libvirt began the job (an
        # agent restarted mid-migration counts from there too).
        started = migration.seen_at
        if stats['elapsed_ms'] and not migration.driven:
            started = min(started, now - stats['elapsed_ms'] / 1000.0)
        state = policy.begin(
            started, policy.data_gib(memory, disks), settings.downtime,
            settings.downtime_steps, settings.downtime_delay,
            settings.completion_timeout, settings.timeout_action,
            migration.driven and 'postcopy' in migration.features,
            settings.progress_timeout)
        if not migration.driven:
            state.steps = []  # its starter chose the downtime
        return state

    def _ended_job(self, migration, stats):
        reason = stats['state_reason']
        if reason == 'PAUSED_MIGRATION' or \
                (migration.driven and not migration.call_ended
                 and not migration.stats):
            return  # switching over, or not begun yet: look again
        if reason.startswith('SHUTOFF_MIGRATED'):
            self._conclude(migration, END, reason='migrated')
            return
        if migration.postcopy:
            self._postcopy_failed(migration, 'the job ended in post-copy, '
                                  'source domain %s' % reason)
            return
        power, _ = _power_of(reason)
        recovery = policy.after_failure(
            policy.PRECOPY, source_state(reason, power),
            migration.paused_by_operator and not migration.paused_by_vmha)
        why = migration.aborting and 'aborted by vmha (%s)' % \
            migration.aborting or migration.call_error or 'failed'
        action = None
        if recovery.kind == policy.RESUME_SOURCE:
            action = policy.RESUME_SOURCE
            self._pool.submit(('resume', migration.uuid),
                              self._driver.unpause_instance,
                              migration.uuid)
            LOG.warning('%s (%s): migration %s and left the source paused; '
                        'resuming it', migration.name, migration.uuid, why)
        self._conclude(migration, ERROR, action=action,
                       reason='%s; source %s: %s' % (why, reason,
                                                     recovery.cause))

    def _postcopy_failed(self, migration, evidence):
        verdict = decisions.postcopy_failed(
            'live migration failed in post-copy (%s): the VM runs on '
            'neither host' % evidence)
        when = self._wall()
        LOG.error('%s (%s): %s', migration.name, migration.uuid,
                  verdict.evidence)
        self.writes.add(lambda tx: self._reporter.report_failure(
            tx, migration.uuid, migration.name, verdict, when), urgent=True)
        migration.postcopy = True
        self._conclude(migration, ERROR, reason=verdict.evidence)

    def _conclude(self, migration, phase, reason=None, action=None):
        if self._migrations.pop(migration.uuid, None) is None and \
                migration.uuid in self._ended:
            return  # a late event of a migration already concluded
        self._ended[migration.uuid] = self._clock()
        LOG.info('%s (%s): %s migration %s (%s)', migration.name,
                 migration.uuid, migration.direction,
                 'completed' if phase == END else 'failed', reason)
        self._notify(migration, phase, action=action, reason=reason)

    # --- acting --------------------------------------------------------------

    def _act(self, migration, action, now):
        state = migration.state
        kind = action.kind
        uuid = migration.uuid
        if kind == policy.SET_DOWNTIME:
            state.downtime_set(now, action.downtime_ms)
            self._pool.submit(('downtime', uuid),
                              self._driver.set_migration_downtime, uuid,
                              action.downtime_ms)
        elif kind == policy.ABORT:
            first = migration.aborting is None
            migration.aborting = action.reason
            self._pool.submit(('abort', uuid), self._driver.abort_job, uuid)
            if not first:
                return  # asked again until the job ends: said once
            LOG.warning('%s (%s): aborting the migration: %s',
                        migration.name, uuid, action.reason)
        elif kind == policy.FORCE_COMPLETE_POSTCOPY:
            state.postcopy_requested(now)
            self._pool.submit(('postcopy', uuid),
                              self._driver.start_postcopy, uuid)
        elif kind == policy.PAUSE_GUEST:
            state.guest_paused(now)
            migration.paused_by_vmha = True
            self._pool.submit(('pause', uuid), self._driver.pause_instance,
                              uuid)
        migration.last_action = kind
        if kind != policy.SET_DOWNTIME:
            LOG.warning('%s (%s): %s (%s)', migration.name, uuid, kind,
                        action.reason)
        self._notify(migration, PROGRESS, action=kind, reason=action.reason)

    def _run_task(self, migration, task, now):
        state = migration.state or self._begin(migration,
                                               migration.stats or _NO_STATS,
                                               now)
        migration.state = state
        if task == 'abort':
            action = policy.Action(policy.ABORT, reason='operator task')
            migration.aborting = None  # notify this one
        elif task == 'pause' or not state.permit_post_copy:
            action = policy.Action(policy.PAUSE_GUEST, reason='operator '
                                   'task %s' % task)
        else:
            action = policy.Action(policy.FORCE_COMPLETE_POSTCOPY,
                                   reason='operator task')
        self._act(migration, action, now)

    # --- notifications -------------------------------------------------------

    def _notify(self, migration, phase, action=None, reason=None):
        state = migration.state
        notification = migration_objects.migration_notification(
            self._reporter.host, migration.uuid, migration.name, phase,
            migration.direction, failure_monitor.utc(self._wall()),
            destination=migration.destination, driven=migration.driven,
            stats=migration.stats,
            downtime_ms=state.downtime_ms if state else None,
            postcopy=migration.postcopy, action=action,
            reason=None if reason is None else str(reason)[:255])
        self.notifications_total[phase] += 1
        self.writes.add(lambda tx: self._reporter.send(tx, notification),
                        urgent=True)

    # --- what operators see ------------------------------------------------

    def status(self):
        return [m.status() for m in list(self._migrations.values())]

    def metrics(self):
        """(active migrations, bytes remaining over the outgoing ones)."""
        migrations = list(self._migrations.values())
        return len(migrations), sum(
            m.stats.get('data_remaining') or 0 for m in migrations)


_NO_STATS = {'memory_total': None, 'data_total': None, 'elapsed_ms': None}


class _Done:
    """A finished call's shape, for results the monitor already has."""

    def __init__(self, result):
        self.result = result
        self.error = None


def _power_of(state_reason):
    """(power state, name) of a '<STATE>_<REASON>' string."""
    head = state_reason.split('_', 1)[0]
    return {'RUNNING': power_state.RUNNING, 'BLOCKED': power_state.RUNNING,
            'PAUSED': power_state.PAUSED, 'SHUTDOWN': power_state.RUNNING,
            'SHUTOFF': power_state.SHUTDOWN, 'CRASHED': power_state.CRASHED,
            'PMSUSPENDED': power_state.SUSPENDED}.get(
                head, power_state.NOSTATE), head
