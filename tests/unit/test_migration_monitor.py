"""The migration monitor on the fake libvirt, with a fake clock.

What a user notices: the ``instance.migration`` notifications each
migration sends on each side, that no ``instance.failure`` comes from a
migration however it ends (with the failure monitor, the power-state
audit and the guest-agent monitor all listening, the audit run in the
middle of each phase), except the one failed post-copy migration
reported once; what vmha does to stuck migrations (downtime steps, abort,
pause, post-copy) and to a failed one that left the source paused.
Every libvirt call runs inline (``InlinePool``) unless a test holds it
in flight, as the migration call itself is until the test ends it.
"""

import pytest

from tests.conftest import BACKEND
from tests.fixtures import fakelibvirt
from tests.fixtures import pools
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import audit as audit_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import migration_driver
from vmha.manager import migration_monitor
from vmha.manager import overrides
from vmha.manager import selection
from vmha.manager import state

GIB = 2 ** 30
LIFECYCLE, ITERATION, JOB_COMPLETED = 0, 20, 21
# libvirt lifecycle (code, detail) pairs.
STARTED_MIGRATED = (2, 1)
SUSPENDED_MIGRATED = (3, 1)
SUSPENDED_POSTCOPY = (3, 7)
SUSPENDED_POSTCOPY_FAILED = (3, 8)
RESUMED_MIGRATED = (4, 1)
RESUMED_POSTCOPY = (4, 3)
RESUMED_POSTCOPY_FAILED = (4, 4)
STOPPED_MIGRATED = (5, 3)
STOPPED_FAILED = (5, 5)
UNDEFINED = (1, 0)
DEST = 'qemu+tcp://compute-2/system'


class Agent:
    """One agent: fake libvirt, journal, failure monitor, audit,
    guest-agent monitor and the migration monitor, stepped by hand."""

    def __init__(self, path, fake=None, clock=None, host='compute-1',
                 **settings):
        self.clock = clock or virt.FakeClock()
        self.driver = virt.make_driver(fake=fake, clock=self.clock)
        self.fake = self.driver.fake
        self.journal = db.Journal(path)
        self.outbox = outbox_lib.Outbox(self.journal)
        self.reporter = failure_monitor.Reporter(
            self.outbox, state.StateStore(self.journal), host,
            clock=self.clock)
        self.selector = selection.Selector(self.driver)
        backend = concurrency.get(BACKEND)
        self.audit = audit_lib.PowerStateAudit(
            self.driver, self.journal, self.reporter, self.selector,
            backend, store=self.reporter.store)
        self.failures_monitor = failure_monitor.FailureMonitor(
            self.driver, self.journal, self.reporter, self.selector,
            'qemu:///system', store=self.reporter.store, outbox=self.outbox)
        self.guest_pool = pools.InlinePool(self.clock)
        self.guests = guest_monitor.GuestAgentMonitor(
            self.driver, self.journal, self.reporter, self.selector,
            self.guest_pool, backend,
            guest_monitor.Settings(True, 5.0, 2.0, 3, 'report'),
            evidence_settle=0, clock=self.clock, wall=self.clock,
            action_min_uptime=0.0)
        self.pool = pools.InlinePool(self.clock)
        self.settings = migration_monitor.DEFAULTS._replace(**settings)
        self.monitor = migration_monitor.MigrationMonitor(
            self.driver, self.journal, self.reporter, self.pool, backend,
            self.settings, clock=self.clock, wall=self.clock)
        self.migrate_pool = pools.InlinePool(self.clock)
        self.migrate_pool.hold_keys.add(('migrate', None))  # see vm()
        self.migrations = migration_driver.MigrationDriver(
            self.driver, self.monitor, self.migrate_pool, self.settings)
        self.keeper = overrides.OverrideKeeper(
            self.driver, overrides.OverrideStore(self.journal, self.outbox,
                                                 host),
            self.selector, state_store=self.reporter.store,
            wall=lambda: 1790000000.0, clock=self.clock)
        for listener in (self.failures_monitor, self.guests, self.monitor,
                         self.keeper):
            self.driver.register_event_listener(listener)
        self.driver.init_host()
        self.keeper.load()
        self.guests.load()
        self.monitor.load()
        self.step()

    def vm(self, name='vm-1', **kwargs):
        dom = self.fake.add_domain(name, **kwargs)
        dom.has_agent_channel = True
        # The migration call blocks until the test ends it.
        self.migrate_pool.hold_keys.add(('migrate', dom.UUIDString()))
        return dom

    def fire(self, dom, event_id, *args):
        self.fake.connection.fire(event_id, dom, *args)
        self.dispatch()

    def lifecycle(self, dom, pair, state=None):
        if state is not None:
            dom.state_value = state
        self.fire(dom, LIFECYCLE, *pair)

    def dispatch(self):
        self.driver.host.handler.dispatch_pending()
        self.step()

    def step(self, seconds=0.0):
        self.clock.advance(seconds)
        for _ in range(3):
            self.driver.host.handler.dispatch_pending()
            self.guests.step()
            self.monitor.step()
        self.monitor.flush = self.monitor.writes.flush
        self.monitor.writes.flush()
        self.guests.writes.flush()

    def run(self, seconds, every=5.0):
        for _ in range(int(seconds / every)):
            self.step(every)

    def messages(self, event_type):
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(100000)
                if m.event_type == event_type]

    def migration(self, dom=None):
        return [(p['phase'], p['direction'], p['action'])
                for p in self.messages('instance.migration')
                if dom is None or p['uuid'] == dom.UUIDString()]

    def failures(self):
        return [(p['name'], p['cause'], p['vir_domain_event'])
                for p in self.messages('instance.failure')]

    def guest_health(self):
        return [(p['old_state'], p['state'])
                for p in self.messages('guest.health')]

    def end_call(self, dom):
        self.migrate_pool.release(('migrate', dom.UUIDString()))
        self.step()

    def close(self):
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'source.sqlite'))
    yield agent
    agent.close()


