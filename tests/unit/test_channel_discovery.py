"""Finding a guest channel's host-side socket in a domain's live XML:
what the heartbeat monitor connects to.  Samples as libvirt writes them
(a path given, a path libvirt chose, none yet), and XML the monitor must
survive."""

import logging

import pytest

from tests.fixtures import virt
from vmha.virt import exception
from vmha.virt.libvirt import guest

HEARTBEAT = 'org.vmha.heartbeat.0'

# A running domain's live XML: libvirt filled in the path it chose.
LIVE = """<domain type='kvm' id='3'>
  <name>instance-00000003</name>
  <devices>
    <channel type='unix'>
      <source mode='bind'
        path='/var/lib/libvirt/qemu/channel/target/domain-3-instance-00000003/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <channel type='unix'>
      <source mode='bind'
        path='/var/lib/libvirt/qemu/channel/target/domain-3-instance-00000003/org.vmha.heartbeat.0'/>
      <target type='virtio' name='org.vmha.heartbeat.0' state='disconnected'/>
      <alias name='channel1'/>
      <address type='virtio-serial' controller='0' bus='0' port='2'/>
    </channel>
  </devices>
</domain>"""

GIVEN = """<domain type='qemu'><name>a</name><devices>
  <channel type='unix'>
    <source mode='bind' path='/run/vmha/a.hb'/>
    <target type='virtio' name='org.vmha.heartbeat.0'/>
  </channel></devices></domain>"""

# An inactive definition: the operator left the path to libvirt.
NO_PATH = """<domain type='qemu'><name>a</name><devices>
  <channel type='unix'>
    <source mode='bind'/>
    <target type='virtio' name='org.vmha.heartbeat.0'/>
  </channel></devices></domain>"""


@pytest.mark.parametrize('xml, expected', [
    (LIVE, '/var/lib/libvirt/qemu/channel/target/domain-3-instance-00000003/'
           'org.vmha.heartbeat.0'),
    (GIVEN, '/run/vmha/a.hb'),
    (NO_PATH, None),
    (GIVEN.replace('org.vmha.heartbeat.0', 'org.vmha.heartbeat.1'), None),
    (GIVEN.replace("type='virtio'", "type='guestfwd'"), None),
    (GIVEN.replace("mode='bind'", "mode='connect'"), None),
    (GIVEN.replace("mode='bind' ", ''), None),  # libvirt: connect
    (GIVEN.replace("/run/vmha/a.hb", 'relative.sock'), None),
    ("""<domain><devices><channel type='pty'><source path='/dev/pts/3'/>
        <target type='virtio' name='org.vmha.heartbeat.0'/></channel>
        </devices></domain>""", None),
    ("<domain><devices><serial type='pty'/></devices></domain>", None),
    ("<domain/>", None),
])
def test_the_channel_path_comes_from_a_bind_unix_channel(xml, expected):
    assert guest.channel_path(xml, HEARTBEAT) == expected


def test_each_of_two_channels_is_found_by_its_name():
    agent = guest.channel_path(LIVE, guest.AGENT_CHANNEL)
    heartbeat = guest.channel_path(LIVE, HEARTBEAT)
    assert agent.endswith('/org.qemu.guest_agent.0')
    assert heartbeat.endswith('/org.vmha.heartbeat.0')
    # The shared lookup still tells the agent monitor its channel is there.
    assert guest.describe_xml(LIVE).agent_channel is True


def test_a_channel_without_a_path_before_one_with_it():
    xml = NO_PATH.replace('</devices>', """<channel type='unix'>
        <source mode='bind' path='/run/second'/>
        <target type='virtio' name='org.vmha.heartbeat.0'/></channel>
        </devices>""")
    assert guest.channel_path(xml, HEARTBEAT) == '/run/second'


def test_a_channel_that_cannot_be_served_is_logged_with_the_domain(caplog):
    caplog.set_level(logging.INFO, logger='vmha.virt.libvirt.guest')
    xml = GIVEN.replace("mode='bind'", "mode='connect'")
    assert guest.channel_path(xml, HEARTBEAT, domain='uuid-1') is None
    assert 'uuid-1' in caplog.text and HEARTBEAT in caplog.text


@pytest.mark.parametrize('xml', [
    '<domain><devices>',
    '<network><name>x</name></network>',
    '',
])
def test_malformed_xml_is_a_value_error(xml):
    with pytest.raises(ValueError):
        guest.channel_path(xml, HEARTBEAT)


# --- through the driver, on the fake libvirt ---------------------------------

@pytest.fixture
def driver():
    driver = virt.make_driver()
    driver.init_host()
    return driver


def test_the_driver_finds_the_channel_of_a_fake_domain(driver):
    dom = driver.fake.add_domain('vm')
    dom.has_agent_channel = True
    dom.add_channel(HEARTBEAT, '/run/vm.hb')
    assert driver.channel_path(dom.UUIDString(), HEARTBEAT) == '/run/vm.hb'
    assert driver.channel_path(dom.UUIDString(), 'org.other.0') is None
    assert driver.describe_guest(dom.UUIDString(), None).agent_channel


def test_the_driver_gives_none_for_a_channel_without_path(driver):
    dom = driver.fake.add_domain('vm')
    dom.add_channel(HEARTBEAT)
    assert driver.channel_path(dom.UUIDString(), HEARTBEAT) is None


def test_malformed_xml_is_logged_with_the_domain_and_gives_none(driver,
                                                               caplog):
    dom = driver.fake.add_domain('vm')
    dom.xml_override = '<domain><devices><channel'
    assert driver.channel_path(dom.UUIDString(), HEARTBEAT) is None
    assert dom.UUIDString() in caplog.text
    assert 'does not parse' in caplog.text


def test_a_vanished_domain_is_domain_not_found(driver):
    with pytest.raises(exception.DomainNotFound):
        driver.channel_path('00000000-0000-0000-0000-000000000000',
                            HEARTBEAT)
