"""Each libvirt callback becomes the typed event a monitor expects.

Callbacks are fired on the fake libvirt exactly as libvirt's event loop
would call them, then dispatched by hand: the whole path from callback to
listener runs, with no thread.
"""

import logging

import pytest

from tests.fixtures import virt
from vmha.virt import event as ev


@pytest.fixture
def driver():
    driver = virt.make_driver(stopped_delay=0)
    driver.init_host()
    driver.dom = driver.fake.add_domain('vm-1')
    yield driver
    driver.cleanup()


def fire(driver, event_id, *args):
    driver.fake.connection.fire(event_id, driver.dom, *args)
    driver.host.handler.dispatch_pending()
    assert len(driver.received) == 1, driver.received
    return driver.received[0]


@pytest.mark.parametrize('code, detail, cls, transition, name', [
    (5, 5, ev.LifecycleEvent, 'STOPPED', 'STOPPED_FAILED'),
    (5, 1, ev.LifecycleEvent, 'STOPPED', 'STOPPED_DESTROYED'),
    (5, 2, ev.LifecycleEvent, 'STOPPED', 'STOPPED_CRASHED'),
    (5, 4, ev.LifecycleEvent, 'STOPPED', 'STOPPED_SAVED'),
    (2, 0, ev.LifecycleEvent, 'STARTED', 'STARTED_BOOTED'),
    (2, 4, ev.LifecycleEvent, 'RESUMED', 'STARTED_WAKEUP'),
    (3, 0, ev.LifecycleEvent, 'PAUSED', 'SUSPENDED_PAUSED'),
    (3, 2, ev.LifecycleEvent, 'PAUSED', 'SUSPENDED_IOERROR'),
    (3, 3, ev.LifecycleEvent, 'PAUSED', 'SUSPENDED_WATCHDOG'),
    (3, 7, ev.LifecycleEvent, 'POSTCOPY_STARTED', 'SUSPENDED_POSTCOPY'),
    (3, 1, ev.LifecycleEvent, 'MIGRATION_COMPLETED', 'SUSPENDED_MIGRATED'),
    (4, 0, ev.LifecycleEvent, 'RESUMED', 'RESUMED_UNPAUSED'),
    (6, 1, ev.LifecycleEvent, 'SHUTTING_DOWN', 'SHUTDOWN_GUEST'),
    (7, 0, ev.LifecycleEvent, 'SUSPENDED', 'PMSUSPENDED_MEMORY'),
    (8, 0, ev.CrashedEvent, 'CRASHED', 'CRASHED_PANICKED'),
    (0, 0, ev.LifecycleEvent, 'DEFINED', 'DEFINED_ADDED'),
    (1, 0, ev.LifecycleEvent, 'UNDEFINED', 'UNDEFINED_REMOVED'),
])
def test_lifecycle_events(driver, code, detail, cls, transition, name):
    event = fire(driver, 0, code, detail)
    assert type(event) is cls
    assert event.transition_name == transition
    assert (event.event_name, event.vir_domain_event) == ('LIFECYCLE', name)
    assert (event.uuid, event.name) == (driver.dom.UUIDString(), 'vm-1')
    assert (event.event_id, event.code, event.detail) == (0, code, detail)


def test_every_event_is_stamped_when_the_callback_ran(driver):
    driver.clock.now = 4242.0
    event = fire(driver, 0, 2, 0)
    driver.clock.advance(3)
    assert event.monotonic == 4242.0
    assert event.time_iso.endswith('+00:00')


@pytest.mark.parametrize('event_id, args, cls, event_name, detail_name', [
    (1, (), ev.RebootEvent, 'REBOOT', 'UNKNOWN'),
    (3, (1,), ev.WatchdogEvent, 'WATCHDOG', 'WATCHDOG_PAUSE'),
    (3, (2,), ev.WatchdogEvent, 'WATCHDOG', 'WATCHDOG_RESET'),
    (4, ('/var/lib/a.qcow2', 'virtio-disk0', 2), ev.IOErrorEvent,
     'IO_ERROR', 'IO_ERROR_REPORT'),
    (4, ('/var/lib/a.qcow2', 'virtio-disk0', 1), ev.IOErrorEvent,
     'IO_ERROR', 'IO_ERROR_PAUSE'),
    (6, ('/var/lib/a.qcow2', 'virtio-disk0', 1, 'enospc'), ev.IOErrorEvent,
     'IO_ERROR_REASON', 'IO_ERROR_PAUSE'),
    (7, (), ev.ControlErrorEvent, 'CONTROL_ERROR', 'UNKNOWN'),
    (18, (1, 2), ev.AgentLifecycleEvent, 'AGENT_LIFECYCLE',
     'CONNECTED_CHANNEL'),
    (18, (2, 1), ev.AgentLifecycleEvent, 'AGENT_LIFECYCLE',
     'DISCONNECTED_DOMAIN_STARTED'),
    (21, ({'time_elapsed': 1200},), ev.JobCompletedEvent, 'JOB_COMPLETED',
     'UNKNOWN'),
    (20, (3,), ev.MigrationIterationEvent, 'MIGRATION_ITERATION', 'UNKNOWN'),
    (15, ('net0',), ev.DeviceRemovedEvent, 'DEVICE_REMOVED', 'UNKNOWN'),
])
def test_typed_instance_events(driver, event_id, args, cls, event_name,
                               detail_name):
    event = fire(driver, event_id, *args)
    assert type(event) is cls
    assert (event.event_name, event.vir_domain_event) == (event_name,
                                                          detail_name)
    assert event.uuid == driver.dom.UUIDString()


