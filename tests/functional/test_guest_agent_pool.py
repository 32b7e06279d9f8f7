"""The guest-agent monitor running for real (its own task, the native
pool, several agent connections) over fake guests whose agents answer
after a delay, some of them hung the way libvirt shows it: the first
ping times out, later ones are held ~5 s (here scaled down)."""

import time

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


def test_hung_guests_are_reported_and_never_hold_up_the_others(tmp_path,
                                                              wait_for):
    driver = virt.make_driver(agent_calls=32, max_client_requests=5)
    driver.init_host()
    doms = []
    for index in range(60):
        dom = driver.fake.add_domain('vm-%02d' % index)
        dom.has_agent_channel = True
        dom.agent_delay = 0.01
        dom.sticky_delay = 2.0
        doms.append(dom)
    journal = db.Journal(str(tmp_path / 'j.sqlite'))
    outbox = outbox_lib.Outbox(journal)
    reporter = failure_monitor.Reporter(outbox, state.StateStore(journal),
                                        'compute-1')
    backend = concurrency.get(BACKEND)
    monitor = guest_monitor.GuestAgentMonitor(
        driver, journal, reporter, selection.Selector(driver),
        concurrency.NativePool(backend, 32), backend,
        guest_monitor.Settings(interval=1.5, timeout=1.0,
                               failure_threshold=2),
        evidence_settle=0.1)
    monitor.start()
    try:
        def states():
            return {s['name']: s['state'] for s in monitor.status()}
        wait_for(lambda: set(states().values()) == {gs.HEALTHY}
                 and len(states()) == 60, timeout=10)
        hung = doms[::20]  # 3 of 60
        for dom in hung:
            dom.agent_hung = True
        wait_for(lambda: sum(1 for m in outbox.pending(1000)
                             if m.event_type == 'instance.failure') == 3,
                 timeout=15)
        current = states()
        assert {current[d.name()] for d in hung} == {gs.REPORTED}
        assert [n for n, s in current.items() if s != gs.HEALTHY] == \
            sorted(d.name() for d in hung)
        # The agent calls went over several connections of their own.
        assert driver.agent_connections.opened >= 2
    finally:
        monitor.stop()
        driver.cleanup()
        journal.close()


def test_a_call_submitted_beside_a_slow_one_does_not_wait_for_it():
    """Regression: with one idle thread, two calls submitted together ran
    one after the other (the idle thread counted as free until it took
    the first), so healthy guests' pings queued behind a hung one's."""
    backend = concurrency.get(BACKEND)
    pool = concurrency.NativePool(backend, 4)
    release = backend.native_lock()
    release.acquire()
    pool.submit('warm-up', lambda: None)
    assert [job.key for job in next_jobs(pool)] == ['warm-up']  # one idle

    pool.submit('slow', release.acquire)  # blocks until released
    pool.submit('quick', lambda: 'answered')
    try:
        assert [(job.key, job.result) for job in next_jobs(pool)] == [
            ('quick', 'answered')]
    finally:
        release.release()
    assert [job.key for job in next_jobs(pool)] == ['slow']
    pool.close()


def next_jobs(pool, timeout=5.0):
    """The next finished jobs (``wait`` may wake with none: a wakeup
    written after the last collect)."""
    deadline = time.monotonic() + timeout
    jobs = []
    while not jobs and time.monotonic() < deadline:
        jobs = pool.wait(deadline - time.monotonic())
    return jobs
