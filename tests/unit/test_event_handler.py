"""Queue, wakeup pipe, STOPPED delay and listener isolation (fake clock)."""

import logging
import os

import pytest

from tests.fixtures import virt
from vmha.virt import event as ev


@pytest.fixture
def driver():
    driver = virt.make_driver(stopped_delay=15.0)
    driver.init_host()
    yield driver
    driver.cleanup()


def lifecycle(driver, dom, code, detail):
    driver.fake.connection.fire_lifecycle(dom, code, detail)


def names(driver):
    return [(getattr(e, 'name', None), e.vir_domain_event
             if isinstance(e, ev.InstanceEvent) else e.name)
            for e in driver.received]


def test_events_are_delivered_in_arrival_order(driver):
    doms = [driver.fake.add_domain('vm-%d' % i) for i in range(3)]
    for dom in doms:
        lifecycle(driver, dom, 2, 0)
    lifecycle(driver, doms[1], 3, 0)
    lifecycle(driver, doms[0], 4, 0)
    driver.host.handler.dispatch_pending()
    assert names(driver) == [
        ('vm-0', 'STARTED_BOOTED'), ('vm-1', 'STARTED_BOOTED'),
        ('vm-2', 'STARTED_BOOTED'), ('vm-1', 'SUSPENDED_PAUSED'),
        ('vm-0', 'RESUMED_UNPAUSED')]


def test_nothing_is_delivered_before_dispatch(driver):
    # Callbacks only queue: the listener runs on the dispatcher.
    lifecycle(driver, driver.fake.add_domain('vm'), 2, 0)
    assert driver.received == []
    assert driver.host.handler.queue_depth() == 1


def test_stopped_is_held_back_for_the_delay(driver):
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 5, 0)
    handler.dispatch_pending()
    assert driver.received == []
    assert handler.next_timeout() == pytest.approx(15.0)
    driver.clock.advance(14.9)
    handler.dispatch_pending()
    assert driver.received == []
    driver.clock.advance(0.1)
    handler.dispatch_pending()
    assert names(driver) == [('vm', 'STOPPED_SHUTDOWN')]
    assert handler.next_timeout() is None


def test_restart_cancels_held_back_stopped(driver):
    """Regression: a hard reboot (destroy + start) is not a stop."""
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 5, 1)
    driver.clock.advance(3)
    lifecycle(driver, dom, 2, 0)
    handler.dispatch_pending()
    driver.clock.advance(60)
    handler.dispatch_pending()
    assert names(driver) == [('vm', 'STARTED_BOOTED')]
    assert handler.next_timeout() is None


def test_a_second_stop_is_held_from_its_own_time(driver):
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 5, 1)
    lifecycle(driver, dom, 2, 0)
    driver.clock.advance(10)
    lifecycle(driver, dom, 5, 0)
    handler.dispatch_pending()
    driver.clock.advance(10)
    handler.dispatch_pending()
    assert names(driver) == [('vm', 'STARTED_BOOTED')]
    driver.clock.advance(5)
    handler.dispatch_pending()
    assert names(driver) == [('vm', 'STARTED_BOOTED'),
                             ('vm', 'STOPPED_SHUTDOWN')]


def test_other_domains_do_not_cancel_a_stop(driver):
    handler = driver.host.handler
    crashed = driver.fake.add_domain('crashed')
    other = driver.fake.add_domain('other')
    lifecycle(driver, crashed, 5, 1)
    lifecycle(driver, other, 2, 0)
    driver.fake.connection.fire(18, crashed, 2, 2)  # not a lifecycle event
    handler.dispatch_pending()
    driver.clock.advance(15)
    handler.dispatch_pending()
    assert names(driver) == [('other', 'STARTED_BOOTED'),
                             ('crashed', 'DISCONNECTED_CHANNEL'),
                             ('crashed', 'STOPPED_DESTROYED')]


def test_undefine_delivers_the_held_stop_first(driver):
    """A definition change is not a restart: the stop survives, in order."""
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 5, 0)
    lifecycle(driver, dom, 1, 0)
    handler.dispatch_pending()
    assert names(driver) == [('vm', 'STOPPED_SHUTDOWN'),
                             ('vm', 'UNDEFINED_REMOVED')]
    assert handler.next_timeout() is None


@pytest.mark.parametrize('detail, name', [(5, 'STOPPED_FAILED'),
                                          (2, 'STOPPED_CRASHED')])