def test_io_error_keeps_device_path_and_reason(driver):
    event = fire(driver, 6, '/var/lib/a.qcow2', 'virtio-disk0', 1, 'enospc')
    assert (event.src_path, event.dev_alias, event.reason, event.action) == (
        '/var/lib/a.qcow2', 'virtio-disk0', 'enospc', 'PAUSE')


def test_agent_lifecycle_says_connected_or_not(driver):
    assert fire(driver, 18, 1, 2).connected
    driver.received.clear()
    assert not fire(driver, 18, 2, 2).connected


@pytest.mark.parametrize('args, name', [
    ((5, 42), 'STOPPED_UNKNOWN_42'),
    ((99, 0), 'UNKNOWN_99'),
    ((5, -1), 'STOPPED_UNKNOWN_-1'),
])
def test_unknown_lifecycle_codes_are_readable(driver, args, name):
    event = fire(driver, 0, *args)
    assert event.vir_domain_event == name


def test_unknown_watchdog_action_is_readable(driver):
    assert fire(driver, 3, 77).vir_domain_event == 'WATCHDOG_UNKNOWN_77'


def test_unknown_event_id_becomes_a_readable_event(driver):
    # vmha never subscribes to id 99; a newer libvirt could still send it.
    driver.host._on_domain_event(99, driver.dom.UUIDString(), 'vm-1',
                                 ('whatever',))
    driver.host.handler.dispatch_pending()
    (event,) = driver.received
    assert type(event) is ev.InstanceEvent
    assert event.event_name == 'UNKNOWN_99'
    assert 'UNKNOWN_99' in event.describe()


@pytest.mark.parametrize('event_id, args', [
    (0, ('stopped', 'failed')),
    (0, (5,)),
    (3, ()),
    (4, ('/dev/sda',)),
    (18, (None, 1)),
    (21, ('not a dict',)),
])
def test_malformed_event_is_logged_with_domain_and_skipped(
        driver, caplog, event_id, args):
    caplog.set_level(logging.WARNING)
    driver.fake.connection.fire(event_id, driver.dom, *args)
    driver.fake.connection.fire(0, driver.dom, 2, 0)
    driver.host.handler.dispatch_pending()
    # The bad event is gone, the good one after it still arrives.
    assert [e.vir_domain_event for e in driver.received] == ['STARTED_BOOTED']
    assert driver.dom.UUIDString() in caplog.text
    assert 'malformed' in caplog.text


def test_names_match_the_libvirt_binding():
    """The tables hold libvirt's ABI numbers; check them against it."""
    libvirt = pytest.importorskip('libvirt')
    for event_id, name in ev.EVENT_ID_NAMES.items():
        assert getattr(libvirt, 'VIR_DOMAIN_EVENT_ID_' + name) == event_id
    for code, name in ev.LIFECYCLE_NAMES.items():
        assert getattr(libvirt, 'VIR_DOMAIN_EVENT_' + name) == code
        for detail, detail_name in enumerate(ev.LIFECYCLE_DETAIL_NAMES[code]):
            const = 'VIR_DOMAIN_EVENT_%s_%s' % (name, detail_name)
            assert getattr(libvirt, const) == detail, const
    for action, name in enumerate(ev.WATCHDOG_ACTION_NAMES):
        assert getattr(libvirt, 'VIR_DOMAIN_EVENT_WATCHDOG_' + name) == action
    for action, name in enumerate(ev.IO_ERROR_ACTION_NAMES):
        assert getattr(libvirt, 'VIR_DOMAIN_EVENT_IO_ERROR_' + name) == action
    prefix = 'VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_'
    for state, name in ev.AGENT_STATE_NAMES.items():
        assert getattr(libvirt, prefix + 'STATE_' + name) == state
    for reason, name in enumerate(ev.AGENT_REASON_NAMES):
        assert getattr(libvirt, prefix + 'REASON_' + name) == reason
