"""The destination XML of a live migration: what changes, what never does.

Test data: two nova-style domain XMLs under ``data/migration/`` (volumes
on iSCSI and Ceph, Open vSwitch and Linux-bridge ports, a TCP serial
console, VNC; and a pinned, hugepage-backed NUMA guest with a vhost-user
port, perf events, SPICE).
"""

import pathlib

from lxml import etree
import pytest

from vmha.virt.libvirt import migration_xml as mx

DATA = pathlib.Path(__file__).parent / 'data' / 'migration'
VOLUMES = (DATA / 'nova-volumes-ovs.xml').read_text()
NUMA = (DATA / 'nova-numa-hugepages.xml').read_text()

ISCSI_SERIAL = '4d1e2f3a-5b6c-7d8e-9f0a-1b2c3d4e5f6a'
RBD_SERIAL = '8e7d6c5b-4a3f-2e1d-0c9b-8a7f6e5d4c3b'
OVS_MAC = 'fa:16:3e:4b:2c:1d'  # upper case in the XML
BRIDGE_MAC = 'fa:16:3e:77:88:99'
OVS_NIC = "devices/interface[mac/@address='FA:16:3E:4B:2C:1D']"
PORT_ID = '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d'


def tree(xml):
    return etree.fromstring(xml.encode())


def one(xml, path):
    found = tree(xml).xpath(path)
    assert len(found) == 1, (path, found)
    return found[0]


def guest_visible(xml):
    """What the guest sees of its disks and NICs: must survive any
    rewrite."""
    root = tree(xml)
    disks = [(d.find('target').get('dev'), d.find('target').get('bus'),
              dict(d.find('address').attrib), d.findtext('serial'))
             for d in root.findall('devices/disk')]
    nics = [(i.find('mac').get('address'),
             dict(i.find('model').attrib),
             dict(i.find('address').attrib),
             dict(i.find('mtu').attrib) if i.find('mtu') is not None
             else None)
            for i in root.findall('devices/interface')]
    return disks, nics, root.findtext('uuid'), root.findtext('name')


def test_a_destination_that_asks_nothing_changes_nothing():
    for xml in (VOLUMES, NUMA):
        result = mx.update_for_destination(xml, mx.Destination())
        assert etree.tostring(tree(result.xml), method='c14n') == \
            etree.tostring(tree(xml), method='c14n')
        assert result.changed == result.not_found == result.untouched == []


def test_vnc_listen_address_in_both_places():
    result = mx.update_for_destination(
        VOLUMES, mx.Destination(graphics_listen={'vnc': '198.51.100.9'}))
    graphics = one(result.xml, "devices/graphics[@type='vnc']")
    assert graphics.get('listen') == '198.51.100.9'
    assert graphics.find('listen').get('address') == '198.51.100.9'
    assert graphics.get('autoport') == 'yes'
    assert len(result.changed) == 2
    assert all('198.51.100.7 -> 198.51.100.9' in line
               for line in result.changed)
    assert result.not_found == []


def test_spice_changed_a_network_listen_left_and_said():
    result = mx.update_for_destination(NUMA, mx.Destination(
        graphics_listen={'spice': '198.51.100.9', 'vnc': '198.51.100.9'}))
    spice = one(result.xml, "devices/graphics[@type='spice']")
    assert spice.get('listen') == '198.51.100.9'
    assert spice.find('listen').get('address') == '198.51.100.9'
    vnc = one(result.xml, "devices/graphics[@type='vnc']/listen")
    assert dict(vnc.attrib) == {'type': 'network', 'network': 'mgmt'}
    assert any('vnc' in line and 'network' in line
               for line in result.untouched)


def test_a_graphics_type_the_domain_lacks_is_reported():
    result = mx.update_for_destination(
        VOLUMES, mx.Destination(graphics_listen={'spice': '10.0.0.1'}))
    assert result.not_found == ['graphics spice: the domain has none']
    assert one(result.xml, 'devices/graphics').get('listen') == \
        '198.51.100.7'
    assert any('graphics vnc' in line for line in result.untouched)


