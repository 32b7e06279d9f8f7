"""The heartbeat monitor on the fake libvirt, a fake clock, and REAL unix
sockets through the real ChannelHub.

Each VM's channel is a listening unix socket (what QEMU offers) with a
``SimulatedGuest`` behind it that says exactly what the test tells it.
What a user notices is asserted: which notifications (instance.failure
for Masakari, instance.heartbeat for operators) land in the outbox, what
vmha does to the VM (a reset, a stop), what ``status()`` says.  The no-
false-failure tests come first.
"""

import shutil
import tempfile
import time

import pytest

from tests.conftest import BACKEND
from tests.conftest import backend_sleep
from tests.fixtures import heartbeat_guest
from tests.fixtures import pools
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import actions
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import heartbeat_monitor as hm
from vmha.manager import heartbeat_session
from vmha.manager import selection
from vmha.manager import state
from vmha.virt.libvirt import channel

CHANNEL = 'org.vmha.heartbeat.0'
REBOOT, MIGRATION_ITERATION, JOB_COMPLETED = 1, 20, 21
# libvirt lifecycle codes and details
STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN = 2, 3, 4, 5, 6
MIGRATED = 1
SETTLE = 3.0  # real seconds a socket round trip may take, at most


class Host:
    """One agent's heartbeat monitor, stepped by hand on a fake clock."""

    def __init__(self, sockets, journal_path, max_action='reboot',
                 budget=3, min_uptime=0.0, hub=None, miss_threshold=2,
                 max_messages_per_second=20, fake=None, clock=None):
        self.sockets = sockets
        self.clock = clock or virt.FakeClock()
        self.driver = virt.make_driver(fake=fake, clock=self.clock)
        self.fake = self.driver.fake
        self.journal = db.Journal(journal_path)
        self.outbox = outbox_lib.Outbox(self.journal)
        self.store = state.StateStore(self.journal)
        self.reporter = failure_monitor.Reporter(
            self.outbox, self.store, 'compute-1', clock=self.clock)
        self.selector = selection.Selector(self.driver)
        self.pool = pools.InlinePool(self.clock)
        self.policy = actions.ActionPolicy(self.driver, budget, 3600.0,
                                           min_uptime, wall=self.clock)
        self.hub = hub or channel.ChannelHub(lambda: None)
        self.hub.start()
        bounds = heartbeat_session.Bounds(
            min_interval=0.4, max_interval=10.0, default_interval=1.0,
            miss_threshold=miss_threshold, max_action=max_action,
            max_notice=60.0,
            max_messages_per_second=max_messages_per_second)
        self.monitor = hm.HeartbeatMonitor(
            self.driver, self.journal, self.reporter, self.selector,
            self.pool, concurrency.get(BACKEND), self.hub, bounds,
            hm.Settings(CHANNEL, max_action, 60.0, 1.0, 5.0), self.policy,
            clock=self.clock, wall=self.clock)
        self.driver.register_event_listener(self.monitor)
        self.driver.init_host()
        self.monitor.load()
        self.guests = {}

    # --- VMs and their guests ----------------------------------------------

    def vm(self, name='vm-1', channel=True):
        dom = self.fake.add_domain(name)
        if channel:
            path = '%s/%s.sock' % (self.sockets, name)
            self.guests[dom.UUIDString()] = heartbeat_guest.SimulatedGuest(
                path)
            dom.add_channel(CHANNEL, path)
        return dom

    def guest(self, dom):
        return self.guests[dom.UUIDString()]

    def beat(self, dom):
        return self.monitor._guests.get(dom.UUIDString())

    def state_of(self, dom):
        rows = {s['uuid']: s for s in self.monitor.status()}
        row = rows.get(dom.UUIDString())
        return row['state'] if row else None

    # --- driving it ----------------------------------------------------------

    def step(self, seconds=0.0):
        self.clock.advance(seconds)
        self.monitor.step()

    def pump(self, until, what='the condition'):
        """Step (no fake time passes) until ``until()``: the hub's thread
        moves the bytes in real time."""
        deadline = time.monotonic() + SETTLE
        while True:
            self.monitor.step()
            if until():
                return
            if time.monotonic() > deadline:
                raise AssertionError('timed out waiting for %s' % what)
            time.sleep(0.002)

    def settle(self):
        """Let whatever is in flight arrive (for "nothing happens")."""
        for _ in range(5):
            time.sleep(0.01)
            self.monitor.step()

    def connect(self, dom):
        guest = self.guest(dom)
        self.pump(guest.pending_connection, 'the agent to connect')
        assert guest.accept(SETTLE), 'the agent never connected'
        self.pump(lambda: self.state_of(dom) == 'waiting', 'connected')
        return guest

    def register(self, dom, interval_ms=1000, action='reboot', **fields):
        guest = self.guest(dom)
        if guest.conn is None:
            self.connect(dom)
        guest.read()  # challenges of before count for nothing now
        guest.answered.update(m['nonce'] for m in guest.of_type('challenge'))
        guest.init(interval_ms=interval_ms, action=action, **fields)
        self.pump(lambda: guest.answer() is not None, 'a challenge')
        self.pump(lambda: self.state_of(dom) == 'enabled', 'enabled')
        return guest

    def tick(self, dom, seconds=1.0, answer=True, **how):
        """``seconds`` of fake time pass; the guest answers the challenge
        that brings (unless ``answer`` is False)."""
        guest = self.guest(dom)
        self.step(seconds)
        if not answer:
            self.settle()
            return
        before = self.beat(dom).session.last_answer_at
        self.pump(lambda: guest.answer(**how) is not None, 'a challenge')
        self.pump(lambda: self.beat(dom).session is None or
                  self.beat(dom).session.last_answer_at != before,
                  'the answer')

    def run(self, dom, seconds, answer=True, **how):
        for _ in range(int(seconds)):
            self.tick(dom, 1.0, answer, **how)

    def fire(self, dom, event_id, *args):
        self.fake.connection.fire(event_id, dom, *args)
        self.driver.host.handler.dispatch_pending()
        self.monitor.step()

    def lifecycle(self, dom, code, detail):
        self.fire(dom, 0, code, detail)

    # --- what users see ---------------------------------------------------

    def messages(self, event_type):
        self.monitor.flush()
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(100000)
                if m.event_type == event_type]

    def failures(self):
        return [(f['name'], f['cause'], f['event'], f['vir_domain_event'])
                for f in self.messages('instance.failure')]

    def heartbeats(self):
        return [(h['old_state'], h['state']) for h in
                self.messages('instance.heartbeat')]

    def open_episode(self, dom):
        self.monitor.flush()
        return self.store.failure_cause(dom.UUIDString())

    def close(self):
        self.monitor.flush()
        self.hub.stop()
        for guest in self.guests.values():
            guest.close()
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def sockets():
    # Short: a unix socket path has at most 107 bytes.
    path = tempfile.mkdtemp(prefix='hb-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_host(sockets, tmp_path):
    made = []

    def make(**kwargs):
        host = Host(sockets, str(tmp_path / 'vmha.sqlite'), **kwargs)
        made.append(host)
        return host
    yield make
    for host in made:
        host.close()


@pytest.fixture
def host(make_host):
    return make_host()


# --- no false failures ------------------------------------------------------

def test_a_healthy_guest_stays_enabled_for_many_intervals(host):
    dom = host.vm()
    host.register(dom)
    host.run(dom, 30)
    assert host.state_of(dom) == 'enabled'
    assert host.failures() == []
    assert host.heartbeats() == [('waiting', 'enabling'),
                                 ('enabling', 'enabled')]
    row = host.monitor._store.all()[dom.UUIDString()]
    assert (row.state, row.interval, row.action) == ('enabled', 1.0,
                                                     'reboot')


def test_a_domain_without_the_channel_is_never_served(host):
    dom = host.vm(channel=False)
    host.step()
    host.settle()
    assert host.monitor.status() == []
    assert host.monitor._store.all() == {}
    assert host.monitor.registration(dom.UUIDString()) is None


def test_a_paused_vm_is_not_challenged_and_never_fails(host):
    dom = host.vm()
    guest = host.register(dom)
    dom.suspend()
    host.driver.host.handler.dispatch_pending()
    host.step()
    assert host.state_of(dom) == 'paused'
    challenges = len(guest.of_type('challenge'))
    for _ in range(30):
        host.step(1.0)
    host.settle()
    guest.read()
    assert len(guest.of_type('challenge')) == challenges
    assert host.failures() == []
    dom.resume()
    host.driver.host.handler.dispatch_pending()
    host.pump(lambda: guest.answer() is not None, 'a fresh challenge')
    host.pump(lambda: host.state_of(dom) == 'enabled', 'enabled again')
    host.run(dom, 5)
    assert host.failures() == []


# Each migration's events as one host sees them (source or destination),
# with whether the channel connection resets on the way.
MIGRATIONS = {
    'source, pre-copy': [('iteration', 1), ('iteration', 2),
                         ('lifecycle', SUSPENDED, MIGRATED),
                         ('lifecycle', STOPPED, 3)],
    'source, post-copy': [('iteration', 1),
                          ('lifecycle', SUSPENDED, 7),
                          ('lifecycle', STOPPED, 3)],
    'source, migration failed': [('iteration', 1),
                                 ('lifecycle', SUSPENDED, MIGRATED),
                                 ('job',),
                                 ('lifecycle', RESUMED, MIGRATED)],
    'source, aborted during pre-copy': [('iteration', 1), ('iteration', 2),
                                        ('job',)],
}


@pytest.mark.parametrize('sequence', sorted(MIGRATIONS))
def test_no_migration_event_sequence_fails_the_source(host, sequence):
    dom = host.vm()
    guest = host.register(dom)
    for event in MIGRATIONS[sequence]:
        if event[0] == 'iteration':
            host.fire(dom, MIGRATION_ITERATION, event[1])
        elif event[0] == 'job':
            host.fire(dom, JOB_COMPLETED, {})
        else:
            if event[1] == STOPPED:
                dom.state_value = (5, 3)  # shut off (migrated)
            host.lifecycle(dom, event[1], event[2])
        ends = event[0] == 'job' or event[1:2] == (RESUMED,)
        for _ in range(0 if ends else 3):  # the guest cannot answer
            host.step(1.0)
    stays = 'failed' in sequence or 'aborted' in sequence
    if stays:
        # Still here and running: challenged again, and it answers.
        host.pump(lambda: guest.answer() is not None, 'challenged again')
        host.pump(lambda: host.state_of(dom) == 'enabled', 'enabled')
        host.run(dom, 10)
    else:
        host.clock.advance(20.0)  # the held-back STOPPED comes out
        host.driver.host.handler.dispatch_pending()
        for _ in range(40):
            host.step(1.0)
        host.settle()
        assert host.beat(dom) is None  # the VM left: forgotten
        assert dom.UUIDString() not in host.monitor._store.all()
    assert host.failures() == [] and dom.resets == 0
    assert 'failed' not in {new for _, new in host.heartbeats()}


def test_an_incoming_migration_connects_after_the_switch_over(host):
    dom = host.vm()
    host.step()
    guest = host.guest(dom)
    # Destination: QEMU starts paused for the incoming migration.
    host.lifecycle(dom, STARTED, MIGRATED)
    for _ in range(10):
        host.step(1.0)
    host.settle()
    assert host.failures() == []
    if guest.pending_connection():
        guest.accept()
    host.lifecycle(dom, RESUMED, MIGRATED)
    if guest.conn is None:
        assert guest.accept(SETTLE)
    host.pump(lambda: host.state_of(dom) in ('waiting', 'paused'),
              'connected')
    host.register(dom)
    host.run(dom, 5)
    assert host.failures() == []


def test_a_vm_that_shuts_down_is_forgotten_without_a_failure(host):
    dom = host.vm()
    host.register(dom)
    host.lifecycle(dom, SHUTDOWN, 1)  # the guest powers off
    for _ in range(20):
        host.step(1.0)
    host.settle()
    assert host.failures() == []
    assert host.beat(dom) is None
    assert host.monitor._store.all() == {}


def test_a_guest_reboot_re_registers_without_a_failure(host):
    """The REBOOT event comes first; the guest's client is gone for the
    whole boot, then registers again (a new connection or the same)."""
    dom = host.vm()
    guest = host.register(dom)
    host.fire(dom, REBOOT)
    for _ in range(20):  # booting: nothing answers
        host.step(1.0)
    host.settle()
    assert host.failures() == []
    assert host.state_of(dom) == 'paused'
    guest.seq = 0  # a new client process
    host.register(dom)
    host.run(dom, 5)
    assert host.failures() == []
    assert host.state_of(dom) == 'enabled'


def test_a_connection_reset_reconnects_and_is_no_failure(host):
    dom = host.vm()
    guest = host.register(dom)
    guest.hang_up()
    host.pump(lambda: host.state_of(dom) == 'disconnected', 'closed')
    for _ in range(3):
        host.step(1.0)
        if guest.pending_connection(0.2):
            break
    assert guest.accept(SETTLE), 'no reconnection'
    host.pump(lambda: host.state_of(dom) == 'waiting', 'reconnected')
    guest.seq = 0
    host.register(dom)
    assert host.failures() == []


def test_an_agent_restart_shows_the_last_state_at_once(make_host, sockets,
                                                       tmp_path):
    first = make_host()
    dom = first.vm()
    first.register(dom)
    first.monitor.flush()
    first.hub.stop()
    second = Host(sockets, str(tmp_path / 'vmha.sqlite'),
                  fake=first.fake, clock=first.clock)
    try:
        # Before any step: the journal's view.
        assert second.state_of(dom) == 'enabled'
        assert second.monitor.status()[0]['interval'] == 1.0
    finally:
        second.monitor.flush()
        second.hub.stop()
        second.journal.close()


def test_an_exit_stops_challenges_without_a_failure(host):
    dom = host.vm()
    guest = host.register(dom)
    guest.exit('the daemon stops')
    host.pump(lambda: host.state_of(dom) == 'exited', 'exited')
    challenges = len(guest.of_type('challenge'))
    for _ in range(20):
        host.step(1.0)
    host.settle()
    guest.read()
    assert len(guest.of_type('challenge')) == challenges
    assert host.failures() == []


def test_a_late_host_tick_counts_no_miss(host):
    """A busy host that wakes 5 s late must not fail the guest: the
    challenge it sent late is its own fault."""
    dom = host.vm()
    guest = host.register(dom)
    host.step(5.0)  # the host slept through five intervals
    host.settle()
    assert host.failures() == []
    host.pump(lambda: guest.answer() is not None, 'the late challenge')
    host.pump(lambda: host.beat(dom).session.misses == 0, 'answered')
    host.run(dom, 5)
    assert host.state_of(dom) == 'enabled'
    assert host.failures() == []


# --- failures -------------------------------------------------------------

def test_heartbeat_loss_is_one_episode_and_recovery_closes_it(make_host):
    host = make_host(max_action='log')
    dom = host.vm()
    guest = host.register(dom)
    host.run(dom, 3, answer=False)
    assert host.failures() == [('vm-1', 'heartbeat_lost',
                                'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')]
    assert host.state_of(dom) == 'failed'
    assert host.open_episode(dom) == 'heartbeat_lost'
    host.run(dom, 10, answer=False)
    assert len(host.failures()) == 1  # one report per episode
    failure = host.messages('instance.failure')[0]
    assert 'misses=2' in failure['evidence']
    host.pump(lambda: guest.answer() is not None, 'a challenge')
    host.pump(lambda: host.state_of(dom) == 'enabled', 'recovered')
    assert host.open_episode(dom) is None
    assert host.heartbeats()[-2:] == [('enabled', 'failed'),
                                      ('failed', 'enabled')]
    assert host.messages('instance.heartbeat')[-2]['action_taken'] == 'log'


def test_an_unhealthy_guest_is_one_episode(make_host):
    host = make_host(max_action='log')
    dom = host.vm()
    host.register(dom)
    host.tick(dom, health='unhealthy', reason='database down')
    host.pump(lambda: host.state_of(dom) == 'failed', 'failed')
    host.run(dom, 5, health='unhealthy', reason='database down')
    assert host.failures() == [('vm-1', 'guest_unhealthy',
                                'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')]
    assert 'database down' in host.messages('instance.failure')[0][
        'evidence']
    host.tick(dom)
    host.pump(lambda: host.state_of(dom) == 'enabled', 'recovered')
    assert host.open_episode(dom) is None


def test_a_corrective_reboot_within_budget_resets_and_tells_masakari_nothing(
        host):
    dom = host.vm()
    guest = host.register(dom, action='reboot')
    host.run(dom, 3, answer=False)
    assert dom.resets == 1
    assert host.failures() == []
    failed = [h for h in host.messages('instance.heartbeat')
              if h['state'] == 'failed']
    assert [h['action_taken'] for h in failed] == ['reboot']
    # The guest boots and registers again: no failure on the way.
    for _ in range(15):
        host.step(1.0)
    guest.seq = 0
    host.register(dom)
    host.run(dom, 3)
    assert host.failures() == [] and dom.resets == 1


def test_past_the_budget_the_failure_goes_to_masakari(make_host):
    host = make_host(budget=1)
    dom = host.vm()
    guest = host.register(dom)
    host.run(dom, 3, answer=False)
    assert dom.resets == 1 and host.failures() == []
    guest.seq = 0
    host.register(dom)
    host.run(dom, 3, answer=False)
    assert dom.resets == 1  # no second reset within the window
    assert host.failures() == [('vm-1', 'heartbeat_lost',
                                'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')]


def test_the_budget_is_shared_with_the_guest_agent_monitor(make_host):
    host = make_host(budget=1)
    dom = host.vm()
    host.register(dom)
    # The guest-agent monitor reset this VM a minute ago.
    host.policy.record(dom.UUIDString(), host.clock() - 60)
    host.run(dom, 3, answer=False)
    assert dom.resets == 0
    assert len(host.failures()) == 1


def test_a_corrective_stop_powers_off_and_masakari_does_not_recover(
        make_host):
    host = make_host(max_action='stop')
    dom = host.vm()
    host.register(dom, action='stop')
    host.run(dom, 3, answer=False)
    assert dom.state()[0] == 5  # VIR_DOMAIN_SHUTOFF
    assert host.failures() == [('vm-1', 'heartbeat_lost', 'LIFECYCLE',
                                'STOPPED_DESTROYED')]


def test_max_action_caps_what_the_guest_wishes(make_host):
    host = make_host(max_action='log')
    dom = host.vm()
    host.register(dom, action='stop')
    assert host.monitor.registration(dom.UUIDString())[
        'corrective_action'] == 'log'
    host.run(dom, 3, answer=False)
    assert dom.state()[0] == 1 and dom.resets == 0  # still running
    assert len(host.failures()) == 1


def test_a_guest_with_qemu_ga_and_heartbeat_has_one_episode(make_host):
    """The guest-agent monitor reported the hang first: the heartbeat's
    loss of the same guest is neither reported again nor acted on."""
    host = make_host()
    dom = host.vm()
    host.register(dom)
    with host.journal.transaction() as tx:
        host.reporter.report_failure(tx, dom.UUIDString(), 'vm-1',
                                     guest_monitor.HUNG_VERDICT,
                                     host.clock())
    host.run(dom, 4, answer=False)
    assert [f[1] for f in host.failures()] == ['guest_hung']
    assert dom.resets == 0


def test_heartbeat_first_then_the_guest_agent_gets_no_second_episode(
        make_host):
    host = make_host(max_action='log')
    dom = host.vm()
    host.register(dom)
    host.run(dom, 3, answer=False)
    with host.journal.transaction() as tx:
        sent = host.reporter.report_failure(
            tx, dom.UUIDString(), 'vm-1', guest_monitor.HUNG_VERDICT,
            host.clock())
    assert sent is False
    assert [f[1] for f in host.failures()] == ['heartbeat_lost']


def test_an_open_episode_survives_an_agent_restart(make_host, sockets,
                                                   tmp_path):
    first = make_host(max_action='log')
    dom = first.vm()
    first.register(dom)
    first.run(dom, 3, answer=False)
    first.monitor.flush()
    first.hub.stop()
    first.guest(dom).hang_up()
    second = Host(sockets, str(tmp_path / 'vmha.sqlite'), max_action='log',
                  fake=first.fake, clock=first.clock)
    second.guests = first.guests
    try:
        assert second.state_of(dom) == 'failed'
        second.connect(dom)
        first.guest(dom).seq = 0
        second.register(dom)
        assert second.open_episode(dom) is None  # closed once healthy
        assert len(second.failures()) == 1
    finally:
        second.monitor.flush()
        second.hub.stop()
        second.journal.close()


def test_a_flooding_guest_is_cut_off_and_another_stays_enabled(make_host):
    host = make_host(max_messages_per_second=5)
    flooder, calm = host.vm('flooder'), host.vm('calm')
    host.register(flooder)
    host.register(calm)
    noisy = host.guest(flooder)
    for _ in range(60):
        noisy.send('challenge_response', nonce='0' * 32, health='healthy')
    host.pump(lambda: host.state_of(flooder) == 'cut_off', 'cut off')
    host.run(calm, 5)
    assert host.state_of(calm) == 'enabled'
    assert host.failures() == []
    warned = [h for h in host.messages('instance.heartbeat')
              if h['state'] == 'cut_off']
    assert [h['name'] for h in warned] == ['flooder']
    # Connected again after cut_off_time.
    for _ in range(61):
        host.step(1.0)
        if noisy.pending_connection(0.05):
            break
    assert noisy.accept(SETTLE)


# --- for the actions engineer -----------------------------------------------

def test_ask_without_a_registered_guest_accepts(host):
    answers = []
    host.monitor.ask_async('00000000-0000-0000-0000-000000000000', 'stop',
                           'revocable', 'pre', 8, answers.append)
    host.step()
    assert answers == [hm.Answer('accept', 'no heartbeat guest')]


def test_ask_returns_the_guests_reject_and_reason(host):
    dom = host.vm()
    guest = host.register(dom)
    answers = []
    host.monitor.ask_async(dom.UUIDString(), 'stop', 'revocable', 'pre', 8,
                           answers.append)
    host.step()
    host.pump(lambda: guest.respond_to_actions('reject', 'resync running'),
              'the vote')
    host.pump(lambda: answers, 'the answer')
    assert answers == [hm.Answer('reject', 'resync running')]


def test_ask_blocks_its_caller_until_the_guest_answers(host):
    dom = host.vm()
    guest = host.register(dom)
    backend = concurrency.get(BACKEND)
    answers = []
    task = backend.spawn(lambda: answers.append(host.monitor.ask(
        dom.UUIDString(), 'reboot', 'revocable', 'pre', 8)))
    deadline = time.monotonic() + SETTLE
    while not answers and time.monotonic() < deadline:
        host.monitor.step()
        guest.respond_to_actions('accept', 'fine')
        backend_sleep(0.005)
    task.join(1)
    assert answers == [hm.Answer('accept', 'fine')]


def test_an_unanswered_vote_times_out(host):
    dom = host.vm()
    host.register(dom)
    answers = []
    host.monitor.ask_async(dom.UUIDString(), 'stop', 'revocable', 'pre', 8,
                           answers.append)
    host.step()
    for _ in range(9):
        host.step(1.0)
    assert [a.result for a in answers] == ['timeout']


def test_hold_stops_challenges_until_the_guest_registers_again(host):
    dom = host.vm()
    guest = host.register(dom)
    host.monitor.hold(dom.UUIDString(), 'stop voted through vmha', 30)
    host.step()
    assert host.state_of(dom) == 'paused'
    for _ in range(20):
        host.step(1.0)
    host.settle()
    assert host.failures() == [] and host.state_of(dom) == 'paused'
    guest.seq = 0
    host.register(dom)
    assert host.state_of(dom) == 'enabled'


def test_registration_is_what_was_granted(host):
    dom = host.vm()
    host.register(dom, interval_ms=100, restart_secs=900)
    granted = host.monitor.registration(dom.UUIDString())
    assert granted['heartbeat_interval_ms'] == 400  # min_interval
    assert granted['restart_secs'] == 60  # max_notice


def test_a_slow_boot_is_no_failure(host):
    """The granted restart_secs is capped at max_notice (60 s); a guest
    that takes four minutes to boot again is still no failure."""
    dom = host.vm()
    guest = host.register(dom)
    host.fire(dom, REBOOT)
    for _ in range(240):
        host.step(1.0)
    host.settle()
    assert host.failures() == [] and dom.resets == 0
    guest.seq = 0
    host.register(dom)
    assert host.state_of(dom) == 'enabled'


class DeafHub:
    """The real hub, except that the guest's socket buffer is full: what
    a guest that never reads looks like once 64 KiB wait (the real hub's
    refusal is tested in test_channel_hub)."""

    def __init__(self, hub):
        self._hub = hub
        self.deaf = set()

    def send(self, key, data):
        if key[0] in self.deaf:
            return False
        return self._hub.send(key, data)

    def __getattr__(self, name):
        return getattr(self._hub, name)


def test_a_guest_that_never_reads_is_cut_off_and_others_go_on(make_host):
    hub = DeafHub(channel.ChannelHub(lambda: None))
    host = make_host(hub=hub)
    deaf, calm = host.vm('deaf'), host.vm('calm')
    host.register(deaf)
    host.register(calm)
    hub.deaf.add(deaf.UUIDString())
    host.tick(calm)
    assert host.state_of(deaf) == 'cut_off'
    host.run(calm, 5)
    assert host.state_of(calm) == 'enabled'
    assert host.failures() == []
    cut = [h for h in host.messages('instance.heartbeat')
           if h['state'] == 'cut_off']
    assert [(h['name'], h['reason']) for h in cut] == [
        ('deaf', 'the guest does not read what the host writes (0 bytes '
                 'waiting)')]


def test_an_unhealthy_guest_asking_for_a_reboot_is_reset(host):
    dom = host.vm()
    host.register(dom, action='log')
    host.tick(dom, health='unhealthy', reason='app wedged', action='reboot')
    host.pump(lambda: dom.resets == 1, 'the reset')
    assert host.failures() == []
    failed = [h for h in host.messages('instance.heartbeat')
              if h['state'] == 'failed']
    assert failed[0]['action_taken'] == 'reboot'
    assert 'app wedged' in failed[0]['reason']


@pytest.mark.parametrize('beat, cell', [
    (None, None),
    ({'state': 'enabled', 'interval': 1.0, 'misses': 0, 'paused': []},
     'enabled 1s'),
    ({'state': 'failed', 'interval': 1.0, 'misses': 2, 'paused': []},
     'failed (2 missed)'),
    ({'state': 'failed', 'interval': 1.0, 'misses': 0, 'paused': []},
     'failed (unhealthy)'),
    ({'state': 'paused', 'interval': 1.0, 'misses': 0,
      'paused': ['migrating']}, 'paused (migrating)'),
    ({'state': 'cut_off', 'interval': None, 'misses': 0, 'paused': []},
     'cut_off'),
])
def test_the_heartbeat_column(beat, cell):
    from vmha.manager import inventory
    assert inventory.heartbeat_cell(beat) == cell


def test_a_reset_that_never_ends_sends_the_failure_to_masakari(host):
    """A SIGSTOPped QEMU: libvirt's reset waits until SIGCONT.  Past
    ACTION_BOUND the failure goes to Masakari; the reset ending later
    sends nothing more."""
    dom = host.vm()
    host.register(dom)
    host.pool.hold_keys.add(('action', dom.UUIDString()))
    host.run(dom, 3, answer=False)
    assert host.failures() == []
    for _ in range(int(hm.ACTION_BOUND)):
        host.step(1.0)
    assert host.failures() == [('vm-1', 'heartbeat_lost',
                                'QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')]
    host.pool.release(('action', dom.UUIDString()))
    host.step()
    assert len(host.failures()) == 1 and dom.resets == 1


def test_a_failure_in_an_open_episode_is_neither_reported_nor_acted_on(
        make_host, sockets, tmp_path):
    """Masakari has the episode (reported before an agent restart): a
    new loss of the same guest must not reset it under Masakari's feet
    nor report it twice."""
    first = make_host(max_action='log')
    dom = first.vm()
    first.register(dom)
    first.run(dom, 3, answer=False)
    first.monitor.flush()
    first.hub.stop()
    first.guest(dom).hang_up()
    second = Host(sockets, str(tmp_path / 'vmha.sqlite'),
                  max_action='reboot', fake=first.fake, clock=first.clock)
    second.guests = first.guests
    try:
        guest = second.connect(dom)
        guest.seq = 0
        guest.init()  # registers, then never answers
        second.pump(lambda: second.state_of(dom) == 'enabling', 'enabling')
        second.run(dom, 4, answer=False)
        assert second.state_of(dom) == 'failed'
        assert dom.resets == 0
        assert [f[1] for f in second.failures()] == ['heartbeat_lost']
        assert second.open_episode(dom) == 'heartbeat_lost'
    finally:
        second.monitor.flush()
        second.hub.stop()
        second.journal.close()