@pytest.fixture
def pair(tmp_path):
    source = Agent(str(tmp_path / 'source.sqlite'))
    destination = Agent(str(tmp_path / 'destination.sqlite'),
                        clock=source.clock, host='compute-2')
    source.fake.peers[DEST] = destination.fake
    yield source, destination
    source.close()
    destination.close()


def no_failure(*agents):
    for agent in agents:
        assert agent.failures() == []
        assert agent.audit.run_once() == 0
        assert agent.failures() == []
        assert all(new != 'reported' for _, new in agent.guest_health())


def start_watched(agent, dom, total=4 * GIB, iteration=1):
    """Another tool (nova, virsh) starts an outgoing migration."""
    dom.start_migration(total=total, iteration=iteration)
    agent.fire(dom, ITERATION, iteration)


# --- no false failure: every way a migration ends ------------------------


def test_watched_migration_success_notified_on_both_sides(pair):
    source, destination = pair
    dom = source.vm()
    source.run(10)
    start_watched(source, dom)
    no_failure(source)
    source.run(20)
    dom.progress(GIB, iteration=2)
    source.fire(dom, ITERATION, 2)
    no_failure(source)
    fakelibvirt.complete_migration(dom, DEST)
    source.dispatch()
    destination.dispatch()
    source.run(20)  # the held-back STOPPED_MIGRATED comes 15 s late
    destination.run(20)
    assert source.migration(dom) == [
        ('start', 'outgoing', None), ('progress', 'outgoing', None),
        ('progress', 'outgoing', None), ('end', 'outgoing', None)]
    assert destination.migration() == [('start', 'incoming', None),
                                       ('end', 'incoming', None)]
    no_failure(source, destination)
    assert source.monitor.status() == [] == destination.monitor.status()


@pytest.mark.parametrize('paused_at_failure', [False, True])
def test_precopy_failure_source_runs_on_no_failure(agent, paused_at_failure):
    dom = agent.vm()
    start_watched(agent, dom)
    agent.run(10)
    if paused_at_failure:  # failed at the switch-over, the source paused
        agent.lifecycle(dom, SUSPENDED_MIGRATED, (3, 2))
        no_failure(agent)
    # libvirt resumes a source it paused (RESUMED_MIGRATED) and the job
    # is gone.
    dom.job = {'type': 0}
    agent.lifecycle(dom, RESUMED_MIGRATED, (1, 6))
    agent.run(10)
    assert agent.migration(dom)[-1] == ('error', 'outgoing', None)
    assert dom.resumes == 0  # running: nothing to resume
    no_failure(agent)
    assert agent.monitor.status() == []


def test_failure_that_left_the_source_paused_resumes_it(agent):
    dom = agent.vm()
    start_watched(agent, dom)
    agent.run(10)
    agent.lifecycle(dom, SUSPENDED_MIGRATED, (3, 2))
    dom.job = {'type': 0}
    dom.state_value = (3, 2)  # PAUSED_MIGRATION ... then the job is gone
    agent.run(10)
    assert dom.resumes == 0  # still switching over: not judged yet
    dom.state_value = (3, 1)  # left paused
    agent.run(10)
    assert dom.resumes == 1
    errors = [p for p in agent.messages('instance.migration')
              if p['phase'] == 'error']
    assert [p['action'] for p in errors] == ['resume_source']
    assert 'migration_failed_source_paused' in errors[0]['reason']
    no_failure(agent)


