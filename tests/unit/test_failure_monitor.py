"""Events and audits become decisions (fake libvirt, real SQLite journal).

What a user notices: which instance.failure notifications land in the
outbox (and so reach Masakari), with which (event, vir_domain_event) pair,
and that operator actions only ever give instance.lifecycle.
"""

import pytest

from tests.conftest import BACKEND
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import audit as audit_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import overrides
from vmha.manager import selection
from vmha.manager import state

RUNNING, PAUSED, SHUTOFF, CRASHED = 1, 3, 5, 6


class Agent:
    """One agent process: driver, journal, monitor and audit."""

    def __init__(self, path, fake=None, include=('*',), exclude=(),
                 stopped_delay=15.0):
        self.driver = virt.make_driver(stopped_delay=stopped_delay,
                                       fake=fake)
        self.fake = self.driver.fake
        self.journal = db.Journal(path)
        self.outbox = outbox_lib.Outbox(self.journal)
        self.reporter = failure_monitor.Reporter(
            self.outbox, state.StateStore(self.journal), 'compute-1')
        self.selector = selection.Selector(self.driver, include, exclude)
        self.audit = audit_lib.PowerStateAudit(
            self.driver, self.journal, self.reporter, self.selector,
            concurrency.get(BACKEND), store=self.reporter.store)
        self.monitor = failure_monitor.FailureMonitor(
            self.driver, self.journal, self.reporter, self.selector,
            'qemu:///system', on_resync=self.audit.request,
            store=self.reporter.store, outbox=self.outbox)
        self.driver.register_event_listener(self.monitor)
        self.driver.init_host()

    def fire(self, dom, event_id, *args):
        self.fake.connection.fire(event_id, dom, *args)

    def dispatch(self):
        self.driver.host.handler.dispatch_pending()

    def messages(self, event_type):
        return [m for m in self.outbox.pending(100000)
                if m.event_type == event_type]

    def failures(self):
        return [(m.payload['vmha_object.data']['name'],
                 m.payload['vmha_object.data']['cause'],
                 m.payload['vmha_object.data']['event'],
                 m.payload['vmha_object.data']['vir_domain_event'])
                for m in self.messages('instance.failure')]

    def close(self):
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'))
    yield agent
    agent.close()


QEMU_DIED = ('qemu_died', 'LIFECYCLE', 'STOPPED_FAILED')
PANIC = ('guest_panic', 'LIFECYCLE', 'STOPPED_FAILED')
CRASHED_UNKNOWN = ('crashed', 'LIFECYCLE', 'STOPPED_FAILED')
IO = ('io_error', 'IO_ERROR', 'IO_ERROR_REPORT')
WATCHDOG = ('watchdog', 'LIFECYCLE', 'STOPPED_FAILED')


@pytest.mark.parametrize('events, state_after, expected', [
    # QEMU died.
    ([(0, 5, 5)], (SHUTOFF, 6), [QEMU_DIED]),
    # Guest panic (pvpanic): CRASHED at once, STOPPED_CRASHED later.
    ([(0, 8, 0), (0, 5, 2)], (SHUTOFF, 3), [PANIC]),
    # I/O error pausing the guest: three events, one failure.
    ([(4, '/d.qcow2', 'virtio-disk0', 1),
      (6, '/d.qcow2', 'virtio-disk0', 1, 'enospc'), (0, 3, 2)],
     (PAUSED, 5), [IO]),
    ([(4, '/d.qcow2', 'virtio-disk0', 2)], (RUNNING, 1), [IO]),
    # An I/O error the hypervisor ignored is no failure.
    ([(4, '/d.qcow2', 'virtio-disk0', 0)], (RUNNING, 1), []),
    # Watchdog pausing the guest.
    ([(3, 1), (0, 3, 3)], (PAUSED, 6), [WATCHDOG]),
    # Watchdog that reset the guest: for the record, not for Masakari.
    ([(3, 2)], (RUNNING, 1), [('watchdog', 'WATCHDOG', 'WATCHDOG_RESET')]),
    # Control error: a death if the domain is gone, else for the record.
    ([(7,)], (SHUTOFF, 8), [QEMU_DIED]),
    ([(7,)], (RUNNING, 1), [('control_error', 'CONTROL_ERROR', 'UNKNOWN')]),
    # Operator and nova actions: never failures.
    ([(0, 6, 1), (0, 5, 0)], (SHUTOFF, 1), []),   # shutdown in the guest
    ([(0, 5, 1)], (SHUTOFF, 2), []),              # destroy
    ([(0, 3, 0)], (PAUSED, 1), []),               # pause
    ([(0, 5, 4)], (SHUTOFF, 5), []),              # save
    ([(0, 3, 1), (0, 5, 3)], (SHUTOFF, 4), []),   # live migration away
    ([(1,)], (RUNNING, 1), []),                   # guest reboot
])
def test_each_event_kind_gives_the_right_decision(agent, events, state_after,
                                                  expected):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()
    for event in events:
        agent.fire(dom, *event)
    dom.state_value = state_after
    agent.dispatch()
    agent.driver.clock.advance(60)  # release any held-back STOPPED
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == expected


