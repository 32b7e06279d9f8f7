"""The guest-agent monitor on the fake libvirt with a fake clock.

What a user notices: which guests get pinged, and which notifications
(instance.failure for Masakari, guest.health for operators) land in the
outbox, when and how often.  Every libvirt call runs inline (the
``InlinePool``) unless a test holds it in flight.
"""

import pytest

from tests.conftest import BACKEND
from tests.fixtures import fakelibvirt
from tests.fixtures import pools
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import guest_states as gs
from vmha.manager import overrides
from vmha.manager import selection
from vmha.manager import state

AGENT_LIFECYCLE, REBOOT, MIGRATION_ITERATION = 18, 1, 20
STARTED, SUSPENDED, RESUMED = 2, 3, 4  # libvirt lifecycle event codes
NOT_RESPONDING = 86


class Host:
    """One agent: fake libvirt, journal, and the guest-agent monitor
    stepped by hand."""

    def __init__(self, path, fake=None, clock=None, **settings):
        self.clock = clock or virt.FakeClock()
        self.driver = virt.make_driver(fake=fake, clock=self.clock)
        self.fake = self.driver.fake
        self.path = path
        self.journal = db.Journal(path)
        self.outbox = outbox_lib.Outbox(self.journal)
        self.reporter = failure_monitor.Reporter(
            self.outbox, state.StateStore(self.journal), 'compute-1',
            clock=self.clock)
        self.selector = selection.Selector(self.driver)
        self.pool = pools.InlinePool(self.clock)
        options = dict(discovery_timeout=settings.pop('discovery_timeout',
                                                      300.0),
                       action_budget=settings.pop('action_budget', 3),
                       action_window=settings.pop('action_window', 3600.0),
                       action_min_uptime=settings.pop('action_min_uptime',
                                                      0.0))
        self.monitor = guest_monitor.GuestAgentMonitor(
            self.driver, self.journal, self.reporter, self.selector,
            self.pool, concurrency.get(BACKEND),
            guest_monitor.Settings(**settings), evidence_settle=0,
            clock=self.clock, wall=self.clock, **options)
        self.driver.register_event_listener(self.monitor)
        self.driver.init_host()
        self.monitor.load()

    def vm(self, name='vm-1', channel=True, metadata=None):
        dom = self.fake.add_domain(name)
        dom.has_agent_channel = channel
        if metadata:
            dom.metadata_elements[selection.NAMESPACE] = metadata
        return dom

    def step(self, seconds=0.0):
        self.clock.advance(seconds)
        for _ in range(4):  # inline calls finish by the next step
            self.monitor.step()

    def run(self, seconds, every=1.0):
        for _ in range(int(seconds / every)):
            self.step(every)

    def fire(self, dom, event_id, *args):
        self.fake.connection.fire(event_id, dom, *args)
        self.driver.host.handler.dispatch_pending()
        self.step()

    def state_of(self, dom):
        return {s['uuid']: s for s in self.monitor.status()}[
            dom.UUIDString()]['state']

    def messages(self, event_type):
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(100000)
                if m.event_type == event_type]

    def failures(self):
        return [(f['name'], f['cause'], f['event'], f['vir_domain_event'])
                for f in self.messages('instance.failure')]

    def health(self):
        return [(h['old_state'], h['state']) for h in
                self.messages('guest.health')]

    def close(self):
        self.monitor.flush()
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def host(tmp_path):
    host = Host(str(tmp_path / 'vmha.sqlite'))
    yield host
    host.close()


def hang(dom):
    dom.agent_error = fakelibvirt.libvirtError(
        'Guest agent is not responding: Guest agent not available for now',
        NOT_RESPONDING)


def unhang(dom):
    dom.agent_error = None


def test_first_answer_makes_a_guest_healthy(host):
    dom = host.vm()
    host.step()
    assert host.state_of(dom) == gs.HEALTHY
    assert dom.agent_calls == 1
    host.run(20)
    assert dom.agent_calls == 5  # every 5 s
    assert host.monitor._store.all()[dom.UUIDString()].state == gs.HEALTHY
    assert host.failures() == [] and host.health() == []


def test_a_domain_without_agent_channel_is_never_pinged(host):
    dom = host.vm(channel=False)
    host.run(30)
    assert dom.agent_calls == 0
    assert host.monitor._store.all() == {}


