"""Connecting, keepalive, losing libvirtd and getting it back (fake)."""

import logging

import pytest

from tests.fixtures import virt
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt.libvirt import event_builder
from vmha.virt.libvirt import host as libvirt_host


@pytest.fixture
def driver():
    driver = virt.make_driver(stopped_delay=0, keepalive_interval=2,
                              keepalive_count=2, reconnect_min=0.5,
                              reconnect_max=4.0)
    driver.init_host()
    yield driver
    driver.cleanup()


def test_event_loop_is_registered_and_started_before_connecting(driver):
    assert driver.fake.event_impl_registered
    names = [name for name, _ in driver.host.handler.threads_requested]
    assert names == ['libvirt-event-loop']


def test_event_loop_starts_once_per_process():
    fake = virt.fakelibvirt.FakeLibvirt()
    first = virt.make_driver(fake=fake)
    second = virt.make_driver(fake=fake)
    first.init_host()
    second.init_host()
    assert len(first.host.handler.threads_requested) == 1
    assert second.host.handler.threads_requested == []


def test_every_event_id_is_subscribed(driver):
    subscribed = sorted(e for e, _, _ in
                        driver.fake.connection.callbacks.values())
    assert subscribed == sorted(event_builder.SUBSCRIBED_EVENT_IDS)


def test_missing_event_id_in_older_libvirt_is_not_fatal(caplog):
    caplog.set_level(logging.WARNING)
    driver = virt.make_driver(stopped_delay=0)
    driver.fake.unsupported_event_ids = {21, 20}
    driver.init_host()
    assert 'JOB_COMPLETED' in caplog.text
    dom = driver.fake.add_domain('vm')
    driver.fake.connection.fire_lifecycle(dom, 2, 0)
    driver.host.handler.dispatch_pending()
    assert len(driver.received) == 1


def test_cleanup_deregisters_every_callback(driver):
    """Regression: libvirt kept calling a closed connection's callbacks,
    filling a queue nobody drained."""
    conn = driver.fake.connection
    driver.cleanup()
    assert conn.callbacks == {} and conn.close_callback is None
    conn.fire_lifecycle(driver.fake.add_domain('vm'), 2, 0)
    assert driver.host.handler.queue_depth() == 0


def test_a_replaced_connection_stops_feeding_the_queue(driver):
    old = driver.fake.connection
    lose_connection(driver)
    driver.host.reconnect()
    driver.host.handler.dispatch_pending()
    assert old.callbacks == {}
    old.fire_lifecycle(driver.fake.add_domain('vm'), 2, 0)
    assert driver.host.handler.queue_depth() == 0


def test_keepalive_is_set_from_the_options(driver):
    assert driver.fake.connection.keepalive == (2, 2)
    assert driver.host.keepalive_supported


def test_no_keepalive_support_is_not_fatal(caplog):
    caplog.set_level(logging.INFO)
    driver = virt.make_driver(uri='test:///default')
    driver.fake.keepalive_supported = False
    driver.init_host()
    assert driver.host.keepalive_supported is False
    assert 'no keepalive' in caplog.text


def test_bad_uri_fails_with_connection_failed():
    driver = virt.make_driver(uri='bogus:///nowhere')
    with pytest.raises(exception.ConnectionFailed, match='bogus'):
        driver.init_host()


def lose_connection(driver, reason=1):
    driver.fake.connection.close_by_peer(reason)
    driver.host.handler.dispatch_pending()


def test_close_callback_delivers_connection_lost_and_starts_reconnect(driver):
    lose_connection(driver, reason=2)
    (lost,) = driver.received
    assert isinstance(lost, ev.ConnectionLostEvent)
    assert lost.reason == 'KEEPALIVE'
    assert [n for n, _ in driver.host.handler.threads_requested] == [
        'libvirt-event-loop', 'libvirt-reconnect']
    with pytest.raises(exception.HypervisorUnavailable):
        driver.list_instances()


def test_a_second_close_does_not_start_a_second_reconnect(driver):
    old = driver.fake.connection
    lose_connection(driver)
    old.close_by_peer(1)  # a stale callback of the dead connection
    driver.host.handler.dispatch_pending()
    assert len(driver.received) == 1
    reconnects = [n for n, _ in driver.host.handler.threads_requested
                  if n == 'libvirt-reconnect']
    assert len(reconnects) == 1


def test_reconnect_backs_off_then_restores_and_resubscribes(driver):
    lose_connection(driver)
    driver.fake.fail_opens = 4
    driver.host.reconnect()
    sleeps = driver.host.handler.sleeps
    assert len(sleeps) == 4
    # Each wait is in the upper half of a doubling ceiling capped at 4 s.
    for delay, ceiling in zip(sleeps, (0.5, 1.0, 2.0, 4.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    driver.host.handler.dispatch_pending()
    restored = driver.received[-1]
    assert isinstance(restored, ev.ConnectionRestoredEvent)
    assert restored.attempts == 5
    assert driver.host.reconnects == 1
    # Callbacks are live on the new connection.
    dom = driver.fake.add_domain('vm')
    driver.fake.connection.fire_lifecycle(dom, 5, 5)
    driver.host.handler.dispatch_pending()
    assert driver.received[-1].vir_domain_event == 'STOPPED_FAILED'
    assert driver.list_instances()[0].name == 'vm'


def test_a_lost_connection_can_be_lost_again(driver):
    for _ in range(2):
        lose_connection(driver)
        driver.host.reconnect()
        driver.host.handler.dispatch_pending()
    kinds = [type(e).__name__ for e in driver.received]
    assert kinds == ['ConnectionLostEvent', 'ConnectionRestoredEvent'] * 2


def test_new_connection_closing_before_it_is_installed(driver):
    """Regression: a connection lost while the reconnect was being handed
    over must not leave the agent on a dead connection for good."""
    lose_connection(driver)
    driver.host.reconnect()
    driver.fake.connection.close_by_peer(1)  # before the dispatcher runs
    driver.host.handler.dispatch_pending()
    kinds = [type(e).__name__ for e in driver.received]
    assert kinds == ['ConnectionLostEvent']
    reconnects = [n for n, _ in driver.host.handler.threads_requested
                  if n == 'libvirt-reconnect']
    assert len(reconnects) == 2
    with pytest.raises(exception.HypervisorUnavailable):
        driver.list_instances()
    driver.host.reconnect()
    driver.host.handler.dispatch_pending()
    assert isinstance(driver.received[-1], ev.ConnectionRestoredEvent)
    assert driver.list_instances() == []


def test_reconnect_stops_when_the_agent_stops(driver):
    lose_connection(driver)
    driver.fake.fail_opens = 1000
    driver.host.handler.native_sleep = lambda s: driver.host.cleanup()
    driver.host.reconnect()
    assert driver.fake.open_attempts == 2  # start-up + one retry
    assert not any(isinstance(e, ev.ConnectionRestoredEvent)
                   for e in driver.received)


def test_backoff_delays_double_up_to_the_cap_with_jitter():
    low = libvirt_host.backoff_delays(1, 8, rand=lambda: 0.0)
    high = libvirt_host.backoff_delays(1, 8, rand=lambda: 1.0)
    assert [next(low) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert [next(high) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
