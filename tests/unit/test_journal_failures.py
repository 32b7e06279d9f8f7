"""Journal writes that fail lose no decision, and the agent says so
(issue 11 item 2).

Fake libvirt, fake clocks, a real SQLite journal.  "The journal cannot
be written" is a second connection holding the write lock (an operator's
``sqlite3`` shell left in ``BEGIN IMMEDIATE``) with the agent's lock wait
cut to 50 ms.  What a user notices: the instance.failure notification in
the outbox, exactly once, after the lock is released; /healthz
(``HealthCheck.report``) and the systemd watchdog (``turning_over``)
unhealthy meanwhile.
"""

import sqlite3

from tests.conftest import BACKEND
from tests.fixtures import virt
from tests.unit import test_guest_monitor
from vmha import concurrency
from vmha.api import table
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import audit as audit_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_states as gs
from vmha.manager import health
from vmha.manager import selection
from vmha.manager import state

SHUTOFF_FAILED = (5, 6)
SHUTOFF_SHUTDOWN = (5, 1)
RUNNING_BOOTED = (1, 1)
STARTED, STOPPED, DEFINED, SHUTDOWN = 2, 5, 0, 6  # lifecycle event codes
CONTROL_ERROR = 7  # libvirt event id


class LockHolder:
    """Another process holding the journal's write lock."""

    def __init__(self, path):
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute('BEGIN IMMEDIATE')

    def release(self):
        self._conn.execute('COMMIT')
        self._conn.close()


class EventPath:
    """The driver, the journal and the failure monitor, wired as the
    service wires them, dispatched by hand."""

    def __init__(self, path):
        self.clock = virt.FakeClock()
        self.driver = virt.make_driver(clock=self.clock)
        self.fake = self.driver.fake
        self.journal = db.Journal(path, busy_timeout=0.05, clock=self.clock)
        self.outbox = outbox_lib.Outbox(self.journal)
        store = state.StateStore(self.journal)
        reporter = failure_monitor.Reporter(
            self.outbox, store, 'compute-1', clock=self.clock)
        selector = selection.Selector(self.driver)
        self.resyncs = []
        self.monitor = failure_monitor.FailureMonitor(
            self.driver, self.journal, reporter, selector, 'qemu:///system',
            on_resync=lambda: self.resyncs.append(self.clock()),
            clock=self.clock, store=store, outbox=self.outbox)
        # Run by hand (audit.run_once), as its own task would.
        self.audit = audit_lib.PowerStateAudit(
            self.driver, self.journal, reporter, selector,
            concurrency.get(BACKEND), clock=self.clock, store=store)
        self.audit.events_waiting = self.monitor.events_waiting
        self.driver.register_event_listener(self.monitor)
        self.driver.register_turnover_callback(self.monitor.retry_pending)
        self.health = health.HealthCheck(
            self.driver, [], 20.0, 60.0, journal=self.journal,
            writers=[self.monitor])
        self.driver.init_host()

    def dispatch(self, seconds=0.0):
        self.clock.advance(seconds)
        self.driver.host.handler.dispatch_pending()

    def messages(self, event_type):
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(100000)
                if m.event_type == event_type]

    def close(self):
        self.driver.cleanup()
        self.journal.close()


def test_a_failure_decided_while_the_journal_is_locked_is_sent_once_after(
        tmp_path, caplog):
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    dom = agent.fake.add_domain('vm-1')
    agent.fake.fire_lifecycle(dom, STARTED, 0)
    agent.dispatch()
    assert agent.health.report()['status'] == 'ok'

    lock = LockHolder(path)
    dom.state_value = SHUTOFF_FAILED
    agent.fake.fire_lifecycle(dom, STOPPED, 5)  # QEMU died
    agent.fake.fire_lifecycle(dom, DEFINED, 1)  # then its XML changed
    agent.dispatch()
    # One line per failed try names the domain, the cause and what waits.
    assert 'Cannot write LIFECYCLE STOPPED_FAILED vm-1 (%s): cannot use ' \
        'the vmha journal' % dom.UUIDString() in caplog.text
    assert 'database is locked' in caplog.text
    assert '1 event(s) kept, next try in 0.5s' in caplog.text
    agent.dispatch(5.0)  # idle turnovers retry, and fail again
    assert agent.messages('instance.failure') == []
    report = agent.health.report()
    assert report['status'] == 'unhealthy'
    assert report['checks']['journal']['pending'] == 2
    assert 'database is locked' in report['checks']['journal']['error']
    assert not agent.health.turning_over()
    assert agent.health.problems() == [
        'journal cannot be written for 5.0s, 2 write(s) waiting: %s'
        % report['checks']['journal']['error']]

    lock.release()
    agent.dispatch(5.0)  # the next idle turnover writes what waited
    failures = agent.messages('instance.failure')
    assert [(f['name'], f['vir_domain_event']) for f in failures] == [
        ('vm-1', 'STOPPED_FAILED')]
    # In order: the stop is written before the definition change.
    assert [m['vir_domain_event'] for m in
            agent.messages('instance.lifecycle')] == [
        'STARTED_BOOTED', 'STOPPED_FAILED', 'DEFINED_UPDATED']
    assert agent.health.report()['status'] == 'ok'
    assert agent.health.turning_over()
    agent.dispatch(60.0)
    assert len(agent.messages('instance.failure')) == 1
    agent.close()


