"""The real pipeline on libvirt's own daemon-less test:///default driver.

Real libvirt event-loop thread, real wakeup pipe, the dispatcher of the
backend under test (greenthread or native thread).  test:///default is one
shared hypervisor per process, so every test uses its own domain names.
"""

import uuid as uuid_lib

import pytest

from tests.conftest import BACKEND
from vmha.virt import exception
from vmha.virt import power_state
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional

XML = """<domain type='test'>
  <name>%s</name><uuid>%s</uuid><memory>65536</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def make_driver():
    drivers = []

    def make(stopped_delay=0.0, **kwargs):
        driver = libvirt_driver.LibvirtDriver(
            'test:///default', backend=BACKEND, stopped_delay=stopped_delay,
            **kwargs)
        driver.received = []
        driver.register_event_listener(driver.received.append)
        driver.init_host()
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.cleanup()


def new_xml(prefix):
    name = '%s-%s' % (prefix, uuid_lib.uuid4().hex[:8])
    return name, XML % (name, uuid_lib.uuid4())


def of(driver, name):
    return [e.vir_domain_event for e in driver.received
            if getattr(e, 'name', None) == name]


def test_events_arrive_in_order(make_driver, wait_for):
    driver = make_driver()
    conn = driver.host.get_connection()
    name, xml = new_xml('order')
    dom = conn.create_domain(xml)
    dom.suspend()
    dom.resume()
    dom.destroy()
    expected = ['STARTED_BOOTED', 'SUSPENDED_PAUSED', 'RESUMED_UNPAUSED',
                'STOPPED_DESTROYED']
    wait_for(lambda: len(of(driver, name)) == 4, what='four events')
    assert of(driver, name) == expected


def test_many_domains_keep_per_domain_order(make_driver, wait_for):
    driver = make_driver()
    conn = driver.host.get_connection()
    names = []
    for _ in range(50):
        name, xml = new_xml('many')
        names.append(name)
        dom = conn.create_domain(xml)
        dom.suspend()
        dom.destroy()
    wait_for(lambda: all(len(of(driver, n)) == 3 for n in names),
             what='150 events')
    for name in names:
        assert of(driver, name) == ['STARTED_BOOTED', 'SUSPENDED_PAUSED',
                                    'STOPPED_DESTROYED']


def test_held_back_stopped_is_cancelled_by_a_restart(make_driver, wait_for):
    driver = make_driver(stopped_delay=0.5)
    conn = driver.host.get_connection()
    name, xml = new_xml('reboot')
    conn.create_domain(xml).destroy()
    dom = conn.create_domain(xml)  # same UUID: a hard reboot
    wait_for(lambda: len(of(driver, name)) == 2, what='two STARTED')
    dom.destroy()
    wait_for(lambda: len(of(driver, name)) == 3, timeout=5,
             what='the final STOPPED after the delay')
    assert of(driver, name) == ['STARTED_BOOTED', 'STARTED_BOOTED',
                                'STOPPED_DESTROYED']


def test_stopped_is_delivered_only_after_the_delay(make_driver, wait_for):
    import time
    driver = make_driver(stopped_delay=0.4)
    seen_at = {}
    driver.register_event_listener(
        lambda e: seen_at.setdefault(getattr(e, 'vir_domain_event', ''),
                                     time.monotonic()))
    name, xml = new_xml('delay')
    dom = driver.host.get_connection().create_domain(xml)
    dom.destroy()
    wait_for(lambda: 'STOPPED_DESTROYED' in seen_at, what='STOPPED')
    stopped = [e for e in driver.received
               if getattr(e, 'vir_domain_event', '') == 'STOPPED_DESTROYED'
               and e.name == name][0]
    assert seen_at['STOPPED_DESTROYED'] - stopped.monotonic >= 0.4


def test_a_raising_listener_does_not_stop_others(make_driver, wait_for):
    driver = make_driver()
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError('listener bug')

    driver._listeners.insert(0, broken)
    name, xml = new_xml('raise')
    dom = driver.host.get_connection().create_domain(xml)
    dom.destroy()
    wait_for(lambda: len(of(driver, name)) == 2, what='both events')
    assert len([e for e in calls if getattr(e, 'name', None) == name]) == 2


def test_a_stopped_driver_gets_no_more_events(make_driver, wait_for):
    first = make_driver()
    first.cleanup()
    second = make_driver()
    name, xml = new_xml('after')
    second.host.get_connection().create_domain(xml).destroy()
    wait_for(lambda: len(of(second, name)) == 2, what='events')
    assert first.host.handler.queue_depth() == 0
    assert of(first, name) == []


def test_list_instances_sees_the_test_driver_domain(make_driver):
    driver = make_driver()
    infos = {i.name: i for i in driver.list_instances()}
    assert infos['test'].power_state == power_state.RUNNING
    assert driver.get_instance_info(infos['test'].uuid).name == 'test'


def test_guest_agent_is_a_missing_capability_not_a_crash(make_driver):
    driver = make_driver()
    uuid = driver.list_instances()[0].uuid
    with pytest.raises(exception.NotSupported):
        driver.guest_agent_command(uuid, {'execute': 'guest-ping'}, 1)


def test_no_keepalive_on_test_driver_is_not_fatal(make_driver):
    driver = make_driver()
    assert driver.host.keepalive_supported is False


CHANNEL_XML = """<domain type='test'>
  <name>%s</name><uuid>%s</uuid><memory>65536</memory>
  <os><type>hvm</type></os>
  <devices>
    <channel type='unix'>
      <source mode='bind'%s/>
      <target type='virtio' name='org.vmha.heartbeat.0'/>
    </channel>
  </devices>
</domain>"""


@pytest.mark.parametrize('how', ['create', 'define'])
def test_the_test_driver_keeps_a_channel_path(make_driver, tmp_path, how):
    driver = make_driver()
    conn = driver.host.get_connection()
    name, uuid = 'channel-%s' % uuid_lib.uuid4().hex[:8], str(
        uuid_lib.uuid4())
    path = str(tmp_path / 'hb.sock')
    xml = CHANNEL_XML % (name, uuid, " path='%s'" % path)
    if how == 'create':
        conn.create_domain(xml)
    else:
        conn.define_domain(xml).start()
    assert driver.channel_path(uuid, 'org.vmha.heartbeat.0') == path
    assert driver.channel_path(uuid, 'org.qemu.guest_agent.0') is None


def test_the_test_driver_chooses_no_path_for_a_channel(make_driver):
    """Unlike QEMU's driver, test:///default drops a path-less source."""
    driver = make_driver()
    conn = driver.host.get_connection()
    name, uuid = 'channel-%s' % uuid_lib.uuid4().hex[:8], str(
        uuid_lib.uuid4())
    conn.create_domain(CHANNEL_XML % (name, uuid, ''))
    assert driver.channel_path(uuid, 'org.vmha.heartbeat.0') is None