def test_operator_actions_are_recorded_as_lifecycle(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.fire(dom, 0, 3, 0)
    agent.fire(dom, 0, 4, 0)
    agent.dispatch()
    lifecycle = [m.payload['vmha_object.data']['vir_domain_event']
                 for m in agent.messages('instance.lifecycle')]
    assert lifecycle == ['STARTED_BOOTED', 'SUSPENDED_PAUSED',
                         'RESUMED_UNPAUSED']
    assert agent.failures() == []


def test_a_stop_the_domain_already_recovered_from_is_not_reported(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 5, 5)
    dom.state_value = (RUNNING, 1)  # nova restarted it before we looked
    agent.dispatch()
    assert agent.failures() == []


def test_a_dead_transient_domain_is_still_reported(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 5, 5)
    del agent.fake.domains[dom.UUIDString()]  # transient: gone when stopped
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]


def test_one_report_per_episode_and_a_new_one_after_recovery(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 5, 5)
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    agent.audit.run_once()  # sees SHUTOFF_FAILED once more: same episode
    assert len(agent.failures()) == 1
    dom.state_value = (RUNNING, 1)
    agent.fire(dom, 0, 2, 0)  # Masakari restarted it
    agent.fire(dom, 0, 5, 5)  # and it dies again
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    assert len(agent.failures()) == 2


def test_crash_storm_of_100_domains_gives_100_decisions(agent):
    doms = [agent.fake.add_domain('vm-%03d' % i) for i in range(100)]
    for dom in doms:
        agent.fire(dom, 0, 5, 5)
        dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    failures = agent.messages('instance.failure')
    assert len(failures) == 100
    assert {m.payload['vmha_object.data']['uuid'] for m in failures} == {
        d.UUIDString() for d in doms}
    assert agent.reporter.decisions_total == 100


def test_delayed_stopped_absorbs_a_reboot(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 5, 1)  # hard reboot: destroy...
    agent.fire(dom, 0, 2, 0)  # ...and start
    agent.dispatch()
    agent.driver.clock.advance(60)
    agent.dispatch()
    lifecycle = [m.payload['vmha_object.data']['vir_domain_event']
                 for m in agent.messages('instance.lifecycle')]
    assert lifecycle == ['STARTED_BOOTED']
    assert agent.failures() == []


def test_failure_during_an_agent_restart_is_found_by_the_audit(tmp_path):
    path = str(tmp_path / 'vmha.sqlite')
    first = Agent(path)
    dom = first.fake.add_domain('vm-1')
    first.fire(dom, 0, 2, 0)
    first.dispatch()
    first.close()
    # While no agent runs, QEMU dies.
    dom.state_value = (SHUTOFF, 6)
    second = Agent(path, fake=first.fake)
    assert second.audit.run_once() == 1
    assert [f[1:] for f in second.failures()] == [QEMU_DIED]
    assert second.audit.run_once() == 0  # once, not at every audit
    second.close()
    # A third start neither forgets nor repeats it.
    third = Agent(path, fake=first.fake)
    assert third.audit.run_once() == 0
    assert len(third.failures()) == 1
    third.close()


@pytest.mark.parametrize('state_after, expected', [
    ((SHUTOFF, 8), [QEMU_DIED]),  # libvirtd restarted, found QEMU dead
    # Shut off "crashed" with no CRASHED event seen: not known to be a
    # panic (a QEMU killed while libvirtd restarted ends so).
    ((SHUTOFF, 3), [CRASHED_UNKNOWN]),
    ((CRASHED, 1), [PANIC]),
    ((PAUSED, 5), [IO]),
    ((PAUSED, 6), [WATCHDOG]),
    ((SHUTOFF, 1), []),  # shut down while we were away: not a failure
    ((SHUTOFF, 2), []),
    ((PAUSED, 1), []),
])
def test_audit_finds_what_events_missed(agent, state_after, expected):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()
    dom.state_value = state_after
    agent.driver.clock.advance(1)
    agent.audit.run_once()
    assert [f[1:] for f in agent.failures()] == expected