def test_guest_paused_by_its_operator_before_is_not_resumed(agent):
    dom = agent.vm(state=3, reason=1)  # PAUSED_USER
    start_watched(agent, dom)
    agent.run(10)
    dom.job = {'type': 0}
    agent.run(10)
    assert dom.resumes == 0
    assert agent.migration(dom)[-1] == ('error', 'outgoing', None)
    no_failure(agent)


def test_incoming_migration_that_failed_no_failure(pair):
    source, destination = pair
    arriving = destination.fake.add_domain('vm-1', state=3, reason=2)
    destination.lifecycle(arriving, STARTED_MIGRATED)
    no_failure(destination)
    destination.lifecycle(arriving, STOPPED_FAILED, (5, 6))
    destination.fake.domains.pop(arriving.UUIDString())
    destination.lifecycle(arriving, UNDEFINED)
    destination.run(20)
    assert destination.migration() == [('start', 'incoming', None),
                                       ('error', 'incoming', None)]
    no_failure(destination)


def test_postcopy_success_no_failure(pair):
    source, destination = pair
    dom = source.vm()
    start_watched(source, dom)
    source.run(10)
    dom.state_value = (3, 12)  # PAUSED_POSTCOPY
    source.lifecycle(dom, SUSPENDED_POSTCOPY)
    arriving = destination.fake.add_domain('vm-1', dom.UUIDString(), 3, 2)
    destination.lifecycle(arriving, STARTED_MIGRATED)
    destination.lifecycle(arriving, RESUMED_POSTCOPY, (1, 10))
    no_failure(source, destination)
    source.run(10)
    no_failure(source)
    destination.fake.domains.pop(arriving.UUIDString())
    fakelibvirt.complete_migration(dom, None)
    source.dispatch()
    destination.fake.domains[arriving.UUIDString()] = arriving
    destination.lifecycle(arriving, RESUMED_MIGRATED, (1, 2))
    source.run(20)
    assert ('progress', 'outgoing', None) in source.migration(dom)
    assert source.migration(dom)[-1] == ('end', 'outgoing', None)
    assert destination.migration()[-1] == ('end', 'incoming', None)
    no_failure(source, destination)


def test_postcopy_failure_is_reported_once(agent):
    dom = agent.vm()
    start_watched(agent, dom)
    agent.run(10)
    dom.state_value = (3, 12)
    agent.lifecycle(dom, SUSPENDED_POSTCOPY)
    agent.run(10)
    assert agent.failures() == []
    # The destination died: the source's QEMU pauses, post-copy failed.
    dom.job = {'type': 0}
    agent.lifecycle(dom, SUSPENDED_POSTCOPY_FAILED, (3, 13))
    agent.run(30)
    agent.audit.run_once()
    assert agent.failures() == [('vm-1', 'postcopy_failed',
                                 'STOPPED_FAILED')]
    assert agent.migration(dom)[-1] == ('error', 'outgoing', None)
    assert dom.resumes == 0  # never resumed: its memory is elsewhere


def test_source_qemu_dying_mid_migration_is_still_a_failure(agent):
    dom = agent.vm()
    start_watched(agent, dom)
    agent.run(10)
    dom.job = {'type': 0}
    agent.lifecycle(dom, STOPPED_FAILED, (5, 6))
    agent.run(10)
    assert agent.failures() == [('vm-1', 'qemu_died', 'STOPPED_FAILED')]
    assert agent.migration(dom)[-1] == ('error', 'outgoing', None)


def test_source_forgets_a_migrated_vm_without_calling_it_vanished(pair):
    source, destination = pair
    dom = source.vm()
    source.run(10)
    source.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    dom.start_migration()
    source.run(10)
    source.end_call(dom)
    destination.dispatch()
    source.run(30)
    assert dom.UUIDString() not in source.fake.domains
    assert source.audit.run_once() == 0
    no_failure(source, destination)
    assert source.migration(dom)[-1] == ('end', 'outgoing', None)


# --- stuck and timed out ---------------------------------------------------


