"""The instance failure monitor: dispatched events become decisions.

For each event of a monitored domain, in one journal transaction:
remember the domain's new power state, queue an ``instance.lifecycle``
notification for a transition, and, when ``decisions.from_event`` calls
it a failure, queue one ``instance.failure`` notification.  Failures that
only hold while the domain is down are re-checked against its current
state first (events race: nova may have restarted it already).  A
recoverable failure opens an *episode* in the journal; the same domain is
not reported again until it is seen running.

Runs on the dispatcher: one transaction per event, no thread per event.
The re-check is one local libvirt call (domain state is libvirtd's own
bookkeeping; it never waits on QEMU).

Never lost.  An event whose transaction failed (``JournalError``: the
lock held past busy_timeout, a full disk) is kept, with every event after
it, in one FIFO, and handled again, in arrival order, on later events and
on the dispatcher's turnovers (``retry_pending``, at least once a second)
with a short backoff (``vmha.journal.retry``).  So a later event of the
same domain never overtakes it, and a failure decided while the journal
cannot be written reaches the outbox once it can.  A control error is
judged by the domain's state as it arrives, never at the retry (the
domain may have been shut down meanwhile); only a failure that needs the
domain down is checked again when written.  Host events
(connection lost or restored) queue the same way.  At most
``PENDING_LIMIT`` events wait; past that, new ones are dropped with an
error, and the audit runs once the backlog is written.
"""

import collections
import logging
import time
import uuid as uuid_lib

from vmha import concurrency
from vmha import timestamps
from vmha.journal import db
from vmha.journal import retry
from vmha.manager import decisions
from vmha.objects import fields
from vmha.objects import host_connection
from vmha.objects import instance
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt import power_state

LOG = logging.getLogger(__name__)

# The power state a transition leaves the domain in.
_POWER_STATE_AFTER = {
    ev.EVENT_LIFECYCLE_STARTED: power_state.RUNNING,
    ev.EVENT_LIFECYCLE_RESUMED: power_state.RUNNING,
    ev.EVENT_LIFECYCLE_SHUTTING_DOWN: power_state.RUNNING,
    ev.EVENT_LIFECYCLE_STOPPED: power_state.SHUTDOWN,
    ev.EVENT_LIFECYCLE_PAUSED: power_state.PAUSED,
    ev.EVENT_LIFECYCLE_POSTCOPY_STARTED: power_state.PAUSED,
    ev.EVENT_LIFECYCLE_MIGRATION_COMPLETED: power_state.PAUSED,
    ev.EVENT_LIFECYCLE_SUSPENDED: power_state.SUSPENDED,
    ev.EVENT_LIFECYCLE_CRASHED: power_state.CRASHED,
}

# Most events kept while the journal cannot be written (about a kilobyte
# each): hours of a busy host's events, minutes of an event storm.
PENDING_LIMIT = 10000


def _incoming_migration(event):
    """True when ``event`` starts an incoming live migration, False when
    it ends one (or shows there is none), None when it says nothing.

    The migration is over once the domain resumes here (post-copy too:
    from then on the VM runs on this host and its death is a failure)
    or stops; a paused or suspended domain may still be migrating."""
    if event.vir_domain_event == 'STARTED_MIGRATED':
        return True
    if event.transition in (ev.EVENT_LIFECYCLE_STARTED,
                            ev.EVENT_LIFECYCLE_RESUMED,
                            ev.EVENT_LIFECYCLE_STOPPED):
        return False
    return None


# guest_monitor.py stamps its notifications through this name.
utc = timestamps.utc