@pytest.mark.parametrize('metadata, pinged', [
    ('<monitoring enabled="false"/>', False),
    ('<monitoring><guest-agent enabled="false"/></monitoring>', False),
    ('<monitoring><guest-agent interval="2"/></monitoring>', True),
])
def test_metadata_opts_out_or_tunes_one_guest(host, metadata, pinged):
    element = metadata.replace(
        '<monitoring', '<monitoring xmlns="%s"' % selection.NAMESPACE, 1)
    dom = host.vm(metadata=element)
    host.run(20)
    assert dom.agent_calls == (11 if pinged else 0)  # at once, then every 2 s


def test_bad_metadata_values_are_ignored_with_the_defaults_kept(host,
                                                                caplog):
    dom = host.vm(metadata='<monitoring xmlns="%s"><guest-agent '
                  'interval="-1" failure_threshold="many"/></monitoring>'
                  % selection.NAMESPACE)
    host.step()
    host.run(20)
    assert dom.agent_calls == 5
    assert 'ignoring guest-agent setting interval' in caplog.text


def test_hostile_metadata_of_one_vm_does_not_stop_the_others(host, caplog):
    """Regression (issue 11 item 8): ``timeout="1e400"`` raised in the
    describe handler and dropped the other VMs' answers of the batch:
    they were never pinged again."""
    hostile = host.vm('hostile', metadata='<monitoring xmlns="%s">'
                      '<guest-agent timeout="1e400" interval="inf" '
                      'failure_threshold="99999999999999999999"/>'
                      '</monitoring>' % selection.NAMESPACE)
    others = [host.vm('vm-%d' % index) for index in range(3)]
    host.run(20)
    assert [dom.agent_calls for dom in others] == [5, 5, 5]
    assert hostile.agent_calls == 5  # with the defaults
    assert 'hostile (%s): ignoring guest-agent setting timeout' \
        % hostile.UUIDString() in caplog.text

    hang(others[1])
    hang(hostile)
    host.run(15, every=5)
    assert sorted(f[0] for f in host.failures()) == ['hostile', 'vm-1']


class _FailingSelector(selection.Selector):
    """A selector with a bug for one domain."""

    def decide(self, uuid, name, metadata):
        if name == 'buggy':
            raise RuntimeError('a bug')
        return super().decide(uuid, name, metadata)


def test_a_handler_failing_for_one_vm_never_stops_the_others(tmp_path,
                                                             caplog):
    host = Host(str(tmp_path / 'vmha.sqlite'))
    try:
        host.selector.__class__ = _FailingSelector
        buggy = host.vm('buggy')
        others = [host.vm('vm-%d' % index) for index in range(2)]
        host.run(10)
        assert [dom.agent_calls for dom in others] == [3, 3]
        assert buggy.agent_calls == 0
        assert 'buggy (%s): handling its describe call failed' \
            % buggy.UUIDString() in caplog.text
    finally:
        host.close()


def test_unparsable_domain_xml_is_logged_with_the_domain_and_skipped(
        host, caplog):
    dom = host.vm('broken')
    dom.XMLDesc = lambda flags=0: '<domain><devices>'
    host.run(10)
    assert dom.agent_calls == 0
    assert 'broken' in caplog.text and 'XML unusable' in caplog.text


def test_a_hung_guest_is_reported_once_when_the_threshold_is_reached(host):
    dom = host.vm()
    host.step()
    hang(dom)
    host.step(5)
    assert host.state_of(dom) == gs.ERROR
    assert host.failures() == []
    host.step(5)
    assert host.state_of(dom) == gs.REPORTED
    assert host.failures() == [('vm-1', 'guest_hung', 'QEMU_GUEST_AGENT_ERROR',
                                'STOPPED_FAILED')]
    evidence = host.messages('instance.failure')[0]['evidence']
    assert 'QEMU is stopped or the vCPUs halted' in evidence
    host.run(60)  # it stays hung: nothing more
    assert len(host.failures()) == 1
    assert host.health() == [(gs.ERROR, gs.REPORTED)]


