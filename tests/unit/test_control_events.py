"""Control events get through a full event queue (issue 11 item 3).

The fake libvirt, dispatch driven by hand.  What a user notices: with the
queue full of domain events, a lost libvirt connection is still noticed
(``connected`` false, a reconnect under way, /healthz unhealthy past its
bound) and the reconnect's result still installs the new connection.
"""

from tests.fixtures import virt
from vmha.manager import health
from vmha.virt import event as ev
from vmha.virt.libvirt import event_builder

STARTED = 2  # libvirt lifecycle event code


def raw_event(driver, uuid):
    return event_builder.RawEvent(0.0, driver.clock(), 0, uuid, 'vm-1',
                                  (STARTED, 0))


def test_connection_lost_and_reconnected_get_through_a_full_queue():
    """Regression: CONNECTION_LOST was dropped with the domain events of a
    full queue: ``connected`` stayed true, no reconnect started, /healthz
    stayed green."""
    driver = virt.make_driver(queue_size=5)
    driver.init_host()
    check = health.HealthCheck(driver, [], 20.0, 0.0)
    dom = driver.fake.add_domain('vm-1')
    for _ in range(5):
        driver.fake.fire_lifecycle(dom, STARTED, 0)
    driver.fake.connection.close_by_peer()
    driver.fake.fire_lifecycle(dom, STARTED, 0)  # this one is dropped
    driver.host.handler.dispatch_pending()
    kinds = [type(e) for e in driver.received]
    assert kinds == [ev.LifecycleEvent] * 5 + [
        ev.ConnectionLostEvent, ev.ResyncRequiredEvent]
    assert not driver.host.connected
    assert [name for name, _ in driver.host.handler.threads_requested] == [
        'libvirt-event-loop', 'libvirt-reconnect']
    assert check.report()['status'] == 'unhealthy'
    assert check.problems()[0].startswith('libvirt disconnected for ')

    for _ in range(5):
        driver.host.handler.enqueue(raw_event(driver, dom.UUIDString()))
    driver.host.reconnect()  # its result must get through the full queue
    driver.host.handler.dispatch_pending()
    assert isinstance(driver.received[-1], ev.ConnectionRestoredEvent)
    assert driver.host.connected
    assert check.report()['status'] == 'ok'