def test_stalled_watched_migration_is_aborted_source_runs_on(agent):
    dom = agent.vm()
    start_watched(agent, dom)
    dom.progress(GIB)
    agent.run(200)  # progress_timeout 150 s with the same floor
    assert dom.aborts >= 1
    assert dom.max_downtimes == []  # not vmha's: its downtime is not ours
    agent.end_call(dom)  # nothing held: the fake only has the job
    dom.job = {'type': 0}
    dom.state_value = (1, 6)
    agent.run(10)
    actions = agent.migration(dom)
    assert ('progress', 'outgoing', 'abort') in actions
    assert actions.count(('progress', 'outgoing', 'abort')) == 1
    assert actions[-1] == ('error', 'outgoing', None)
    no_failure(agent)


def test_completion_timeout_with_abort_source_runs_on(agent):
    agent.settings = agent.monitor.settings = agent.settings._replace(
        completion_timeout=10, progress_timeout=0)
    dom = agent.vm()
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    dom.start_migration(total=GIB)
    agent.run(5)
    remaining = GIB
    for _ in range(6):  # slow but steady progress: 25 s of 20 s allowed
        remaining -= 2 ** 20
        dom.progress(remaining)
        agent.run(5)
    assert dom.aborts >= 1
    agent.end_call(dom)  # migrateToURI3 fails: "canceled by client"
    agent.run(10)
    errors = [p for p in agent.messages('instance.migration')
              if p['phase'] == 'error']
    assert len(errors) == 1 and 'completion_timeout' in errors[0]['reason']
    assert dom.state_value == (1, 6)
    assert dom.UUIDString() in agent.fake.domains
    no_failure(agent)


def test_force_complete_pauses_then_a_failure_resumes(agent):
    agent.settings = agent.monitor.settings = agent.settings._replace(
        completion_timeout=10, progress_timeout=0,
        timeout_action='force_complete')
    dom = agent.vm()
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    dom.start_migration(total=GIB)
    agent.run(30)
    assert dom.suspends == 1 and dom.postcopy_starts == 0
    dom.migrate_error = fakelibvirt.libvirtError('connection reset')
    dom.fail_state = (3, 1)
    agent.end_call(dom)
    agent.run(10)
    assert dom.resumes == 1  # vmha's pause is undone
    assert agent.migration(dom)[-1] == ('error', 'outgoing',
                                        'resume_source')
    no_failure(agent)


def test_force_complete_with_postcopy_switches(agent):
    agent.settings = agent.monitor.settings = agent.settings._replace(
        completion_timeout=10, progress_timeout=0,
        timeout_action='force_complete', permit_post_copy=True)
    agent.migrations._settings = agent.settings
    dom = agent.vm()
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    uri, params, flags = None, None, None
    dom.start_migration(total=GIB)
    agent.run(30)
    assert dom.postcopy_starts == 1 and dom.suspends == 0
    agent.end_call(dom)
    uri, params, flags = dom.migrate_calls[0]
    assert flags & 32768  # VIR_MIGRATE_POSTCOPY
    agent.run(20)
    actions = [a for _, _, a in agent.migration(dom)]
    assert 'force_complete_postcopy' in actions
    assert agent.migration(dom)[-1] == ('end', 'outgoing', None)
    no_failure(agent)


# --- driving ---------------------------------------------------------------


def test_driven_migration_raises_the_downtime_in_steps(agent):
    agent.settings = agent.monitor.settings = agent.settings._replace(
        downtime_delay=5, progress_timeout=0)
    dom = agent.vm()
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    dom.start_migration(total=GIB)  # counts 2 GiB: steps 10 s apart
    agent.run(120)
    assert dom.max_downtimes == [50, 95, 140, 185, 230, 275, 320, 365, 410,
                                 455, 500]
    steps = [p['downtime_ms'] for p in agent.messages('instance.migration')
             if p['action'] == 'set_downtime']
    assert steps == dom.max_downtimes
    assert agent.monitor.status()[0]['migrating'] == 'out 0% it1 dt=500ms'
    uri, params, flags = dom.migrate_calls == [] and (None, None, None) \
        or dom.migrate_calls[0]
    agent.end_call(dom)
    uri, params, flags = dom.migrate_calls[0]
    assert uri == DEST
    assert flags == 1 | 2 | 8 | 16  # live, p2p, persist dest, undefine
    agent.run(20)
    assert agent.migration(dom)[-1] == ('end', 'outgoing', None)
    no_failure(agent)