class Reporter:
    """Writes failure decisions and state into one journal transaction;
    shared by the event path and the audit.

    :param limiter: a ``rate_limit.NotificationLimiter`` for failures
        Masakari does not act on; None sends every one
    """

    def __init__(self, outbox, store, host, clock=time.time, limiter=None):
        self.outbox = outbox
        self.store = store
        self.host = host
        self.clock = clock
        self.limiter = limiter
        self.decisions_total = 0
        self.decisions_by_cause = collections.Counter()

    def report(self, tx, row, uuid, name, verdict, when):
        """Queue the failure unless its episode is already open, or it is
        a repeat the limiter holds back.

        :returns: True if a notification was queued
        """
        episode = None
        suppressed = 0
        if decisions.recoverable(verdict):
            if row is not None and row.failure_cause:
                LOG.debug('%s (%s): %s already reported as %s', name, uuid,
                          verdict.vir_domain_event, row.failure_cause)
                return False
            if row is None:
                self.store.record(tx, uuid, name, 'pending',
                                  verdict.vir_domain_event, self.clock())
            # Every resend of the notification carries this id, a new
            # failure of the domain a new one: consumers tell them apart.
            episode = uuid_lib.uuid4().hex
            self.store.open_failure(tx, uuid, verdict.cause, self.clock(),
                                    episode)
        elif self.limiter is not None:
            admission = self.limiter.admit(uuid, verdict.cause,
                                           on_rollback=tx.after_rollback)
            if not admission.send:
                # Counted in memory only: no journal write for a repeat.
                LOG.debug('%s (%s): %s again, not sent (%d since the last '
                          'one sent)', name, uuid, verdict.cause,
                          admission.suppressed)
                return False
            suppressed = admission.suppressed
        self.outbox.add(tx, instance.failure_notification(
            self.host, uuid, name, verdict.event, verdict.vir_domain_event,
            verdict.cause, utc(when), evidence=verdict.evidence,
            episode=episode, suppressed=suppressed).to_message())
        self.store.note_decision(tx, uuid, verdict.cause, self.clock())
        # Counted and logged once written: a transaction the journal
        # refused is retried, and its decision must not count per try.
        tx.after_commit(lambda: self._reported(name, uuid, verdict, episode,
                                               suppressed))
        return True

    def _reported(self, name, uuid, verdict, episode, suppressed):
        self.decisions_total += 1
        self.decisions_by_cause[verdict.cause] += 1
        if episode is not None:
            LOG.warning('Failure of %s (%s): %s, reported as %s/%s '
                        '(episode %s)', name, uuid, verdict.cause,
                        verdict.event, verdict.vir_domain_event, episode)
        else:
            LOG.warning('Failure of %s (%s): %s, reported as %s/%s (for the '
                        'record: Masakari does not act on it%s)', name, uuid,
                        verdict.cause, verdict.event,
                        verdict.vir_domain_event,
                        '; %d repeat(s) not sent since the last one'
                        % suppressed if suppressed else '')

    # What a monitor with an episode of its own needs (the guest-agent
    # monitor), each in the monitor's transaction.

    def report_failure(self, tx, uuid, name, verdict, when):
        """``report`` against the domain's row as the journal has it."""
        return self.report(tx, self.store.get(tx, uuid), uuid, name,
                           verdict, when)

    def close_episode(self, tx, uuid, cause):
        """Close the domain's open failure episode if ``cause`` opened it
        (an episode of another cause is not the caller's to close)."""
        row = self.store.get(tx, uuid)
        if row is not None and row.failure_cause == cause:
            self.store.close_failure(tx, uuid, self.clock())

    def send(self, tx, notification):
        """Queue a notification object for delivery."""
        self.outbox.add(tx, notification.to_message())