def test_serial_port_and_console_follow_the_destination_ports():
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        serial_listen='198.51.100.9', serial_ports=[10004]))
    for tag in ('serial', 'console'):
        source = one(result.xml, 'devices/%s/source' % tag)
        assert source.get('host') == '198.51.100.9'
        assert source.get('service') == '10004'
        assert source.get('mode') == 'bind'
    assert result.not_found == []
    assert len(result.changed) == 4


def test_a_serial_port_without_a_destination_port_is_reported():
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        serial_listen='198.51.100.9', serial_ports=[]))
    # Only the address asked for: the port is left alone, nothing missing.
    assert one(result.xml, 'devices/serial/source').get('service') == '10000'
    assert result.not_found == []
    xml = VOLUMES.replace("<target type='isa-serial' port='0'>",
                          "<target type='isa-serial' port='1'>")
    result = mx.update_for_destination(xml, mx.Destination(
        serial_ports=[10004]))
    assert result.not_found == [
        'serial 1: no destination TCP port for target port 1']
    assert one(result.xml, 'devices/serial/source').get('service') == '10000'
    # The console (target port 0) still gets its port.
    assert one(result.xml, 'devices/console/source').get('service') == \
        '10004'


def test_pty_serial_ports_are_not_touched():
    result = mx.update_for_destination(NUMA, mx.Destination(
        serial_listen='198.51.100.9', serial_ports=[10004]))
    assert result.changed == []
    assert etree.tostring(tree(result.xml), method='c14n') == \
        etree.tostring(tree(NUMA), method='c14n')


def test_volumes_by_serial_get_the_destination_path_and_format():
    result = mx.update_for_destination(VOLUMES, mx.Destination(volumes={
        ISCSI_SERIAL: mx.Volume.block('/dev/mapper/3600a0980383' + '1',
                                      'raw'),
        RBD_SERIAL: mx.Volume.file('/var/lib/nova/mnt/abc/volume-8e7d',
                                   'qcow2'),
    }))
    iscsi = one(result.xml, "devices/disk[serial='%s']" % ISCSI_SERIAL)
    assert iscsi.get('type') == 'block'
    assert dict(iscsi.find('source').attrib) == {
        'dev': '/dev/mapper/36' + '00a09803831'}
    assert iscsi.find('driver').get('type') == 'raw'
    assert iscsi.find('driver').get('io') == 'native'
    rbd = one(result.xml, "devices/disk[serial='%s']" % RBD_SERIAL)
    assert rbd.get('type') == 'file'
    assert dict(rbd.find('source').attrib) == {
        'file': '/var/lib/nova/mnt/abc/volume-8e7d'}
    assert rbd.find('driver').get('type') == 'qcow2'
    # The root disk has no serial: left, and said.
    root = one(result.xml, "devices/disk[target/@dev='vda']")
    assert root.find('source').get('file').endswith('/disk')
    assert result.untouched == ['disk vda: no serial']
    assert result.not_found == []
    assert guest_visible(result.xml) == guest_visible(VOLUMES)


def test_a_network_volume_gets_its_new_monitors():
    result = mx.update_for_destination(VOLUMES, mx.Destination(volumes={
        RBD_SERIAL: mx.Volume('network', {'protocol': 'rbd',
                                          'name': 'volumes-b/volume-8e7d'},
                              hosts=[('203.0.113.5', '3300')]),
    }))
    source = one(result.xml, "devices/disk[serial='%s']/source"
                 % RBD_SERIAL)
    assert source.get('name') == 'volumes-b/volume-8e7d'
    assert [(h.get('name'), h.get('port')) for h in source] == [
        ('203.0.113.5', '3300')]
    # The Ceph credentials are the volume's, not the host's: kept.
    assert one(result.xml, "devices/disk[serial='%s']/auth/secret"
               % RBD_SERIAL).get('type') == 'ceph'


