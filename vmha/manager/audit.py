"""The power-state audit: find what events missed.

Nova's ``_sync_power_states`` idea, with a decision instead of a nova
call.  The audit lists every domain with its state in one libvirt call
(off the eventlet hub), compares each with what the journal last knew,
and for what changed unseen writes the new state and, if the change is a
failure, reports it once (the same ``Reporter`` and failure episodes as
the event path, so an event and the audit never both report it):

* a domain the journal knew in another state, now shut off with a
  failure reason (``SHUTOFF_FAILED``, ``SHUTOFF_CRASHED``, or
  ``SHUTOFF_DAEMON``: libvirtd found QEMU dead when it came back), or
  paused by an I/O error or the watchdog, or crashed;
* a domain the journal knew running that no longer exists (reported for
  the record as ``LIFECYCLE``/``UNDEFINED_UNSEEN``; Masakari ignores it,
  since a nova delete while the agent was down looks the same);
* a domain seen running again closes its failure episode.

A domain first seen by the audit is only recorded: vmha does not know
when it failed, or whether anyone still cares.  A row an event updated
after the listing started is left alone (the event is newer), and so is
a domain whose events the failure monitor still keeps for the journal
(``events_waiting``): written after the audit, they would undo or repeat
what it did (close the episode it opened, report the death again).  The
failure monitor asks for an audit once they are written.

It runs at start-up, whenever ``request()`` is called (connection
restored, events dropped) and every ``interval`` seconds; requests while
it runs coalesce into one more run.  It runs as its own task, so event
dispatch goes on meanwhile.
"""

import logging
import time

from vmha import supervision
from vmha.journal import db
from vmha.manager import decisions
from vmha.objects import fields
from vmha.virt import exception
from vmha.virt import power_state

LOG = logging.getLogger(__name__)


