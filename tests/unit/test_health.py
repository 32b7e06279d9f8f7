"""The health checks behind /healthz and the systemd watchdog, over the
libvirt driver on the fake libvirt (dispatch driven by hand)."""

from tests.fixtures import virt
from vmha.manager import health


def make(driver, disconnected_timeout=60.0, stall_timeout=20.0):
    return health.HealthCheck(driver, [], stall_timeout,
                              disconnected_timeout)


def test_a_lost_libvirt_connection_fails_healthz_only_past_its_bound():
    driver = virt.make_driver()
    driver.init_host()
    check = make(driver, disconnected_timeout=60.0)
    assert check.report()['status'] == 'ok'

    driver.fake.connection.close_by_peer()
    driver.host.handler.dispatch_pending()
    report = check.report()
    assert report['checks']['libvirt']['connected'] is False
    assert report['status'] == 'ok'  # lost, but not for long yet

    expired = make(driver, disconnected_timeout=0.0)
    report = expired.report()
    assert report['status'] == 'unhealthy'
    assert not report['checks']['libvirt']['ok']
    assert expired.problems()[0].startswith('libvirt disconnected for ')
    # Restarting vmha would not bring libvirtd back: the watchdog is fed.
    assert expired.turning_over()


def test_a_dispatcher_that_stopped_turning_over_starves_the_watchdog():
    driver = virt.make_driver()
    driver.init_host()
    check = make(driver, stall_timeout=20.0)
    driver.host.handler.dispatch_pending()
    driver.clock.advance(19.0)
    assert check.turning_over()
    driver.clock.advance(2.0)
    assert not check.turning_over()
    assert check.report()['checks']['dispatcher'] == {
        'ok': False, 'age': 21.0, 'queue_depth': 0}
    assert check.problems() == [
        'event dispatcher has not turned over for 21.0s']
    driver.host.handler.dispatch_pending()  # it woke up again
    assert check.turning_over()