def test_queued_operator_tasks(agent):
    dom = agent.vm()
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    dom.start_migration(total=GIB)
    agent.run(10)
    with pytest.raises(ValueError):
        agent.migrations.task(dom.UUIDString(), 'reboot')
    agent.migrations.task(dom.UUIDString(), 'pause')
    agent.step()
    assert dom.suspends == 1
    dom.fail_state = (3, 1)  # the abort leaves the guest paused
    agent.migrations.task(dom.UUIDString(), 'abort')
    agent.step()
    assert dom.aborts == 1
    agent.end_call(dom)
    agent.run(10)
    assert dom.resumes == 1  # vmha's (the operator's task) pause undone
    assert [a for _, _, a in agent.migration(dom)] == [
        None, 'set_downtime', 'pause_guest', 'abort', 'resume_source']
    no_failure(agent)


def test_refused_migrations(agent):
    dom = agent.vm()
    with pytest.raises(migration_driver.MigrationRefused):
        agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', 'compute-2')
    with pytest.raises(migration_driver.MigrationRefused):
        agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST,
                                      {'turbo': True})
    agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    agent.step()
    with pytest.raises(migration_driver.MigrationRefused):
        agent.migrations.live_migrate(dom.UUIDString(), 'vm-1', DEST)
    with pytest.raises(ValueError):
        agent.migrations.task('no-such-uuid', 'abort')


# --- hand-over and restart -------------------------------------------------


def test_destination_pings_at_once_after_resumed_migrated(pair):
    """Hand-over: the destination's guest-agent monitor asks the guest
    the moment it resumes there, not one interval later."""
    source, destination = pair
    dom = source.vm(name='db-1')
    source.run(10)
    source.migrations.live_migrate(dom.UUIDString(), 'db-1', DEST)
    dom.start_migration()
    source.run(5)
    destination.run(7)  # the destination's schedule is mid-interval
    assert destination.guest_pool.calls('ping') == []
    source.end_call(dom)
    destination.driver.host.handler.dispatch_pending()
    destination.guests.step()
    pings = destination.guest_pool.calls('ping')
    assert [job.submitted for job in pings] == [destination.clock()]
    no_failure(source, destination)


def test_the_operators_choice_travels_with_the_vm(pair):
    source, destination = pair
    dom = source.vm(name='db-1')
    uuid = dom.UUIDString()
    source.keeper.change(uuid, 'db-1', False, 'maintenance', 'user=alice')
    source.run(10)
    source.migrations.live_migrate(uuid, 'db-1', DEST)
    dom.start_migration()
    source.run(5)
    source.end_call(dom)
    destination.run(20)
    assert destination.selector.is_monitored(uuid, 'db-1') is False
    assert destination.keeper._store.all()[uuid] == overrides.Override(
        False, 'maintenance', 1790000000.0, 'user=alice')
    assert destination.guest_pool.calls('ping') == []  # not monitored
    [adopted] = destination.messages('instance.monitoring')
    assert (adopted['source'], adopted['requested_by']) == ('metadata',
                                                            'user=alice')
    no_failure(source, destination)


def test_restarted_source_agent_finds_the_migration_under_way(tmp_path):
    fake = fakelibvirt.FakeLibvirt()
    dom = fake.add_domain('vm-1')
    dom.start_migration(total=GIB, time_elapsed=60000)
    agent = Agent(str(tmp_path / 'a.sqlite'), fake=fake)
    try:
        agent.run(10)
        assert [m['direction'] for m in agent.monitor.status()] == \
            ['outgoing']
        assert agent.migration(dom)[0] == ('start', 'outgoing', None)
        no_failure(agent)
    finally:
        agent.close()


def test_status_and_metrics(agent):
    dom = agent.vm()
    start_watched(agent, dom, total=4 * GIB)
    dom.progress(GIB + GIB // 2, iteration=3)
    agent.run(10)
    assert agent.monitor.status()[0]['migrating'] == 'out 62% it3'
    assert agent.monitor.metrics() == (1, GIB + GIB // 2)


def test_an_incoming_migration_whose_end_was_missed_is_concluded(pair):
    """Events lost (a queue overflow): the resync's listing ends it."""
    source, destination = pair
    arriving = destination.fake.add_domain('vm-1', state=3, reason=2)
    destination.lifecycle(arriving, STARTED_MIGRATED)
    assert destination.monitor.status()[0]['migrating'] == 'in'
    arriving.state_value = (1, 2)  # RUNNING_MIGRATED, its event lost
    destination.monitor(migration_monitor.ev.ResyncRequiredEvent(3))
    destination.step()
    assert destination.monitor.status() == []
    assert destination.migration() == [('start', 'incoming', None),
                                       ('end', 'incoming', None)]
    no_failure(destination)
