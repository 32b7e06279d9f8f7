"""Guest calls in the virt layer: the agent channel in a domain's XML,
agent calls on connections of their own, counters, and the native pool
that runs them."""

import threading
import time

import pytest

from tests.conftest import BACKEND
from tests.fixtures import fakelibvirt
from tests.fixtures import virt
from vmha import concurrency
from vmha.virt import exception
from vmha.virt.libvirt import guest

CHANNEL = """<domain type='kvm'><name>a</name><devices>
  <channel type='unix'>
    <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/x.sock'/>
    <target type='virtio' name='org.qemu.guest_agent.0'/>
  </channel></devices></domain>"""


@pytest.mark.parametrize('xml, expected', [
    (CHANNEL, True),
    (CHANNEL.replace('org.qemu.guest_agent.0', 'org.vmha.control.0'), False),
    (CHANNEL.replace("type='virtio'", "type='guestfwd'"), False),
    ("<domain><devices><serial type='pty'/></devices></domain>", False),
])
def test_the_agent_channel_is_found_whatever_its_socket(xml, expected):
    assert guest.describe_xml(xml).agent_channel is expected


@pytest.mark.parametrize('xml', [
    '<domain><devices>',
    '<network><name>x</name></network>',
])
def test_a_bad_domain_xml_is_a_value_error(xml):
    with pytest.raises(ValueError):
        guest.describe_xml(xml)


def test_external_entities_in_a_domain_xml_are_not_read(tmp_path):
    devices = tmp_path / 'devices.xml'
    devices.write_text(CHANNEL.split('<devices>')[1].split('</devices>')[0])
    xml = ('<!DOCTYPE domain [<!ENTITY d SYSTEM "file://%s">]>'
           '<domain><devices>&d;</devices></domain>' % devices)
    assert guest.describe_xml(xml).agent_channel is False


def test_counters_sum_devices_and_count_what_the_guest_sent():
    counters = guest.counters_from_stats({
        'cpu.time': 7, 'net.count': 2, 'net.0.tx.pkts': 3,
        'net.0.rx.pkts': 1000, 'net.1.tx.pkts': 4, 'block.count': 1,
        'block.0.rd.reqs': 5, 'block.0.wr.reqs': 6}, disk=True)
    assert counters == guest.Counters(7, 7, 11)
    assert guest.counters_from_stats({'cpu.time': 1}, disk=False) == \
        guest.Counters(1, None, None)


def test_agent_calls_use_their_own_connections_and_reopen_them():
    driver = virt.make_driver()
    driver.init_host()
    dom = driver.fake.add_domain('vm')
    events_connection = driver.fake.connection
    assert driver.guest_agent_command(dom.UUIDString(),
                                      {'execute': 'guest-ping'}, 2) == \
        {'return': {}}
    assert len(driver.fake.connections) == 2
    agent_connection = driver.fake.connections[1]
    assert driver.fake.connection is events_connection
    agent_connection.alive = False  # libvirtd restarted
    with pytest.raises(exception.HypervisorError):
        driver.guest_agent_command(dom.UUIDString(), {}, 2)
    driver.guest_agent_command(dom.UUIDString(), {}, 2)  # reopened
    assert len(driver.fake.connections) == 3
    driver.cleanup()


def test_a_hung_agent_is_a_timeout_and_counters_come_from_stats():
    driver = virt.make_driver()
    driver.init_host()
    dom = driver.fake.add_domain('vm')
    dom.agent_error = fakelibvirt.libvirtError('not responding', 86)
    with pytest.raises(exception.AgentTimeout):
        driver.guest_agent_command(dom.UUIDString(), {}, 2)
    dom.stats.update({'cpu.time': 42, 'block.count': 1,
                      'block.0.rd.reqs': 2})
    assert driver.get_guest_counters(dom.UUIDString()).cpu_time == 42
    assert driver.get_guest_counters(dom.UUIDString(),
                                     disk=True).disk_requests == 2
    driver.cleanup()


def test_connections_share_the_calls_at_most_per_connection_each():
    opened = []

    def open_connection():
        opened.append(object())
        return _Connection()

    connections = guest.AgentConnections(open_connection, 3, 2,
                                         threading.Lock())
    barrier = threading.Barrier(6)
    seen = []

    def call(conn):
        seen.append(conn)
        barrier.wait(5)

    threads = [threading.Thread(target=connections.call, args=(call,))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(opened) == 3
    assert sorted(seen.count(c) for c in set(seen)) == [2, 2, 2]


class _Connection:
    def is_alive(self):
        return True

    def close(self):
        pass


def test_native_pool_runs_calls_at_once_and_returns_them_to_the_caller():
    backend = concurrency.get(BACKEND)
    pool = concurrency.NativePool(backend, 8)
    started = time.monotonic()
    for index in range(8):
        pool.submit(('call', index), time.sleep, 0.3 if index else 2.0)
    done = []
    while len(done) < 7 and time.monotonic() - started < 5:
        done += pool.wait(1.0)
    # Seven short calls ended together; the long one holds nobody up.
    assert sorted(job.key[1] for job in done) == list(range(1, 8))
    assert time.monotonic() - started < 1.5
    assert pool.busy == 1
    job = pool.submit(('fail', 0), int, 'x')
    while not job.done:
        pool.wait(1.0)
    assert isinstance(job.error, ValueError)
    pool.close()