def test_audit_reports_a_vanished_running_domain_for_the_record(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()
    del agent.fake.domains[dom.UUIDString()]
    assert agent.audit.run_once() == 1
    assert [f[1:] for f in agent.failures()] == [
        ('vanished', 'LIFECYCLE', 'UNDEFINED_UNSEEN')]
    assert agent.audit.run_once() == 0


def test_audit_does_not_report_a_domain_it_never_saw_running(agent):
    agent.fake.add_domain('old-wreck', state=SHUTOFF, reason=6)
    assert agent.audit.run_once() == 0
    assert agent.failures() == []


def test_connection_restored_asks_for_an_audit(agent):
    agent.fake.connection.close_by_peer(1)
    agent.dispatch()
    agent.driver.host.reconnect()
    agent.audit._requested = False
    agent.dispatch()
    assert agent.audit._requested
    kinds = [m.payload['vmha_object.data']['state']
             for m in agent.messages('host.connection')]
    assert kinds == ['lost', 'restored']


def test_excluded_domains_are_not_monitored(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'), exclude=('scratch-*',))
    watched = agent.fake.add_domain('web-1')
    ignored = agent.fake.add_domain('scratch-1')
    for dom in (watched, ignored):
        agent.fire(dom, 0, 5, 5)
        dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    assert [f[0] for f in agent.failures()] == ['web-1']
    agent.close()


@pytest.mark.parametrize('xml, monitored', [
    ('<monitoring enabled="false"/>', False),
    ('<monitoring enabled="true"/>', True),
    ('<monitoring enabled="maybe"/>', True),  # unclear: name rules decide
    ('<monitoring enabled="false"', True),  # malformed: ignored
    (None, True),
])
def test_metadata_opts_a_domain_out(agent, xml, monitored):
    dom = agent.fake.add_domain('vm-1')
    if xml is not None:
        dom.metadata_elements[selection.NAMESPACE] = xml
    agent.fire(dom, 0, 5, 5)
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    assert bool(agent.failures()) == monitored


def test_metadata_opt_in_beats_an_exclude_pattern(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'), exclude=('*',))
    dom = agent.fake.add_domain('vm-1')
    dom.metadata_elements[selection.NAMESPACE] = (
        '<vmha:monitoring xmlns:vmha="%s" enabled="true"/>'
        % selection.NAMESPACE)
    agent.fire(dom, 0, 5, 5)
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    assert len(agent.failures()) == 1
    agent.close()


def test_a_failed_incoming_migration_is_not_a_failure(agent):
    """Regression: libvirt stops an incoming domain with STOPPED_FAILED
    when a live migration fails; the instance runs on at the source."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED: incoming, not resumed
    agent.dispatch()
    agent.fire(dom, 0, 5, 5)
    del agent.fake.domains[dom.UUIDString()]
    agent.dispatch()
    assert agent.failures() == []
    assert 'STOPPED_FAILED' in [
        m.payload['vmha_object.data']['vir_domain_event']
        for m in agent.messages('instance.lifecycle')]


@pytest.mark.parametrize('state_after', [(SHUTOFF, 5), None],
                         ids=['shut-off', 'gone'])
def test_a_control_error_of_an_aborted_incoming_migration_is_no_failure(
        agent, state_after):
    """Regression (seen on two real libvirtd): when the source aborts a
    live migration, the destination's incoming QEMU closes its monitor
    and libvirt may send CONTROL_ERROR before STOPPED_FAILED; with the
    domain then stopped or gone, the control error was reported as
    qemu_died on the destination for a VM running on at the source."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED: incoming, not resumed
    agent.dispatch()
    agent.fire(dom, 7)  # CONTROL_ERROR
    if state_after is None:
        del agent.fake.domains[dom.UUIDString()]
    else:
        dom.state_value = state_after
    agent.dispatch()
    agent.fire(dom, 0, 5, 5)  # STOPPED_FAILED
    agent.dispatch()
    agent.driver.clock.advance(60)  # release any held-back STOPPED
    agent.dispatch()
    assert agent.failures() == []


def test_a_control_error_after_the_migration_resumed_here_is_a_failure(
        agent):
    """The other side of it: once the VM runs here, a control error with
    the domain gone is its QEMU's death."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED
    agent.fire(dom, 0, 4, 1)  # RESUMED_MIGRATED
    agent.dispatch()
    agent.fire(dom, 7)  # CONTROL_ERROR
    dom.state_value = (SHUTOFF, 5)
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]


def _incoming_migration_then_audit(agent):
    """A domain arrives by live migration and stays paused, waiting for
    it, across one audit (which sees PAUSED_MIGRATION)."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED: incoming, not resumed
    agent.dispatch()
    dom.state_value = (PAUSED, 2)  # PAUSED_MIGRATION
    agent.audit.run_once()
    return dom


def test_an_incoming_migration_failing_after_an_audit_is_not_a_failure(
        agent):
    """Regression: the audit rewrote the journal's state reason from
    STARTED_MIGRATED to PAUSED_MIGRATION, so any incoming migration longer
    than one audit interval that then failed was reported as qemu_died
    (and Masakari stopped and started a VM running healthy at the
    source)."""
    dom = _incoming_migration_then_audit(agent)
    agent.fire(dom, 0, 5, 5)  # STOPPED_FAILED: the migration was aborted
    del agent.fake.domains[dom.UUIDString()]
    agent.dispatch()
    assert agent.failures() == []


@pytest.mark.parametrize('after', ['failed', 'vanished'])
def test_an_aborted_incoming_migration_the_audit_finds_is_not_a_failure(
        agent, after):
    """The STOPPED event was missed: the next audit finds the domain shut
    off (failed), or gone, before its migration ever resumed here."""
    dom = _incoming_migration_then_audit(agent)
    if after == 'failed':
        dom.state_value = (SHUTOFF, 6)
    else:
        del agent.fake.domains[dom.UUIDString()]
    assert agent.audit.run_once() == 0
    assert agent.failures() == []


@pytest.mark.parametrize('resumed', [(4, 1), (4, 3)],
                         ids=['RESUMED_MIGRATED', 'RESUMED_POSTCOPY'])
def test_a_death_after_the_migration_resumed_here_is_a_failure(agent,
                                                               resumed):
    """Once the VM runs here (post-copy included: the source has lost
    it) its QEMU dying is a failure to recover."""
    dom = _incoming_migration_then_audit(agent)
    agent.fire(dom, 0, *resumed)
    agent.dispatch()
    dom.state_value = (SHUTOFF, 6)
    agent.fire(dom, 0, 5, 5)
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]


def test_a_migration_resumed_unseen_ends_at_the_next_audit(agent):
    """The RESUMED event was missed: the audit that sees the domain
    running ends the incoming migration, so a later death is reported."""
    dom = _incoming_migration_then_audit(agent)
    dom.state_value = (RUNNING, 2)  # RUNNING_MIGRATED
    agent.audit.run_once()
    dom.state_value = (SHUTOFF, 6)
    agent.fire(dom, 0, 5, 5)
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]


def test_a_migration_resumed_unseen_before_any_audit_ends_at_the_audit(
        agent):
    """Regression: STARTED_MIGRATED recorded power "running", so an audit
    that found the domain running (its RESUMED_MIGRATED missed) saw no
    change and left ``incoming_migration`` set: the VM's later death was
    ignored as a failed incoming migration, and never recovered."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED: incoming, not resumed
    agent.dispatch()
    dom.state_value = (RUNNING, 2)  # RUNNING_MIGRATED: resumed, unseen
    agent.driver.clock.advance(1)
    agent.audit.run_once()
    dom.state_value = (SHUTOFF, 6)
    agent.fire(dom, 0, 5, 5)
    agent.dispatch()
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]


def test_an_upgraded_row_of_a_resumed_migration_ends_at_the_audit(
        tmp_path, monkeypatch):
    """A row an older vmha wrote for an incoming migration says power
    "running" (and incoming_migration once upgraded); the domain resumed
    while no vmha watched.  The audit must end the migration, or the VM's
    death is ignored."""
    import sqlite3
    path = str(tmp_path / 'vmha.sqlite')
    with monkeypatch.context() as patch:  # the journal as vmha 4 left it
        patch.setattr(db, 'MIGRATIONS', db.MIGRATIONS[:4])
        patch.setattr(db, 'SCHEMA_VERSION', 4)
        db.Journal(path).close()
    agent = Agent(path)
    try:
        dom = agent.fake.add_domain('vm-1')
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO domain_state (uuid, name, power_state, "
                     "state_reason, updated_at, incoming_migration) VALUES "
                     "(?, 'vm-1', 'running', 'PAUSED_MIGRATION', 1.0, 1)",
                     (dom.UUIDString(),))
        conn.commit()
        conn.close()
        dom.state_value = (RUNNING, 2)  # RUNNING_MIGRATED
        agent.audit.run_once()
        dom.state_value = (SHUTOFF, 6)
        agent.fire(dom, 0, 5, 5)
        agent.dispatch()
        assert [f[1:] for f in agent.failures()] == [QEMU_DIED]
    finally:
        agent.close()


def test_an_incoming_migration_is_recorded_paused(agent):
    """The domain of an incoming migration is paused until it resumes
    here; the journal (and vmha-status) must not call it running."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 1)  # STARTED_MIGRATED
    agent.dispatch()
    row = agent.reporter.store.all()[dom.UUIDString()]
    assert (row.power_state, row.state_reason, row.incoming_migration) == (
        'paused', 'PAUSED_MIGRATION', 1)
    lifecycle = agent.messages('instance.lifecycle')[-1]
    assert lifecycle.payload['vmha_object.data']['power_state'] == 'paused'


def test_events_and_the_audit_store_one_state_vocabulary(agent):
    """Regression: events stored their own names (STOPPED_FAILED) in
    state_reason and the audit libvirt's states (SHUTOFF_FAILED)."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    dom.state_value = (SHUTOFF, 6)
    agent.fire(dom, 0, 5, 5)
    agent.dispatch()
    by_event = agent.reporter.store.all()[dom.UUIDString()]
    agent.driver.clock.advance(1)
    agent.audit.run_once()
    by_audit = agent.reporter.store.all()[dom.UUIDString()]
    assert by_event.state_reason == by_audit.state_reason == 'SHUTOFF_FAILED'
    assert by_audit.updated_at == by_event.updated_at  # nothing to change


def test_a_journal_of_schema_4_keeps_its_incoming_migration(tmp_path,
                                                           monkeypatch):
    """A row an older vmha wrote during an incoming migration (the event
    name in state_reason) still protects the migration after upgrading."""
    import sqlite3
    path = str(tmp_path / 'vmha.sqlite')
    with monkeypatch.context() as patch:  # the journal as vmha 4 left it
        patch.setattr(db, 'MIGRATIONS', db.MIGRATIONS[:4])
        patch.setattr(db, 'SCHEMA_VERSION', 4)
        db.Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO domain_state (uuid, name, power_state, "
                 "state_reason, updated_at) VALUES ('u-1', 'vm-1', "
                 "'running', 'STARTED_MIGRATED', 1.0), ('u-2', 'vm-2', "
                 "'shutdown', 'STOPPED_FAILED', 1.0)")
    conn.commit()
    conn.close()
    journal = db.Journal(path)
    rows = state.StateStore(journal).all()
    journal.close()
    assert (rows['u-1'].state_reason, rows['u-1'].incoming_migration) == (
        'PAUSED_MIGRATION', 1)
    assert rows['u-2'].state_reason == 'SHUTOFF_FAILED'


def test_a_guest_running_its_crash_kernel_is_left_alone(agent):
    """Regression: CRASHED_CRASHLOADED means kdump runs; stopping the
    guest would lose the dump."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 8, 1)
    agent.dispatch()
    assert agent.failures() == []


def test_a_panic_the_guest_restarted_from_is_not_reported(agent):
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 8, 0)  # on_crash=restart: running again already
    agent.dispatch()
    assert agent.failures() == []