def test_failure_stops_are_never_held_back(driver, detail, name):
    """A dead QEMU or a panic is no reboot: report it without the delay."""
    lifecycle(driver, driver.fake.add_domain('vm'), 5, detail)
    driver.host.handler.dispatch_pending()
    assert names(driver) == [('vm', name)]


def test_zero_delay_delivers_stopped_at_once():
    driver = virt.make_driver(stopped_delay=0)
    driver.init_host()
    lifecycle(driver, driver.fake.add_domain('vm'), 5, 5)
    driver.host.handler.dispatch_pending()
    assert names(driver) == [('vm', 'STOPPED_FAILED')]


def test_cleanup_drops_held_back_stops_and_says_so(driver, caplog):
    caplog.set_level(logging.INFO)
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 5, 1)
    driver.host.handler.dispatch_pending()
    driver.cleanup()
    assert dom.UUIDString() in caplog.text
    assert 'held-back' in caplog.text
    assert driver.received == []


def test_queue_overflow_is_counted_and_forces_a_resync(caplog):
    caplog.set_level(logging.ERROR)
    driver = virt.make_driver(stopped_delay=0, queue_size=3)
    driver.init_host()
    dom = driver.fake.add_domain('vm')
    for _ in range(5):
        lifecycle(driver, dom, 3, 0)
    handler = driver.host.handler
    handler.dispatch_pending()
    assert len(driver.received) == 4
    resync = driver.received[-1]
    assert isinstance(resync, ev.ResyncRequiredEvent)
    assert resync.dropped == 2
    assert handler.dropped_total == 2
    assert 'dropped 2 event(s)' in caplog.text
    # Once reported, the same loss is not reported again.
    handler.dispatch_pending()
    assert len(driver.received) == 4


def test_a_raising_listener_does_not_stop_the_others(driver, caplog):
    caplog.set_level(logging.ERROR)
    seen = []

    def broken(event):
        raise RuntimeError('listener bug')

    driver._listeners.insert(0, broken)
    driver.register_event_listener(seen.append)
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 2, 0)
    lifecycle(driver, dom, 3, 0)
    driver.host.handler.dispatch_pending()
    assert len(driver.received) == 2 and len(seen) == 2
    failures = [r for r in caplog.records if 'listener' in r.getMessage()]
    assert len(failures) == 2
    assert all(dom.UUIDString() in r.getMessage() for r in failures)
    assert 'listener bug' in caplog.text


def test_wakeups_collapse_into_one_byte(driver):
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    for _ in range(1000):
        lifecycle(driver, dom, 3, 0)
    assert os.read(handler._pipe.read_fd, 4096) == b'\0'
    # The byte was stolen, yet the dispatcher still drains everything.
    handler.dispatch_pending()
    assert len(driver.received) == 1000


def test_event_queued_after_a_drain_wakes_again(driver):
    handler = driver.host.handler
    dom = driver.fake.add_domain('vm')
    lifecycle(driver, dom, 3, 0)
    handler.dispatch_pending()
    lifecycle(driver, dom, 4, 0)
    assert os.read(handler._pipe.read_fd, 4096) == b'\0'


def test_wakeup_during_a_drain_is_not_lost(driver):
    """Regression: a producer waking the dispatcher while it empties the
    pipe left the wakeup flag set with no byte in the pipe, and every
    later event sat in the queue forever (seen with 50 domains on
    test:///default under the threading backend)."""
    handler = driver.host.handler
    pipe = handler._pipe
    dom = driver.fake.add_domain('vm')
    real_read = pipe._read

    def read_racing_a_producer(fd, size):
        data = real_read(fd, size)
        if data:  # the producer runs between the pipe read and the flag
            lifecycle(driver, dom, 3, 0)
        return data

    lifecycle(driver, dom, 2, 0)
    pipe._read = read_racing_a_producer
    handler.dispatch_pending()
    pipe._read = real_read
    assert len(driver.received) == 2
    # A later event must still wake the dispatcher.
    lifecycle(driver, dom, 4, 0)
    assert os.read(pipe.read_fd, 4096) == b'\0'


def test_unknown_backend_is_refused():
    from vmha.virt.libvirt import event_handler
    with pytest.raises(ValueError, match='asyncio'):
        event_handler.EventHandler.create('asyncio', print)