def test_a_control_error_kept_for_the_journal_is_decided_as_it_arrived(
        tmp_path):
    """Regression: a CONTROL_ERROR kept while the journal was locked was
    decided when written: the guest shut down meanwhile turned it into a
    false qemu_died (Masakari would stop and start a VM nobody lost)."""
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    dom = agent.fake.add_domain('vm-1')
    agent.fake.fire_lifecycle(dom, STARTED, 0)
    agent.dispatch()
    lock = LockHolder(path)
    agent.fake.connection.fire(CONTROL_ERROR, dom)  # the domain runs on
    agent.dispatch()
    dom.state_value = SHUTOFF_SHUTDOWN  # then the guest shuts down
    agent.fake.fire_lifecycle(dom, SHUTDOWN, 1)
    agent.fake.fire_lifecycle(dom, STOPPED, 0)
    agent.dispatch(20.0)  # past the STOPPED hold-back; still locked
    assert agent.messages('instance.failure') == []
    lock.release()
    agent.dispatch(5.0)
    assert [(f['cause'], f['event'], f['vir_domain_event'])
            for f in agent.messages('instance.failure')] == [
        ('control_error', 'CONTROL_ERROR', 'UNKNOWN')]
    assert [m['vir_domain_event'] for m in
            agent.messages('instance.lifecycle')][-1] == 'STOPPED_SHUTDOWN'
    agent.close()


def test_a_stop_kept_for_the_journal_is_rechecked_when_written(tmp_path):
    """A death kept while the journal was locked is not reported if nova
    restarted the domain before it could be written (history, not a
    failure to recover), and is if the domain is still off."""
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    restarted = agent.fake.add_domain('vm-1')
    dead = agent.fake.add_domain('vm-2')
    for dom in (restarted, dead):
        agent.fake.fire_lifecycle(dom, STARTED, 0)
    agent.dispatch()
    lock = LockHolder(path)
    for dom in (restarted, dead):
        dom.state_value = SHUTOFF_FAILED
        agent.fake.fire_lifecycle(dom, STOPPED, 5)  # QEMU died
    agent.dispatch(20.0)
    restarted.state_value = RUNNING_BOOTED  # its event not yet in
    lock.release()
    agent.dispatch(5.0)
    assert [(f['name'], f['vir_domain_event'])
            for f in agent.messages('instance.failure')] == [
        ('vm-2', 'STOPPED_FAILED')]
    agent.close()


def test_an_audit_before_the_kept_events_are_written_reports_once(
        tmp_path):
    """Regression: the audit ran between the journal's return and the
    failure monitor's retry, reported the death it found, and the kept
    events, written after it, closed that episode (the start before the
    death) and reported the same death again, with a new episode id:
    Masakari would recover the VM twice."""
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    dom = agent.fake.add_domain('vm-1')
    agent.fake.fire_lifecycle(dom, STARTED, 0)
    dom.state_value = SHUTOFF_SHUTDOWN
    agent.fake.fire_lifecycle(dom, STOPPED, 0)  # shut down by an operator
    agent.dispatch(20.0)
    lock = LockHolder(path)
    dom.state_value = RUNNING_BOOTED
    agent.fake.fire_lifecycle(dom, STARTED, 0)  # started again
    agent.dispatch()
    dom.state_value = SHUTOFF_FAILED
    agent.fake.fire_lifecycle(dom, STOPPED, 5)  # and QEMU died
    agent.dispatch(20.0)
    assert agent.monitor.pending_writes() == 2
    lock.release()
    agent.audit.run_once()  # the audit's task runs first
    agent.dispatch(5.0)  # then the dispatcher's turnover writes the rest
    agent.audit.run_once()  # the audit the monitor asked for
    failures = agent.messages('instance.failure')
    assert [(f['name'], f['vir_domain_event']) for f in failures] == [
        ('vm-1', 'STOPPED_FAILED')]
    assert agent.resyncs  # the audit looks again once all is written
    agent.close()