def test_recovery_closes_the_episode_and_a_new_hang_is_reported_again(host):
    dom = host.vm()
    host.step()
    hang(dom)
    host.run(10, every=5)
    unhang(dom)
    host.step(5)
    assert host.state_of(dom) == gs.HEALTHY
    assert host.health() == [(gs.ERROR, gs.REPORTED),
                             (gs.REPORTED, gs.HEALTHY)]
    row = host.reporter.store.all()
    assert not row or not row[dom.UUIDString()].failure_cause
    hang(dom)
    host.run(10, every=5)
    assert len(host.failures()) == 2


@pytest.mark.parametrize('threshold', [1, 2, 3])
def test_threshold_edges(tmp_path, threshold):
    host = Host(str(tmp_path / 'j.sqlite'), failure_threshold=threshold)
    dom = host.vm()
    host.step()
    hang(dom)
    for _ in range(1, threshold):
        host.step(5)
        assert host.state_of(dom) == gs.ERROR
    assert host.failures() == []
    host.step(5)
    assert host.state_of(dom) == gs.REPORTED
    assert len(host.failures()) == 1
    host.close()


def test_one_good_answer_between_failures_resets_the_count(host):
    dom = host.vm()
    host.step()
    for _ in range(5):
        hang(dom)
        host.step(5)
        unhang(dom)
        host.step(5)
    assert host.failures() == [] and host.state_of(dom) == gs.HEALTHY


def test_an_agent_that_never_answers_is_not_a_failure_but_one_warning(
        tmp_path):
    host = Host(str(tmp_path / 'j.sqlite'), discovery_timeout=60)
    dom = host.vm()
    hang(dom)
    host.run(120, every=5)
    assert host.state_of(dom) == gs.DISCOVERY
    assert host.failures() == []
    assert host.health() == [(gs.DISCOVERY, gs.DISCOVERY)]
    assert 'has not answered' in host.messages('guest.health')[0]['reason']
    host.close()


def test_agent_killed_in_a_live_guest_is_a_warning_not_a_failure(host):
    dom = host.vm()
    host.step()
    host.fire(dom, AGENT_LIFECYCLE, 2, 2)  # DISCONNECTED/CHANNEL
    hang(dom)
    host.run(30, every=5)
    assert host.failures() == []
    assert host.health() == [(gs.ERROR, gs.REPORTED)]
    assert 'agent down, guest alive' in \
        host.messages('guest.health')[0]['reason']


@pytest.mark.parametrize('packets, verdict', [
    (10, 'agent_down'),  # vCPUs and the network move: alive
    (0, 'hung'),  # vCPUs spin, no I/O: a hung kernel
])
def test_counters_decide_between_a_live_guest_and_a_spinning_kernel(
        host, packets, verdict):
    dom = host.vm()
    dom.stats.update({'net.count': 1, 'net.0.tx.pkts': 0})
    host.step()
    hang(dom)
    for _ in range(4):
        dom.stats['cpu.time'] += 5 * 10 ** 9  # one vCPU busy
        dom.stats['net.0.tx.pkts'] += packets
        host.step(5)
    assert host.monitor._watched[dom.UUIDString()].verdict == verdict
    assert len(host.failures()) == (verdict == 'hung')
    assert len(host.health()) == 1


def test_a_warning_becomes_a_failure_once_the_guest_stops_too(host):
    dom = host.vm()
    dom.stats.update({'net.count': 1, 'net.0.tx.pkts': 0})
    host.step()
    hang(dom)
    for _ in range(3):  # alive: a warning
        dom.stats['cpu.time'] += 10 ** 9
        dom.stats['net.0.tx.pkts'] += 5
        host.step(5)
    assert host.failures() == []
    host.run(15, every=5)  # then nothing moves any more
    assert len(host.failures()) == 1
    assert [s for _, s in host.health()] == [gs.REPORTED, gs.REPORTED]


def test_no_pings_while_paused_and_back_to_discovery_on_resume(host):
    dom = host.vm()
    host.step()
    dom.suspend()
    host.driver.host.handler.dispatch_pending()
    calls = dom.agent_calls
    hang(dom)
    host.run(60, every=5)
    assert dom.agent_calls == calls
    assert host.state_of(dom) == gs.SUPPRESSED
    assert host.failures() == []
    unhang(dom)
    dom.resume()
    host.driver.host.handler.dispatch_pending()
    host.step()
    assert host.state_of(dom) == gs.DISCOVERY
    host.step(5)
    assert host.state_of(dom) == gs.HEALTHY