def test_a_volume_no_disk_has_is_reported_and_the_rest_still_done():
    result = mx.update_for_destination(VOLUMES, mx.Destination(volumes={
        'no-such-volume': mx.Volume.block('/dev/sdz'),
        ISCSI_SERIAL: mx.Volume.block('/dev/sdy'),
    }))
    assert result.not_found == ['volume serial no-such-volume: no disk has it']
    assert one(result.xml, "devices/disk[serial='%s']/source"
               % ISCSI_SERIAL).get('dev') == '/dev/sdy'
    assert any(RBD_SERIAL in line for line in result.untouched)
    assert '/dev/sdz' not in result.xml


def test_perf_events_set_added_and_the_rest_left():
    result = mx.update_for_destination(NUMA, mx.Destination(
        perf_events={'cmt': False, 'mbmt': True, 'cpu_cycles': True}))
    events = {e.get('name'): e.get('enabled')
              for e in tree(result.xml).findall('perf/event')}
    assert events == {'cmt': 'no', 'mbmt': 'yes', 'mbml': 'yes',
                      'cpu_cycles': 'yes'}
    assert result.changed == ['perf event cmt: enabled yes -> no',
                              'perf event cpu_cycles: added, enabled=yes']
    assert result.untouched == [
        'perf event mbml: not mentioned by the destination']


def test_memory_backing_follows_the_destination():
    result = mx.update_for_destination(NUMA, mx.Destination(
        memory_backing=mx.MemoryBacking(
            hugepages=[mx.HugePage(1048576, 'KiB', {0, 1})],
            source_type='memfd')))
    pages = tree(result.xml).findall('memoryBacking/hugepages/page')
    assert [dict(p.attrib) for p in pages] == [
        {'size': '1048576', 'unit': 'KiB', 'nodeset': '0-1'}]
    assert one(result.xml, 'memoryBacking/source').get('type') == 'memfd'
    assert one(result.xml, 'memoryBacking/access').get('mode') == 'shared'
    assert len(result.changed) == 2


def test_hugepages_removed_when_the_destination_has_none():
    result = mx.update_for_destination(NUMA, mx.Destination(
        memory_backing=mx.MemoryBacking(hugepages=())))
    assert tree(result.xml).find('memoryBacking/hugepages') is None
    assert result.changed == ['memoryBacking: hugepages removed']
    # A guest without any memory backing gets none for nothing.
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        memory_backing=mx.MemoryBacking(hugepages=())))
    assert tree(result.xml).find('memoryBacking') is None
    assert result.changed == []


def test_memory_backing_created_in_libvirts_place():
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        memory_backing=mx.MemoryBacking(
            hugepages=[mx.HugePage(2048)])))
    root = tree(result.xml)
    backing = root.find('memoryBacking')
    assert backing.getprevious().tag == 'currentMemory'
    assert dict(backing.find('hugepages/page').attrib) == {
        'size': '2048', 'unit': 'KiB'}


def test_an_ovs_port_plugged_into_a_linux_bridge_keeps_what_the_guest_sees():
    result = mx.update_for_destination(VOLUMES, mx.Destination(interfaces={
        OVS_MAC: mx.Interface(type='bridge',
                              source={'bridge': 'qbrb5c6d7e8-f9'},
                              target_dev='tapb5c6d7e8-f9',
                              virtualport=None),
    }))
    nic = one(result.xml, OVS_NIC)
    assert nic.find('source').get('bridge') == 'qbrb5c6d7e8-f9'
    assert nic.find('virtualport') is None
    assert nic.find('driver').get('rx_queue_size') == '512'
    assert guest_visible(result.xml) == guest_visible(VOLUMES)
    assert nic.find('address').get('bus') == '0x01'
    assert nic.find('mtu').get('size') == '1442'
    assert result.untouched == [
        "interface %s: not among the destination's interfaces" % BRIDGE_MAC]
    assert result.not_found == []