class FailureMonitor:
    """A driver listener turning events into notifications and decisions.

    :param driver: the virt driver (current-state re-checks)
    :param journal: the ``Journal``
    :param reporter: the ``Reporter`` (failure decisions)
    :param selector: a ``selection.Selector``
    :param uri: the libvirt URI, for host.connection notifications
    :param on_resync: called when the audit should run now (connection
        restored, events dropped)
    :param store: the ``state.StateStore`` (each domain's last state)
    :param outbox: the ``outbox.Outbox`` (lifecycle and host.connection
        notifications)
    """

    def __init__(self, driver, journal, reporter, selector, uri,
                 on_resync=None, run_blocking=None, clock=time.monotonic,
                 *, store, outbox):
        self._driver = driver
        # libvirt calls off the eventlet hub (the backend's run_blocking).
        self._run_blocking = run_blocking or concurrency.inline_run_blocking
        self._journal = journal
        self._reporter = reporter
        self._store = store
        self._outbox = outbox
        self._selector = selector
        self._uri = uri
        self._on_resync = on_resync or (lambda: None)
        # (what, uuid, write): events not yet in the journal, oldest
        # first; uuid None for a host event.
        self._pending = collections.deque()
        self._waiting = collections.Counter()  # uuid -> events in _pending
        self._retry = retry.WriteRetry(clock)
        self._dropped = 0  # past PENDING_LIMIT, since the backlog began

    def pending_writes(self):
        """Events handled but not yet written (the journal failed)."""
        return len(self._pending)

    def events_waiting(self, uuid):
        """True while an event of this domain is not yet written: the
        audit leaves the domain alone, or it would act on a row older
        than the event and the event, written after it, would undo (or
        repeat) what the audit did.  Read from the audit's task; only the
        dispatcher changes the count."""
        return self._waiting.get(uuid, 0) > 0

    def __call__(self, event):
        if isinstance(event, ev.InstanceEvent):
            redefined = (isinstance(event, ev.LifecycleEvent)
                         and event.transition in ev.CONFIG_TRANSITIONS)
            if redefined:
                self._selector.forget(event.uuid)
            if self._selector.is_monitored(event.uuid, event.name):
                # Decided now, not when written: a control error kept
                # behind a journal outage and judged later by the state
                # of the moment would take a shutdown meanwhile for a
                # death.
                verdict = self._on_arrival(event,
                                           decisions.from_event(event))
                self._write(event.describe(),
                            lambda: self._instance_event(event, verdict),
                            event.uuid)
            if redefined:  # undefined: forget it for good
                self._selector.forget(event.uuid)
        elif isinstance(event, ev.HostEvent):
            self._host_event(event)

    def _write(self, what, write, uuid=None):
        """Run ``write()`` (one journal transaction) behind every write
        still waiting, so that none overtakes an older one."""
        what = ' '.join(what.split())  # describe() pads its columns
        if len(self._pending) >= PENDING_LIMIT:
            if not self._dropped:
                LOG.error('%d events wait for the journal: dropping new '
                          'ones (first: %s); the audit runs once they are '
                          'written', len(self._pending), what)
            self._dropped += 1
            return
        self._pending.append((what, uuid, write))
        if uuid is not None:
            self._waiting[uuid] += 1
        self.retry_pending()

    def retry_pending(self):
        """Write what waits, oldest first, unless backing off; stops at
        the first failure.  The dispatcher calls it on every turnover."""
        if not self._pending or not self._retry.due():
            return
        while self._pending:
            what, uuid, write = self._pending[0]
            try:
                write()
            except db.JournalError as error:
                delay = self._retry.failed()
                LOG.error('Cannot write %s: %s; %d event(s) kept, next try '
                          'in %.1fs', what, error, len(self._pending), delay)
                return
            except Exception:
                # Not the journal: trying again would fail again.
                LOG.exception('Handling %s failed; it is skipped', what)
            self._pending.popleft()
            if uuid is not None:
                self._waiting[uuid] -= 1
                if not self._waiting[uuid]:
                    del self._waiting[uuid]
        resync = False
        if self._retry.succeeded():
            # An audit that ran meanwhile left the domains with events
            # waiting alone: look at them now.
            LOG.warning('The journal takes writes again: every kept event '
                        'is written; auditing now')
            resync = True
        if self._dropped:
            LOG.error('%d event(s) were dropped while the journal could not '
                      'be written: auditing now', self._dropped)
            self._dropped = 0
            resync = True
        if resync:
            self._on_resync()

    def _instance_event(self, event, verdict):
        verdict = self._recheck_stopped(event, verdict)
        with self._journal.transaction() as tx:
            row = self._store.get(tx, event.uuid)
            if verdict is not None and verdict.needs_stopped and \
                    row is not None and row.incoming_migration:
                # An incoming migration that never resumed here: libvirt
                # stops it when the migration fails or is cancelled, and
                # the instance runs on at the source.
                LOG.info('%s (%s): %s of an incoming migration: not a '
                         'failure', event.name, event.uuid,
                         event.vir_domain_event)
                verdict = None
            if isinstance(event, ev.LifecycleEvent):
                self._record_transition(tx, row, event)
            if verdict is not None:
                self._reporter.report(tx, row, event.uuid, event.name,
                                      verdict, event.timestamp)

    def _on_arrival(self, event, verdict):
        """A control error, judged by the domain's state as the event
        arrives: a death if it no longer runs."""
        if verdict is None or \
                verdict.cause != fields.FailureCause.CONTROL_ERROR:
            return verdict
        found, info = self._current_info(event, verdict)
        if not found:
            return verdict
        verdict = decisions.from_control_error(verdict, info)
        if verdict.cause == fields.FailureCause.CONTROL_ERROR:
            # Still listed as running: libvirtd may be reconnecting to
            # a QEMU that is in fact gone (it then ends "shut off
            # (daemon)" with no event): look again while it settles.
            self._on_resync()
        return verdict

    def _recheck_stopped(self, event, verdict):
        """A failure that holds only while the domain is down, checked
        against its state as it is written (after a journal outage too:
        a domain nova restarted meanwhile is history, not a failure)."""
        if verdict is None or not verdict.needs_stopped:
            return verdict
        found, info = self._current_info(event, verdict)
        if found and info is not None and \
                info.power_state == power_state.RUNNING:
            LOG.info('%s (%s): %s, but the domain runs again (%s): no '
                     'failure to report', event.name, event.uuid,
                     verdict.vir_domain_event, info.state_reason)
            return None
        return verdict

    def _current_info(self, event, verdict):
        """(True, the domain's InstanceInfo or None if gone), or (False,
        None) when libvirt cannot tell (the verdict then stands)."""
        try:
            return True, self._run_blocking(self._driver.get_instance_info,
                                            event.uuid)
        except exception.DomainNotFound:
            return True, None  # a transient domain is gone once it stops
        except exception.HypervisorError as error:
            LOG.warning('Cannot re-check %s (%s) before reporting %s: %s; '
                        'reporting anyway', event.name, event.uuid,
                        verdict.vir_domain_event, error)
            return False, None

    def _record_transition(self, tx, row, event):
        now = self._reporter.clock()
        power = _POWER_STATE_AFTER.get(event.transition, power_state.NOSTATE)
        if event.vir_domain_event == 'STARTED_MIGRATED':
            # An incoming migration starts the domain paused; it runs
            # once RESUMED.  Recorded running, an audit that found it
            # running (RESUMED missed) would see nothing to rewrite.
            power = power_state.PAUSED
        if event.transition == ev.EVENT_LIFECYCLE_UNDEFINED:
            self._store.forget(tx, event.uuid)
        elif event.transition != ev.EVENT_LIFECYCLE_DEFINED:
            self._store.record(tx, event.uuid, event.name,
                               power_state.STATE_MAP[power],
                               event.state_reason, now,
                               incoming_migration=_incoming_migration(event))
            if power == power_state.RUNNING and row is not None \
                    and row.failure_cause:
                LOG.info('%s (%s) runs again: failure episode (%s) closed',
                         event.name, event.uuid, row.failure_cause)
                self._store.close_failure(tx, event.uuid, now)
        self._outbox.add(tx, instance.lifecycle_notification(
            self._reporter.host, event.uuid, event.name,
            power_state.STATE_MAP[power], event.transition_name,
            event.event_name, event.vir_domain_event,
            utc(event.timestamp)).to_message())

    def _host_event(self, event):
        if isinstance(event, ev.ConnectionLostEvent):
            self._queue(host_connection.host_connection_notification(
                self._reporter.host, self._uri, fields.ConnectionState.LOST,
                utc(event.timestamp), reason=event.reason))
        elif isinstance(event, ev.ConnectionRestoredEvent):
            self._queue(host_connection.host_connection_notification(
                self._reporter.host, self._uri,
                fields.ConnectionState.RESTORED, utc(event.timestamp),
                outage_seconds=event.outage_seconds,
                attempts=event.attempts))
            self._on_resync()
        elif isinstance(event, ev.ResyncRequiredEvent):
            self._on_resync()

    def _queue(self, notification):
        def write():
            with self._journal.transaction() as tx:
                self._outbox.add(tx, notification.to_message())
        self._write('%s notification'
                    % notification.event_type.to_event_type(), write)

