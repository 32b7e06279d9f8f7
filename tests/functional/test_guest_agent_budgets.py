"""Hung guests never starve healthy ones: the guest-agent monitor running
for real (its own task, the native pool) over 100 fake guests, 10 % of
them hung the way libvirt shows it (the first ping times out, later ones
are held, here 2 s).  Pings of guests known to be failing, and pings
out longer than ``SLOW_AFTER``, run on a budget of their own
(``max_suspect_pings``), so the healthy guests' small budget stays free
for them."""

from tests.conftest import BACKEND
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import guest_states as gs
from vmha.manager import selection
from vmha.manager import state

GUESTS = 100
HEALTHY_BUDGET = 2
INTERVAL = 1.5


class Agent:
    def __init__(self, path, suspects, delay=0.005):
        self.driver = virt.make_driver(agent_calls=HEALTHY_BUDGET + suspects)
        self.driver.init_host()
        self.doms = []
        for index in range(GUESTS):
            dom = self.driver.fake.add_domain('vm-%03d' % index)
            dom.has_agent_channel = True
            dom.agent_delay = delay
            dom.sticky_delay = 2.0
            self.doms.append(dom)
        self.journal = db.Journal(path)
        self.outbox = outbox_lib.Outbox(self.journal)
        reporter = failure_monitor.Reporter(
            self.outbox, state.StateStore(self.journal), 'compute-1')
        backend = concurrency.get(BACKEND)
        self.monitor = guest_monitor.GuestAgentMonitor(
            self.driver, self.journal, reporter,
            selection.Selector(self.driver),
            concurrency.NativePool(backend, HEALTHY_BUDGET + suspects),
            backend, guest_monitor.Settings(interval=INTERVAL, timeout=0.5,
                                            failure_threshold=2),
            evidence_settle=0.1, suspect_pings=suspects)
        self.monitor.start()

    def states(self):
        return {s['name']: s for s in self.monitor.status()}

    def failures(self):
        return [m for m in self.outbox.pending(1000)
                if m.event_type == 'instance.failure']

    def close(self):
        self.monitor.stop()
        self.driver.cleanup()
        self.journal.close()


def all_healthy(agent):
    states = agent.states()
    return len(states) == GUESTS and all(
        s['state'] == gs.HEALTHY for s in states.values())


def test_slow_healthy_guests_beyond_the_budgets_are_never_failed(
        tmp_path, wait_for):
    """No false miss: every agent answers, in 0.3 s (slow: past
    SLOW_AFTER, so their pings fill the small suspect budget and then
    wait); none is ever counted failed."""
    agent = Agent(str(tmp_path / 'j.sqlite'), suspects=4, delay=0.3)
    try:
        wait_for(lambda: all_healthy(agent), timeout=30, what='healthy')
        calls = {dom.name(): dom.agent_calls for dom in agent.doms}
        wait_for(lambda: all(dom.agent_calls >= calls[dom.name()] + 2
                             for dom in agent.doms), timeout=60,
                 what='two more pings each')
        assert all(s['failures'] == 0 and s['state'] == gs.HEALTHY
                   for s in agent.states().values())
        assert agent.failures() == []
    finally:
        agent.close()


def test_healthy_guests_are_pinged_every_cycle_while_10_percent_hang(
        tmp_path, wait_for):
    agent = Agent(str(tmp_path / 'j.sqlite'), suspects=16)
    try:
        wait_for(lambda: all_healthy(agent), timeout=15, what='healthy')
        hung = agent.doms[::10]
        for dom in hung:
            dom.agent_hung = True
        # Each hung guest is still reported on its second missed ping.
        wait_for(lambda: len(agent.failures()) == len(hung), timeout=15,
                 what='the hung guests reported')
        healthy = [dom for dom in agent.doms if dom not in hung]
        # From now on every hung guest's pings are held 2 s each: with
        # one shared budget of 2 they would take both slots for good
        # (10 held pings, 2 slots) and the healthy guests would wait
        # about 10 s a cycle.  Four cycles (6 s): at least three pings
        # each.
        calls = {dom.name(): dom.agent_calls for dom in healthy}
        hung_calls = {dom.name(): dom.agent_calls for dom in hung}
        wait_for(lambda: all(dom.agent_calls >= calls[dom.name()] + 3
                             for dom in healthy), timeout=4 * INTERVAL + 1,
                 what='three pings of every healthy guest')
        states = agent.states()
        assert {states[d.name()]['state'] for d in hung} == {gs.REPORTED}
        assert all(states[d.name()]['state'] == gs.HEALTHY and
                   states[d.name()]['failures'] == 0 for d in healthy)
        # The hung guests are still pinged (a recovery is seen).
        assert all(dom.agent_calls > hung_calls[dom.name()] for dom in hung)
        assert len(agent.failures()) == len(hung)
    finally:
        agent.close()