def test_no_pings_while_migrating(host):
    dom = host.vm()
    host.step()
    host.fire(dom, MIGRATION_ITERATION, 1)
    calls = dom.agent_calls
    hang(dom)
    host.run(30, every=5)
    assert dom.agent_calls == calls and host.failures() == []


def test_a_reboot_resets_the_machine(host):
    dom = host.vm()
    host.step()
    hang(dom)
    host.step(5)
    assert host.state_of(dom) == gs.ERROR
    host.fire(dom, REBOOT)
    assert host.state_of(dom) == gs.DISCOVERY
    host.run(30, every=5)  # booting: the agent is not up yet
    assert host.failures() == []
    unhang(dom)
    host.step(5)
    assert host.state_of(dom) == gs.HEALTHY


def test_an_agent_restart_keeps_the_state_and_reports_nothing_twice(
        tmp_path):
    path = str(tmp_path / 'j.sqlite')
    first = Host(path)
    dom = first.vm()
    first.step()
    hang(dom)
    first.run(10, every=5)
    assert len(first.failures()) == 1
    first.close()
    second = Host(path, fake=first.fake, clock=first.clock)
    second.run(30, every=5)
    assert second.state_of(dom) == gs.REPORTED
    assert len(second.failures()) == 1  # the one from the first run
    unhang(dom)
    second.step(5)
    assert second.state_of(dom) == gs.HEALTHY
    second.close()


def test_a_late_first_answer_is_not_a_failure(host):
    """A ping queued in a busy libvirtd is late, not failed."""
    dom = host.vm()
    host.step()
    key = ('ping', dom.UUIDString())
    host.pool.hold_keys.add(key)
    host.run(12, every=1)
    assert host.state_of(dom) == gs.HEALTHY
    host.pool.release(key)
    host.step()
    assert host.state_of(dom) == gs.HEALTHY and host.failures() == []


def test_a_failing_guest_held_by_libvirt_counts_at_its_timeout(host):
    """libvirt holds the next pings of a guest that timed out ~5 s: the
    monitor does not wait for it, and does not ping it twice."""
    dom = host.vm()
    host.step()
    hang(dom)
    host.step(5)  # first failure: answered by libvirt
    key = ('ping', dom.UUIDString())
    host.pool.hold_keys.add(key)
    host.step(5)  # the second ping goes out and stays in flight
    host.step(2.5)  # timeout 2 + 0.5 s grace
    assert host.state_of(dom) == gs.REPORTED
    assert len(host.pool.held[key]) == 1  # not pinged twice
    host.pool.release(key)
    host.step()
    assert host.monitor._watched[dom.UUIDString()].failures == 2


def test_a_paused_domain_error_is_not_counted(host):
    dom = host.vm()
    host.step()
    dom.agent_error = fakelibvirt.libvirtError(
        'Requested operation is not valid: domain is not running', 55)
    host.run(30, every=5)
    assert host.state_of(dom) == gs.HEALTHY


def test_reset_action_within_budget_replaces_the_failure(tmp_path):
    host = Host(str(tmp_path / 'j.sqlite'), action='reset',
                action_budget=1)
    dom = host.vm()
    host.step()
    hang(dom)
    host.run(10, every=5)
    assert dom.resets == 1
    assert host.failures() == []
    assert 'reset 1 of 1' in host.messages('guest.health')[0]['reason']
    # The reset fired REBOOT: back to discovery; the agent answers again.
    host.driver.host.handler.dispatch_pending()
    host.step()
    unhang(dom)
    host.step(5)
    hang(dom)  # hangs again: the budget is spent
    host.run(10, every=5)
    assert dom.resets == 1
    assert len(host.failures()) == 1
    assert 'no reset: 1 already' in host.messages('guest.health')[-1][
        'reason']
    host.close()


def test_no_action_before_the_minimum_uptime(tmp_path):
    host = Host(str(tmp_path / 'j.sqlite'), action='restart',
                action_min_uptime=600)
    dom = host.vm()
    host.step()
    hang(dom)
    host.run(10, every=5)
    assert len(host.failures()) == 1
    assert 'no restart: up only' in host.messages('guest.health')[0][
        'reason']
    host.close()