def test_audit_sees_a_failure_behind_an_unchanged_power_state(agent):
    """Regression: stopped by an operator, then started and crashed while
    the agent was away: still 'shutdown', but now SHUTOFF_FAILED."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 5, 0)
    dom.state_value = (SHUTOFF, 1)
    agent.dispatch()
    agent.driver.clock.advance(60)
    agent.dispatch()
    agent.audit.run_once()
    assert agent.failures() == []
    dom.state_value = (SHUTOFF, 6)
    assert agent.audit.run_once() == 1
    assert [f[1:] for f in agent.failures()] == [QEMU_DIED]
    assert agent.audit.run_once() == 0


def test_a_metadata_lookup_error_is_asked_again(agent):
    """Regression: a passing libvirt error was cached as the answer."""
    from tests.fixtures import fakelibvirt
    dom = agent.fake.add_domain('vm-1')
    calls = []

    def flaky(kind, uri, flags=0):
        calls.append(uri)
        if len(calls) == 1:
            raise fakelibvirt.libvirtError('connection reset',
                                           fakelibvirt.VIR_ERR_SYSTEM_ERROR)
        return '<monitoring enabled="false"/>'
    dom.metadata = flaky
    assert agent.selector.is_monitored(dom.UUIDString(), 'vm-1')
    assert not agent.selector.is_monitored(dom.UUIDString(), 'vm-1')
    assert not agent.selector.is_monitored(dom.UUIDString(), 'vm-1')
    assert len(calls) == 2


def test_the_audit_leaves_a_hung_guests_episode_open(agent):
    """Regression: a hung guest runs all along, so every audit closed its
    failure episode, and when its QEMU then died it was reported again."""
    dom = agent.fake.add_domain('vm-1')
    agent.audit.run_once()  # first sight: recorded running
    hung = guest_monitor.HUNG_VERDICT
    with agent.journal.transaction() as tx:
        row = agent.reporter.store.get(tx, dom.UUIDString())
        assert agent.reporter.report(tx, row, dom.UUIDString(), 'vm-1', hung,
                                     1000.0)
    agent.audit.run_once()  # libvirt still says running
    assert agent.reporter.store.all()[dom.UUIDString()].failure_cause == \
        'guest_hung'
    agent.fire(dom, 0, 5, 5)  # then its QEMU dies
    dom.state_value = (SHUTOFF, 6)
    agent.dispatch()
    assert [f[1] for f in agent.failures()] == ['guest_hung']


def test_a_disabled_domain_that_disappears_is_not_reported(agent):
    """Regression: disabled, then deleted or migrated away during the
    maintenance: its events went unseen, so the journal still said
    running, and the next audit reported it as vanished."""
    dom = agent.fake.add_domain('vm-1')
    agent.audit.run_once()  # recorded running
    agent.selector.override(dom.UUIDString(),
                            overrides.Override(False, 'maintenance', 0.0))
    del agent.fake.domains[dom.UUIDString()]
    assert agent.audit.run_once() == 0
    assert agent.failures() == []
    assert dom.UUIDString() not in agent.reporter.store.all()


def test_a_death_libvirtd_shows_late_after_a_reconnect_is_reported_soon(
        agent, wait_for):
    """Regression: a QEMU killed while libvirtd restarted is listed as
    running for a moment after the reconnect, then "shut off (daemon)"
    with no event; one audit right after the reconnect missed it, and
    the failure waited for the next periodic audit (60 s)."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()
    audit = audit_lib.PowerStateAudit(
        agent.driver, agent.journal, agent.reporter, agent.selector,
        concurrency.get(BACKEND), interval=60, settle_time=2.0,
        settle_interval=0.1, store=agent.reporter.store)
    listings = []
    list_instances = agent.driver.list_instances

    def libvirtd_settling():
        infos = list_instances()
        listings.append(len(infos))
        if len(listings) == 2:  # libvirtd now knows QEMU is gone
            dom.state_value = (SHUTOFF, 8)  # SHUTOFF_DAEMON
        return infos
    agent.driver.list_instances = libvirtd_settling
    audit.start()  # the start-up audit
    wait_for(lambda: audit.runs == 1, what='the start-up audit')
    audit.request_settling()  # what CONNECTION_RESTORED asks for
    backend_sleep = concurrency.get(BACKEND).sleep
    try:
        wait_for(lambda: agent.failures(), timeout=2.0,
                 what='the failure within the settle time')
        assert [f[1:] for f in agent.failures()] == [QEMU_DIED]
        backend_sleep(2.2)  # past the settle time: follow-ups end
        runs = audit.runs
        backend_sleep(0.5)
        assert audit.runs == runs
    finally:
        audit.stop()


def test_a_control_error_on_a_running_domain_asks_for_another_look(agent):
    """libvirtd reconnecting to a QEMU that is gone lists the domain as
    running for a moment: the control error alone cannot say it died,
    so the audit is asked to look again (see the settling audit)."""
    dom = agent.fake.add_domain('vm-1')
    agent.fire(dom, 0, 2, 0)
    agent.dispatch()
    agent.audit._requested = False
    agent.fire(dom, 7)
    agent.dispatch()
    assert agent.audit._requested