class PowerStateAudit(supervision.SupervisedLoop):
    """:param driver: the virt driver
    :param journal: the Journal
    :param reporter: the failure_monitor.Reporter
    :param selector: the selection.Selector
    :param backend: a vmha.concurrency backend
    :param interval: seconds between periodic runs (<= 0: none)
    :param settle_time: after ``request_settling`` (libvirt connection
        restored), keep auditing this many seconds
    :param settle_interval: ... every this many seconds
    :param store: the ``state.StateStore`` the audit compares with
    """

    check_name = 'audit'
    description = 'power-state audit loop'

    def __init__(self, driver, journal, reporter, selector, backend,
                 interval=60, settle_time=10.0, settle_interval=2.0,
                 clock=time.time, *, store):
        self._driver = driver
        self._journal = journal
        self._reporter = reporter
        self._store = store
        self._selector = selector
        self._backend = backend
        self._interval = interval
        self._settle_time = settle_time
        self._settle_interval = settle_interval
        self._settle_until = None  # monotonic; follow-ups until then
        self._clock = clock
        self._wakeup = None
        self._task = None
        self._running = False
        self._requested = False
        self.runs = 0
        # callables for when the first run is over (``agent.build``: the
        # monitors list the host after the start-up audit)
        self.after_first_run = []
        self._waited = 0  # domains left to their events, this run
        self.init_turnover(time.monotonic)
        self.last_duration = None
        self.last_run_at = None
        self.last_reported = None  # failures the last run reported
        # callable(uuid): True while the failure monitor keeps events of
        # that domain the journal has not taken yet
        # (``FailureMonitor.events_waiting``).
        self.events_waiting = lambda uuid: False

    def health_details(self):
        return {'runs': self.runs}

    def request(self):
        """Run as soon as possible (once, however often it is asked)."""
        self._requested = True
        if self._wakeup is not None:
            self._wakeup.set()

    def request_settling(self):
        """Run now, then every ``settle_interval`` seconds for
        ``settle_time``: for the moments after libvirtd came back, while
        it still reconnects to its QEMUs and lists dead ones as running.
        """
        self._settle_until = time.monotonic() + self._settle_time
        self.request()

    def start(self):
        self._wakeup = self._backend.event()
        self._running = True
        self._requested = True  # the start-up audit
        self._task = self._backend.spawn(self._loop, name='vmha-audit')

    def stop(self, timeout=10):
        self._running = False
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            self._task.join(timeout)
            self._task = None

    def _loop(self):
        due = None
        while self._running:
            self.stamp_turnover()
            now = self.last_turnover
            periodic = due is not None and now >= due
            if not (self._requested or periodic):
                # Awake every HEARTBEAT seconds even when idle: a stale
                # ``last_turnover`` then means a wedged audit.
                wait = (supervision.HEARTBEAT if due is None
                        else min(supervision.HEARTBEAT, due - now))
                self._wakeup.wait(wait)
                self._wakeup.clear()
                continue
            self._requested = False
            try:
                self.run_once()
            except db.JournalError as error:
                # What it found is not written: look again soon, not at
                # the next interval (nothing is lost, libvirt still knows).
                LOG.error('Power-state audit cannot write the journal: %s; '
                          'running again in %.0fs', error, JOURNAL_RETRY)
                due = time.monotonic() + JOURNAL_RETRY
                continue
            except Exception:  # the audit must outlive any one failure
                LOG.exception('Power-state audit failed; next one as '
                              'scheduled')
            finally:
                self._after_first()
            due = self._next_due()

    def _after_first(self):
        """The first run is over (whatever its outcome): call
        ``after_first_run`` (the monitors held back at start-up)."""
        hooks, self.after_first_run = self.after_first_run, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                LOG.exception('Power-state audit: a start-up hook failed')

    def _next_due(self):
        """When the next run is due (monotonic), or None."""
        now = time.monotonic()
        due = now + self._interval if self._interval > 0 else None
        if self._settle_until is not None:
            if now < self._settle_until:
                follow_up = min(now + self._settle_interval,
                                self._settle_until)
                due = follow_up if due is None else min(due, follow_up)
            else:
                self._settle_until = None
        return due

    def run_once(self):
        """One audit; returns the number of failures it reported."""
        started = self._clock()
        try:
            infos = self._backend.run_blocking(self._driver.list_instances)
        except exception.HypervisorError as error:
            LOG.warning('Power-state audit skipped: %s', error)
            return 0
        known = self._store.all()
        # Metadata of the domains not yet decided, in batches: one
        # blocking call per batch, not per domain (the first audit).
        self._selector.prefetch(infos)
        changed = []
        for info in infos:
            row = known.pop(info.uuid, None)
            if self._selector.is_monitored(info.uuid, info.name) and \
                    self._changed(info, row, started):
                changed.append(info)
        reported = 0
        self._waited = 0
        # Chunks of domains per transaction: one fsync per domain would
        # make the first audit of a big host last seconds, and a chunk
        # still holds the journal lock for only milliseconds.
        for chunk in _chunks(changed, CHUNK):
            with self._journal.transaction() as tx:
                for info in chunk:
                    reported += self._audit_one(tx, info, started)
        for chunk in _chunks(list(known.values()), CHUNK):
            with self._journal.transaction() as tx:
                for row in chunk:
                    reported += self._vanished(tx, row, started)
        self._selector.listed(infos)  # operator choices of domains gone
        self.runs += 1
        self.last_run_at = started
        self.last_duration = self._clock() - started
        self.last_reported = reported
        LOG.info('Power-state audit: %d domain(s) in %.2fs, %d failure(s) '
                 'reported%s', len(infos), self.last_duration, reported,
                 '; %d left to their events still waiting for the journal'
                 % self._waited if self._waited else '')
        return reported

    @staticmethod
    def _changed(info, row, started):
        if row is None:
            return True
        if row.updated_at > started:
            return False  # an event knows better
        current = power_state.STATE_MAP[info.power_state]
        # A failure state the journal has not seen counts even when the
        # power state is the same (stopped by an operator, then started
        # and crashed while nobody watched).
        # Running with an incoming migration on record: its RESUMED was
        # missed; the row must be rewritten to end the migration, or a
        # later death is taken for a failed migration and ignored.
        return row.power_state != current or (
            current == 'running' and (_closes_when_running(row)
                                      or bool(row.incoming_migration))) or (
            info.state_reason != row.state_reason
            and decisions.from_state(info.state_reason) is not None)

    def _audit_one(self, tx, info, started):
        if self._left_to_events(info.uuid):
            return 0
        row = self._store.get(tx, info.uuid)
        if row is not None and not self._changed(info, row, started):
            return 0
        current = power_state.STATE_MAP[info.power_state]
        # Running: any incoming migration is over (its RESUMED was
        # missed).  Paused or off: the listing cannot tell; keep the fact.
        self._store.record(tx, info.uuid, info.name, current,
                           info.state_reason, self._clock(),
                           incoming_migration=False
                           if info.power_state == power_state.RUNNING
                           else None)
        if current == 'running' and row is not None and \
                _closes_when_running(row):
            LOG.info('%s (%s) runs again: failure episode (%s) closed',
                     info.name, info.uuid, row.failure_cause)
            self._store.close_failure(tx, info.uuid, self._clock())
        if row is None:
            return 0  # first sight: recorded, never reported
        verdict = decisions.from_state(info.state_reason)
        if verdict is None:
            return 0
        if row.incoming_migration:
            LOG.info('%s (%s): %s during an incoming migration: not a '
                     'failure (the instance runs on at the source)',
                     info.name, info.uuid, info.state_reason)
            return 0
        return int(self._reporter.report(tx, row, info.uuid, info.name,
                                         verdict, self._clock()))

    def _left_to_events(self, uuid):
        """Asked inside the audit's transaction: the event path cannot
        commit meanwhile, so an event not written now is written after."""
        if self.events_waiting(uuid):
            self._waited += 1
            return True
        return False

    def _vanished(self, tx, row, started):
        if self._left_to_events(row.uuid):
            return 0
        current = self._store.get(tx, row.uuid)
        if current is None or current.updated_at > started:
            return 0  # gone already, or defined after the listing
        self._store.forget(tx, row.uuid)
        if self._selector.disabled(row.uuid):
            # Disabled by an operator: its events went unseen, so the
            # journal still says running (deleted or migrated during
            # maintenance, most likely).  Nothing to report.
            return 0
        if current.incoming_migration:
            LOG.info('%s (%s): gone before its incoming migration resumed '
                     'here: not a failure', row.name, row.uuid)
            return 0
        if current.power_state == 'running' and not current.failure_cause:
            return int(self._reporter.report(
                tx, current, row.uuid, row.name, decisions.vanished(),
                self._clock()))
        return 0


def _closes_when_running(row):
    """An open episode that "running" ends.  A hung guest runs all along:
    its episode is the guest-agent monitor's to close (an answer, a boot),
    or a crash of the hung guest would be reported a second time."""
    return bool(row.failure_cause) and \
        row.failure_cause != fields.FailureCause.GUEST_HUNG


CHUNK = 500

# Seconds before an audit whose write failed runs again.
JOURNAL_RETRY = 3.0


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]