def test_a_new_virtualport_replaces_the_old_one():
    result = mx.update_for_destination(VOLUMES, mx.Destination(interfaces={
        BRIDGE_MAC.upper(): mx.Interface(
            source={'bridge': 'br-int'},
            virtualport={'type': 'openvswitch', 'interfaceid': PORT_ID}),
    }))
    nic = one(result.xml,
              "devices/interface[mac/@address='%s']" % BRIDGE_MAC)
    port = nic.find('virtualport')
    assert port.get('type') == 'openvswitch'
    assert port.find('parameters').get('interfaceid') == PORT_ID
    assert port.getprevious().tag == 'target'
    assert guest_visible(result.xml) == guest_visible(VOLUMES)


def test_a_vhostuser_socket_moves_and_the_jumbo_mtu_stays():
    result = mx.update_for_destination(NUMA, mx.Destination(interfaces={
        'fa:16:3e:10:20:30': mx.Interface(
            source={'type': 'unix', 'mode': 'server',
                    'path': '/run/openvswitch/vhu5d6e7f80-91'}),
    }))
    nic = one(result.xml, 'devices/interface')
    assert nic.get('type') == 'vhostuser'
    assert nic.find('source').get('path') == \
        '/run/openvswitch/vhu5d6e7f80-91'
    assert nic.find('mtu').get('size') == '9000'
    assert guest_visible(result.xml) == guest_visible(NUMA)
    assert len(result.changed) == 1


def test_a_mac_the_domain_lacks_is_reported_not_invented():
    result = mx.update_for_destination(VOLUMES, mx.Destination(interfaces={
        'fa:16:3e:00:00:01': mx.Interface(source={'bridge': 'br-x'}),
    }))
    assert result.not_found == [
        'interface fa:16:3e:00:00:01: no interface has this MAC']
    assert len(tree(result.xml).findall('devices/interface')) == 2
    assert 'br-x' not in result.xml
    assert len(result.untouched) == 2


def test_numa_pinning_follows_the_destination():
    result = mx.update_for_destination(NUMA, mx.Destination(
        numa=mx.NumaPinning(
            vcpupin={0: {4}, 1: '5', 2: [12], 3: [13]},
            emulatorpin={4, 5, 12, 13},
            memory_nodeset={0, 1},
            memnodes={0: [0], 1: '1'})))
    root = tree(result.xml)
    pins = {p.get('vcpu'): p.get('cpuset')
            for p in root.findall('cputune/vcpupin')}
    assert pins == {'0': '4', '1': '5', '2': '12', '3': '13'}
    assert root.find('cputune/emulatorpin').get('cpuset') == '4-5,12-13'
    assert root.find('numatune/memory').get('nodeset') == '0-1'
    assert root.find('numatune/memory').get('mode') == 'strict'
    # The guest's own topology is not the host's business: unchanged.
    assert [c.get('cpus') for c in root.findall('cpu/numa/cell')] == \
        ['0-1', '2-3']
    assert root.find('cputune/shares').text == '4096'
    assert result.not_found == [] and result.untouched == []
    # memory nodeset and memnodes unchanged in value: not "changed".
    assert 'vcpupin 0: cpuset 2 -> 4' in result.changed
    assert 'emulatorpin: cpuset 2-3,10-11 -> 4-5,12-13' in result.changed
    assert len(result.changed) == 5


def test_pinning_asked_for_what_the_source_does_not_pin_is_reported():
    result = mx.update_for_destination(NUMA, mx.Destination(
        numa=mx.NumaPinning(vcpupin={0: [4], 7: [8]}, memnodes={2: [1]})))
    assert result.not_found == [
        'vcpupin 7: the vCPU is not pinned on the source',
        'memnode 2: none on the source']
    # vCPUs the destination did not re-pin would run on the source's
    # host CPUs: said, not silently kept.
    assert sorted(result.untouched) == [
        'vcpupin 1: not re-pinned by the destination (cpuset 3)',
        'vcpupin 2: not re-pinned by the destination (cpuset 10)',
        'vcpupin 3: not re-pinned by the destination (cpuset 11)']
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        numa=mx.NumaPinning(emulatorpin='0-1', memory_nodeset='0')))
    assert result.not_found == ['emulatorpin: none on the source',
                                'numatune memory: none on the source']