def test_a_domain_that_stops_is_forgotten(host):
    dom = host.vm()
    host.step()
    dom.destroy()
    host.driver.host.handler.dispatch_pending()  # STOPPED_DESTROYED held
    host.clock.advance(20)
    host.driver.host.handler.dispatch_pending()
    host.step()
    assert dom.UUIDString() not in host.monitor._store.all()
    assert all(s['uuid'] != dom.UUIDString()
               for s in host.monitor.status())


def test_counters_that_never_come_do_not_hold_the_verdict_back(host):
    dom = host.vm()
    host.step()
    hang(dom)
    host.pool.hold_keys.add(('judge', dom.UUIDString()))
    host.run(10, every=5)
    assert host.failures() == []  # judging
    host.run(15, every=5)
    assert len(host.failures()) == 1
    assert 'no host-side counters' in \
        host.messages('instance.failure')[0]['evidence']
    host.pool.release(('judge', dom.UUIDString()))
    host.run(10, every=5)
    assert len(host.failures()) == 1


def test_a_guest_disabled_while_its_verdict_is_under_way_is_not_reported(
        host):
    """An operator disables a guest whose agent already fails: the verdict
    already being gathered must not report it (or reset it) afterwards."""
    dom = host.vm()
    host.step()
    hang(dom)
    host.step(5)
    assert host.state_of(dom) == gs.ERROR
    judge = ('judge', dom.UUIDString())
    host.pool.hold_keys.add(judge)
    host.step(5)  # the second failure: the counters are being read
    assert host.pool.held.get(judge)

    host.selector.override(dom.UUIDString(),
                           overrides.Override(False, 'debugging', 0.0))
    host.monitor.reconsider(dom.UUIDString())
    host.step()
    pinged = dom.agent_calls
    host.pool.release(judge)
    host.run(30)
    assert host.failures() == []
    assert host.health() == []
    assert dom.resets == 0
    assert dom.agent_calls == pinged == 3  # none since it was disabled


def budget_host(tmp_path, healthy, suspects):
    host = Host(str(tmp_path / 'budget.sqlite'), interval=5.0, timeout=2.0,
                failure_threshold=2)
    host.pool.size = healthy + suspects
    host.monitor = guest_monitor.GuestAgentMonitor(
        host.driver, host.journal, host.reporter, host.selector, host.pool,
        concurrency.get(BACKEND),
        guest_monitor.Settings(interval=5.0, timeout=2.0,
                               failure_threshold=2),
        evidence_settle=0, clock=host.clock, wall=host.clock,
        action_min_uptime=0.0, suspect_pings=suspects)
    host.driver.register_event_listener(host.monitor)
    host.monitor.load()
    return host


def test_held_pings_of_failing_guests_never_take_the_healthy_slots(
        tmp_path):
    """Healthy budget 1, suspect budget 2: three failing guests whose
    pings libvirt holds take at most the 2 suspect slots, and the
    healthy guests are still pinged every interval."""
    host = budget_host(tmp_path, healthy=1, suspects=2)
    try:
        healthy = [host.vm('ok-%d' % i) for i in range(4)]
        failing = [host.vm('hung-%d' % i) for i in range(3)]
        host.run(6)
        for dom in failing:
            hang(dom)
        host.run(5)  # each misses a ping: error, and a suspect now
        assert {host.state_of(d) for d in failing} == {gs.ERROR}
        for dom in failing:
            host.pool.hold_keys.add(('ping', dom.UUIDString()))
        before = {d.name(): d.agent_calls for d in healthy}
        host.run(20)
        assert all(d.agent_calls >= before[d.name()] + 4 for d in healthy)
        out = [job for key, jobs in host.pool.held.items() for job in jobs]
        assert len(out) == 2  # the suspect budget bounds them
        # The two sent are counted at their deadline: the verdict.
        assert sorted(host.state_of(d) for d in failing).count(
            gs.REPORTED) == 2
        assert {host.state_of(d) for d in healthy} == {gs.HEALTHY}
    finally:
        for dom in failing:
            host.pool.release(('ping', dom.UUIDString()))
        host.close()