def test_connection_lost_while_the_journal_is_locked_is_written_after(
        tmp_path):
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    lock = LockHolder(path)
    agent.fake.connection.close_by_peer()
    agent.dispatch()
    assert agent.messages('host.connection') == []
    lock.release()
    agent.dispatch(1.0)
    assert [m['state'] for m in agent.messages('host.connection')] == [
        'lost']
    agent.close()


def test_events_past_the_bound_are_dropped_loudly_and_audited(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(failure_monitor, 'PENDING_LIMIT', 3)
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    dom = agent.fake.add_domain('vm-1')
    lock = LockHolder(path)
    for _ in range(5):
        agent.fake.fire_lifecycle(dom, STARTED, 0)
    agent.dispatch()
    assert agent.monitor.pending_writes() == 3
    assert '3 events wait for the journal: dropping new ones' in caplog.text
    lock.release()
    agent.dispatch(1.0)
    assert len(agent.messages('instance.lifecycle')) == 3
    assert agent.resyncs == [agent.clock()]  # the audit finds the rest
    assert '2 event(s) were dropped' in caplog.text
    agent.close()


def test_vmha_status_says_the_journal_cannot_be_written(tmp_path):
    path = str(tmp_path / 'vmha.sqlite')
    agent = EventPath(path)
    lock = LockHolder(path)
    agent.fake.connection.close_by_peer()
    agent.dispatch()
    agent.clock.advance(2.0)
    line = table.health_line({'host': 'compute-1',
                              'health': agent.health.report()})
    assert line.startswith('vmha-agent on compute-1: UNHEALTHY (')
    assert 'journal NOT WRITABLE for 2.0s, 1 write(s) waiting' in line
    lock.release()
    agent.dispatch(1.0)
    line = table.health_line({'host': 'compute-1',
                              'health': agent.health.report()})
    assert line.startswith('vmha-agent on compute-1: healthy (')
    assert 'journal' not in line
    agent.close()


class GuestStep:
    """Steps the guest-agent monitor as its loop does: a step that
    raises is logged and the loop goes on."""

    def __init__(self, host):
        self.host = host
        self.errors = []

    def __call__(self, seconds):
        self.host.clock.advance(seconds)
        for _ in range(4):
            try:
                self.host.monitor.step()
            except Exception as error:
                self.errors.append(error)


def test_a_hang_judged_while_the_journal_is_locked_is_reported_once_after(
        tmp_path):
    path = str(tmp_path / 'vmha.sqlite')
    host = test_guest_monitor.Host(path)
    # The agent's 5 s lock wait, cut to 50 ms for the test.
    host.journal._conn.execute('PRAGMA busy_timeout = 50')
    check = health.HealthCheck(
        host.driver, [host.monitor], 20.0, 60.0, journal=host.journal,
        writers=[host.monitor])
    step = GuestStep(host)
    dom = host.vm()
    step(0)
    test_guest_monitor.hang(dom)
    step(5)
    assert host.state_of(dom) == gs.ERROR

    lock = LockHolder(path)
    step(5)  # the second failed ping: hung, reported (in memory)
    assert host.state_of(dom) == gs.REPORTED
    assert host.failures() == []
    assert check.report()['status'] == 'unhealthy'
    assert check.report()['checks']['journal']['pending'] >= 1
    assert not check.turning_over()
    step(1)  # retried, still locked

    lock.release()
    step(5)
    assert host.failures() == [('vm-1', 'guest_hung',
                                'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')]
    assert host.health() == [(gs.ERROR, gs.REPORTED)]
    assert check.report()['status'] == 'ok'
    assert check.report()['checks']['journal']['pending'] == 0
    for _ in range(30):
        step(1)
    assert len(host.failures()) == 1  # nothing that committed is rewritten
    assert step.errors == []
    host.close()


def test_a_guest_monitor_loop_that_stopped_turning_over_starves_the_watchdog(
        tmp_path):
    host = test_guest_monitor.Host(str(tmp_path / 'vmha.sqlite'))
    check = health.HealthCheck(host.driver, [host.monitor], 20.0, 60.0)
    host.step()
    host.driver.host.handler.dispatch_pending()
    assert check.turning_over()
    host.clock.advance(21.0)
    host.driver.host.handler.dispatch_pending()  # the dispatcher still turns
    assert not check.turning_over()
    assert check.report()['checks']['guest_agent'] == {'ok': False,
                                                       'age': 21.0}
    assert check.problems() == [
        'guest-agent monitor loop has not turned over for 21.0s']
    host.step()
    assert check.turning_over()
    host.close()