def test_everything_at_once_keeps_the_guest_and_the_metadata():
    result = mx.update_for_destination(VOLUMES, mx.Destination(
        graphics_listen={'vnc': '198.51.100.9'},
        serial_listen='198.51.100.9', serial_ports=[10001],
        volumes={ISCSI_SERIAL: mx.Volume.block('/dev/sdq')},
        perf_events={'cmt': True},
        interfaces={OVS_MAC: mx.Interface(target_dev='tapnew')}))
    assert guest_visible(result.xml) == guest_visible(VOLUMES)
    ns = {'nova': 'http://openstack.org/xmlns/libvirt/nova/1.1'}
    before = tree(VOLUMES).find('metadata/nova:instance', ns)
    after = tree(result.xml).find('metadata/nova:instance', ns)
    assert etree.tostring(after, method='c14n') == \
        etree.tostring(before, method='c14n')
    assert result.not_found == []


@pytest.mark.parametrize('xml, words', [
    ('<domain><name>x</name>', 'not well-formed'),
    ('', 'not well-formed'),
    ("<network><name>default</name></network>", '<network>, not <domain>'),
])
def test_xml_that_is_not_a_domain_is_a_clear_error(xml, words):
    with pytest.raises(mx.MigrationXMLError) as raised:
        mx.update_for_destination(xml, mx.Destination())
    assert words in str(raised.value)


def test_a_syntax_error_names_the_line():
    broken = VOLUMES.replace("<target dev='vdb' bus='virtio'/>",
                             "<target dev='vdb' bus='virtio'>")
    with pytest.raises(mx.MigrationXMLError) as raised:
        mx.update_for_destination(broken, mx.Destination())
    assert 'line' in str(raised.value)


@pytest.mark.parametrize('dest, words', [
    (mx.Destination(graphics_listen={'rdp': '10.0.0.1'}), "'rdp'"),
    (mx.Destination(serial_ports=[0]), 'serial port 0'),
    (mx.Destination(serial_ports=['10000']), "serial port '10000'"),
    (mx.Destination(interfaces={'fa:16:3e': mx.Interface()}),
     "'fa:16:3e' is not a MAC"),
    (mx.Destination(volumes={'v': mx.Volume('file', {})}),
     'volume v has no source'),
    (mx.Destination(numa=mx.NumaPinning(vcpupin={0: 'all'})),
     "vCPU 0 pinning 'all'"),
    (mx.Destination(numa=mx.NumaPinning(emulatorpin=[])),
     'emulator pinning'),
])
def test_a_bad_request_is_refused_naming_the_domain(dest, words):
    with pytest.raises(mx.MigrationXMLError) as raised:
        mx.update_for_destination(NUMA, dest)
    assert 'instance-00000107' in str(raised.value)
    assert words in str(raised.value)


def test_entities_in_the_xml_are_not_expanded(tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('TOP-SECRET')
    xml = ('<!DOCTYPE domain [<!ENTITY leak SYSTEM "file://%s">]>'
           '<domain type="kvm"><name>&leak;</name><devices/></domain>'
           % secret)
    result = mx.update_for_destination(xml, mx.Destination())
    assert 'TOP-SECRET' not in result.xml


def test_bytes_in_unicode_out():
    result = mx.update_for_destination(VOLUMES.encode(), mx.Destination(
        graphics_listen={'vnc': '::1'}))
    assert isinstance(result.xml, str)
    assert one(result.xml, 'devices/graphics').get('listen') == '::1'


@pytest.mark.parametrize('cpus, text', [
    ({3, 0, 1, 2, 8}, '0-3,8'), ([5], '5'),
    ((1, 3, 4, 5, 9, 10), '1,3-5,9-10'), ('0-3,^2', '0-3,^2'),
])
def test_cpu_sets_in_libvirts_notation(cpus, text):
    assert mx.format_cpuset(cpus) == text
