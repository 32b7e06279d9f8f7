"""A domain's migratable XML rewritten for its destination host: pure.

A live migration can carry a destination XML
(``VIR_MIGRATE_PARAM_DEST_XML``): the same guest, with what is host-local
changed to what the destination has.  ``update_for_destination(xml,
dest)`` takes the source's migratable XML and a ``Destination`` (what the
destination says it needs) and returns a ``Rewrite``: the new XML and
three lists of plain sentences, for the log and the notification:

* ``changed``: what was rewritten, old and new value;
* ``not_found``: what the destination asked for and the XML does not
  have (a volume serial, a MAC, a pinned vCPU, a graphics type);
* ``untouched``: what the XML has and the destination did not mention,
  left as it was (a disk without serial, an interface whose MAC it does
  not know, a vCPU it did not re-pin).

The driver decides whether a non-empty ``not_found`` or ``untouched``
aborts the migration; this module never guesses.

What the guest can see is never changed: a disk's ``<target>`` and
``<address>``, an interface's ``<mac>``, ``<model>``, PCI ``<address>``
and ``<mtu>`` (a guest whose NIC moved on the PCI bus or whose MTU
changed under it loses its network, or its mind).

No I/O, no libvirt: strings and lxml.  Only the parts of the domain the
destination names are touched; the ``Destination`` fields left at their
defaults ask for nothing.
"""

import collections
import dataclasses
import re
import typing

from lxml import etree

# The XML comes from libvirt, but a domain's XML carries what whoever
# defined it wrote (its metadata among others): no entities, no network,
# no huge trees.  Comments are kept: the rewrite changes only what it
# must.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True,
                          huge_tree=False)

GRAPHICS_TYPES = ('vnc', 'spice')

#: ``Interface.virtualport`` default: leave the element as it is.
KEEP = 'keep'

_CPUSET = re.compile(r'^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$')


class MigrationXMLError(ValueError):
    """The XML or the destination's request cannot be used; the message
    says what was wrong."""


@dataclasses.dataclass(frozen=True)
class Volume:
    """A volume as the destination attaches it.

    ``disk_type``: the ``<disk type=>`` (``file``, ``block``,
    ``network``); ``source``: the attributes of ``<source>`` (``file``,
    ``dev``, or ``protocol`` and ``name``); ``hosts``: for a network
    disk, the ``(name, port)`` of its ``<host>`` elements (None: keep
    them); ``driver_type``: the image format (``raw``, ``qcow2``), None
    to keep it.
    """

    disk_type: str
    source: typing.Mapping[str, str]
    driver_type: str | None = None
    hosts: typing.Sequence[tuple[str, str]] | None = None

    @classmethod
    def file(cls, path, driver_type=None):
        return cls('file', {'file': path}, driver_type)

    @classmethod
    def block(cls, dev, driver_type=None):
        return cls('block', {'dev': dev}, driver_type)


@dataclasses.dataclass(frozen=True)
class Interface:
    """An interface as the destination plugs it (the guest keeps its MAC,
    model, PCI address and MTU).

    ``type``: the ``<interface type=>`` (``bridge``, ``ethernet``,
    ``vhostuser``...), None to keep it; ``source``: the attributes of
    ``<source>``, None to keep it; ``target_dev``: the host's tap name,
    None to keep it; ``virtualport``: ``KEEP``, None to remove it, or a
    mapping whose ``type`` key is the ``<virtualport type=>`` and whose
    other keys are attributes of its ``<parameters>``.
    """

    type: str | None = None
    source: typing.Mapping[str, str] | None = None
    target_dev: str | None = None
    virtualport: typing.Any = KEEP


HugePage = collections.namedtuple('HugePage', ['size', 'unit', 'nodeset'],
                                  defaults=('KiB', None))


@dataclasses.dataclass(frozen=True)
class MemoryBacking:
    """How the destination backs the guest's memory (not guest-visible).

    ``hugepages``: None to keep ``<hugepages>``, an empty sequence to
    remove it, else its ``HugePage`` entries; ``source_type``:
    ``<source type=>`` (``anonymous``, ``file``, ``memfd``);
    ``access_mode``: ``<access mode=>`` (``shared``, ``private``).
    """

    hugepages: typing.Sequence[HugePage] | None = None
    source_type: str | None = None
    access_mode: str | None = None


@dataclasses.dataclass(frozen=True)
class NumaPinning:
    """The destination's pinning.  CPU sets are libvirt strings
    (``0-3,8``) or collections of ints.

    ``vcpupin``: guest vCPU -> host CPUs; ``emulatorpin``: host CPUs of
    the emulator threads; ``memory_nodeset``: ``<numatune><memory
    nodeset=>``; ``memnodes``: guest cell -> host NUMA nodes.
    """

    vcpupin: typing.Mapping[int, typing.Any] = dataclasses.field(
        default_factory=dict)
    emulatorpin: typing.Any = None
    memory_nodeset: typing.Any = None
    memnodes: typing.Mapping[int, typing.Any] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Destination:
    """What the destination host needs changed.  Empty fields ask for
    nothing.

    ``graphics_listen``: graphics type (``vnc``, ``spice``) -> listen
    address; ``serial_listen``: the address TCP serial ports and consoles
    bind to; ``serial_ports``: the TCP port for each serial port, by its
    target port number; ``volumes``: by disk ``<serial>``;
    ``perf_events``: event name -> enabled; ``interfaces``: by MAC (any
    case).
    """

    graphics_listen: typing.Mapping[str, str] = dataclasses.field(
        default_factory=dict)
    serial_listen: str | None = None
    serial_ports: typing.Sequence[int] = ()
    volumes: typing.Mapping[str, Volume] = dataclasses.field(
        default_factory=dict)
    perf_events: typing.Mapping[str, bool] = dataclasses.field(
        default_factory=dict)
    memory_backing: MemoryBacking | None = None
    interfaces: typing.Mapping[str, Interface] = dataclasses.field(
        default_factory=dict)
    numa: NumaPinning | None = None


Rewrite = collections.namedtuple(
    'Rewrite', ['xml', 'changed', 'not_found', 'untouched'])
Rewrite.__doc__ = """The destination XML (a string) and what happened:
``changed``, ``not_found`` (asked for, absent), ``untouched`` (present,
not asked for): lists of sentences."""


class _Report:
    def __init__(self):
        self.changed, self.not_found, self.untouched = [], [], []

    def set(self, element, attribute, value, what):
        old = element.get(attribute)
        if old != value:
            element.set(attribute, value)
            self.changed.append('%s: %s %s -> %s' % (
                what, attribute, 'unset' if old is None else old, value))


def update_for_destination(xml, dest):
    """The domain XML ``xml`` (str or bytes) rewritten for ``dest`` (a
    ``Destination``): a ``Rewrite``.  Raises ``MigrationXMLError`` for XML
    that does not parse, is not a domain, or a request that is not
    valid."""
    root = _parse(xml)
    _check(dest, _name(root))
    report = _Report()
    devices = root.find('devices')
    if devices is None:
        devices = etree.Element('devices')  # detached: finds nothing
    if dest.graphics_listen:
        _graphics(devices, dest.graphics_listen, report)
    if dest.serial_listen is not None or dest.serial_ports:
        _serial(devices, dest, report)
    if dest.volumes:
        _volumes(devices, dest.volumes, report)
    if dest.perf_events:
        _perf(root, dest.perf_events, report)
    if dest.memory_backing is not None:
        _memory_backing(root, dest.memory_backing, report)
    if dest.interfaces:
        _interfaces(devices, dest.interfaces, report)
    if dest.numa is not None:
        _numa(root, dest.numa, report)
    return Rewrite(etree.tostring(root, encoding='unicode'),
                   report.changed, report.not_found, report.untouched)


def _parse(xml):
    if isinstance(xml, str):
        xml = xml.encode()
    if not isinstance(xml, bytes):
        raise MigrationXMLError('the domain XML must be a string, not %s'
                                % type(xml).__name__)
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as error:
        raise MigrationXMLError('the domain XML is not well-formed: %s'
                                % error)
    if root is None or root.tag != 'domain':
        raise MigrationXMLError(
            'not a domain XML: the root element is <%s>, not <domain>'
            % (None if root is None else root.tag))
    return root


def _name(root):
    return root.findtext('name') or root.findtext('uuid') or '(unnamed)'


def format_cpuset(value, what='a CPU set'):
    """A libvirt CPU or node set from a string or a collection of ints:
    ``{0, 1, 2, 3, 8}`` -> ``'0-3,8'``."""
    if isinstance(value, str):
        if not _CPUSET.match(value):
            raise MigrationXMLError('%s %r is not a CPU set like "0-3,8"'
                                    % (what, value))
        return value
    try:
        numbers = sorted({int(n) for n in value})
    except (TypeError, ValueError):
        raise MigrationXMLError('%s %r is not a CPU set' % (what, value))
    if not numbers or numbers[0] < 0:
        raise MigrationXMLError('%s %r is empty or negative' % (what, value))
    ranges = []
    first = previous = numbers[0]
    for number in numbers[1:] + [None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        ranges.append(str(first) if first == previous
                      else '%d-%d' % (first, previous))
        first = previous = number
    return ','.join(ranges)


def _check(dest, name):
    """Refuse a request that could only make a broken XML, before touching
    anything."""
    if not isinstance(dest, Destination):
        raise MigrationXMLError('domain %s: the destination must be a '
                                'Destination, not %s'
                                % (name, type(dest).__name__))
    for kind in dest.graphics_listen:
        if kind not in GRAPHICS_TYPES:
            raise MigrationXMLError(
                'domain %s: graphics type %r has no listen address to '
                'change (only %s)' % (name, kind, ', '.join(GRAPHICS_TYPES)))
    for port in dest.serial_ports:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MigrationXMLError('domain %s: serial port %r is not a '
                                    'TCP port' % (name, port))
    for serial, volume in dest.volumes.items():
        if not isinstance(volume, Volume) or not volume.source:
            raise MigrationXMLError('domain %s: volume %s has no source'
                                    % (name, serial))
    for mac in dest.interfaces:
        if not re.match(r'^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$', mac):
            raise MigrationXMLError('domain %s: %r is not a MAC address'
                                    % (name, mac))
    if dest.numa is not None:
        numa = dest.numa
        for vcpu, cpus in numa.vcpupin.items():
            format_cpuset(cpus, 'domain %s: vCPU %s pinning' % (name, vcpu))
        for cell, nodes in numa.memnodes.items():
            format_cpuset(nodes, 'domain %s: memnode %s nodeset'
                          % (name, cell))
        if numa.emulatorpin is not None:
            format_cpuset(numa.emulatorpin,
                          'domain %s: emulator pinning' % name)
        if numa.memory_nodeset is not None:
            format_cpuset(numa.memory_nodeset,
                          'domain %s: memory nodeset' % name)


def _graphics(devices, listen, report):
    seen = set()
    for graphics in devices.findall('graphics'):
        kind = graphics.get('type')
        what = 'graphics %s' % kind
        if kind not in listen:
            report.untouched.append('%s: no listen address from the '
                                    'destination' % what)
            continue
        seen.add(kind)
        address = listen[kind]
        changed = False
        if graphics.get('listen') is not None:
            report.set(graphics, 'listen', address, what)
            changed = True
        for child in graphics.findall('listen'):
            if child.get('type') == 'address':
                report.set(child, 'address', address,
                           what + ' <listen type=address>')
                changed = True
            else:
                report.untouched.append(
                    '%s: <listen type=%s> is not an address'
                    % (what, child.get('type')))
        if not changed and not graphics.findall('listen'):
            report.untouched.append('%s: listens on no address' % what)
    for kind in sorted(set(listen) - seen):
        report.not_found.append('graphics %s: the domain has none' % kind)


def _serial(devices, dest, report):
    for tag in ('serial', 'console'):
        for device in devices.findall(tag):
            if device.get('type') != 'tcp':
                continue
            target = device.find('target')
            port = target.get('port') if target is not None else None
            what = '%s %s' % (tag, port if port is not None else '?')
            for source in device.findall('source'):
                if source.get('mode') != 'bind':
                    report.untouched.append(
                        '%s: source mode %s (connects out)'
                        % (what, source.get('mode')))
                    continue
                if dest.serial_listen is not None and \
                        source.get('host') is not None:
                    report.set(source, 'host', dest.serial_listen, what)
                if not dest.serial_ports or source.get('service') is None:
                    continue
                try:
                    service = dest.serial_ports[int(port)]
                except (TypeError, ValueError, IndexError):
                    report.not_found.append(
                        '%s: no destination TCP port for target port %s'
                        % (what, port))
                    continue
                report.set(source, 'service', str(service), what)


def _disk_name(disk):
    target = disk.find('target')
    return target.get('dev') if target is not None else '?'


def _volumes(devices, volumes, report):
    seen = set()
    for disk in devices.findall('disk'):
        serial = disk.findtext('serial')
        what = 'disk %s' % _disk_name(disk)
        if serial is None:
            report.untouched.append('%s: no serial' % what)
            continue
        serial = serial.strip()
        what = '%s (serial %s)' % (what, serial)
        if serial not in volumes:
            report.untouched.append('%s: not among the destination\'s '
                                    'volumes' % what)
            continue
        seen.add(serial)
        _volume(disk, volumes[serial], what, report)
    for serial in sorted(set(volumes) - seen):
        report.not_found.append('volume serial %s: no disk has it' % serial)


def _volume(disk, volume, what, report):
    report.set(disk, 'type', volume.disk_type, what)
    source = disk.find('source')
    if source is None:
        source = etree.Element('source')
        driver = disk.find('driver')
        # libvirt writes <driver> then <source>; keep that order.
        if driver is not None:
            driver.addnext(source)
        else:
            disk.insert(0, source)
    old = dict(source.attrib)
    if old != dict(volume.source):
        for name in list(source.attrib):
            del source.attrib[name]
        for name, value in volume.source.items():
            source.set(name, value)
        report.changed.append('%s: source %s -> %s' % (
            what, _attributes(old), _attributes(volume.source)))
    if volume.hosts is not None:
        for host in source.findall('host'):
            source.remove(host)
        for name, port in volume.hosts:
            etree.SubElement(source, 'host', name=name, port=str(port))
        report.changed.append('%s: source hosts -> %s' % (
            what, ', '.join('%s:%s' % host for host in volume.hosts)))
    if volume.driver_type is not None:
        driver = disk.find('driver')
        if driver is None:
            driver = etree.Element('driver', name='qemu')
            disk.insert(0, driver)
        report.set(driver, 'type', volume.driver_type, what + ' driver')


def _attributes(mapping):
    return ' '.join('%s=%s' % item for item in sorted(mapping.items())) \
        or '(none)'


def _perf(root, events, report):
    perf = root.find('perf')
    if perf is None:
        perf = etree.SubElement(root, 'perf')
    present = {event.get('name'): event for event in perf.findall('event')}
    for name, enabled in events.items():
        value = 'yes' if enabled else 'no'
        if name in present:
            report.set(present[name], 'enabled', value, 'perf event ' + name)
        else:
            etree.SubElement(perf, 'event', name=name, enabled=value)
            report.changed.append('perf event %s: added, enabled=%s'
                                  % (name, value))
    for name in present:
        if name not in events:
            report.untouched.append('perf event %s: not mentioned by the '
                                    'destination' % name)


def _memory_backing(root, backing, report):
    element = root.find('memoryBacking')
    if element is None:
        if not backing.hugepages and backing.source_type is None and \
                backing.access_mode is None:
            return  # nothing to add, nothing to remove
        element = etree.Element('memoryBacking')
        # libvirt writes it right after <currentMemory> (or <memory>).
        anchor = root.find('currentMemory')
        if anchor is None:
            anchor = root.find('memory')
        if anchor is not None:
            anchor.addnext(element)
        else:
            root.append(element)
    if backing.hugepages is not None:
        _hugepages(element, backing.hugepages, report)
    for tag, attribute, value in (('source', 'type', backing.source_type),
                                  ('access', 'mode', backing.access_mode)):
        if value is None:
            continue
        child = element.find(tag)
        if child is None:
            child = etree.SubElement(element, tag)
        report.set(child, attribute, value, 'memoryBacking <%s>' % tag)


def _hugepages(element, pages, report):
    old = element.find('hugepages')
    before = [] if old is None else [
        (page.get('size'), page.get('unit'), page.get('nodeset'))
        for page in old.findall('page')]
    after = [(str(page.size), page.unit,
              None if page.nodeset is None
              else format_cpuset(page.nodeset, 'hugepage nodeset'))
             for page in pages]
    if not pages:
        if old is not None:
            element.remove(old)
            report.changed.append('memoryBacking: hugepages removed')
        return
    if old is not None and before == after:
        return
    if old is None:
        old = etree.Element('hugepages')
        element.insert(0, old)
    for page in old.findall('page'):
        old.remove(page)
    for size, unit, nodeset in after:
        page = etree.SubElement(old, 'page', size=size, unit=unit)
        if nodeset is not None:
            page.set('nodeset', nodeset)
    report.changed.append('memoryBacking: hugepages %s -> %s' % (
        _pages(before) or '(default size)', _pages(after)))


def _pages(pages):
    return ', '.join('%s %s%s' % (size, unit or 'KiB',
                                  '' if nodeset is None
                                  else ' on nodes ' + nodeset)
                     for size, unit, nodeset in pages)


def _interfaces(devices, interfaces, report):
    wanted = {mac.lower(): spec for mac, spec in interfaces.items()}
    seen = set()
    for index, interface in enumerate(devices.findall('interface')):
        mac = interface.find('mac')
        address = mac.get('address') if mac is not None else None
        if not address:
            report.untouched.append('interface %d: no MAC' % index)
            continue
        what = 'interface %s' % address.lower()
        spec = wanted.get(address.lower())
        if spec is None:
            report.untouched.append('%s: not among the destination\'s '
                                    'interfaces' % what)
            continue
        seen.add(address.lower())
        _interface(interface, spec, what, report)
    for mac in sorted(set(wanted) - seen):
        report.not_found.append('interface %s: no interface has this MAC'
                                % mac)


def _child(parent, tag, after=('mac',)):
    """``parent``'s ``tag`` child, created after the first of ``after``
    present (libvirt's order), else first."""
    child = parent.find(tag)
    if child is not None:
        return child
    child = etree.Element(tag)
    for name in after:
        anchor = parent.find(name)
        if anchor is not None:
            anchor.addnext(child)
            return child
    parent.insert(0, child)
    return child


def _interface(interface, spec, what, report):
    if spec.type is not None:
        report.set(interface, 'type', spec.type, what)
    if spec.source is not None:
        source = _child(interface, 'source')
        old = dict(source.attrib)
        if old != dict(spec.source):
            for name in list(source.attrib):
                del source.attrib[name]
            for name, value in spec.source.items():
                source.set(name, value)
            report.changed.append('%s: source %s -> %s' % (
                what, _attributes(old), _attributes(spec.source)))
    if spec.target_dev is not None:
        target = _child(interface, 'target', after=('source', 'mac'))
        report.set(target, 'dev', spec.target_dev, what + ' target')
    if isinstance(spec.virtualport, str) and spec.virtualport == KEEP:
        return
    old = interface.find('virtualport')
    if spec.virtualport is None:
        if old is not None:
            interface.remove(old)
            report.changed.append('%s: virtualport removed' % what)
        return
    port = dict(spec.virtualport)
    kind = port.pop('type', None)
    element = _child(interface, 'virtualport',
                     after=('target', 'source', 'mac'))
    for name in list(element.attrib):
        del element.attrib[name]
    for child in list(element):
        element.remove(child)
    if kind is not None:
        element.set('type', kind)
    if port:
        etree.SubElement(element, 'parameters',
                         {name: str(value) for name, value in port.items()})
    report.changed.append('%s: virtualport -> %s' % (
        what, _attributes(dict(spec.virtualport))))


def _numa(root, numa, report):
    cputune = root.find('cputune')
    for vcpu, cpus in sorted(numa.vcpupin.items()):
        pin = None if cputune is None else cputune.find(
            "vcpupin[@vcpu='%d']" % int(vcpu))
        if pin is None:
            report.not_found.append('vcpupin %s: the vCPU is not pinned on '
                                    'the source' % vcpu)
            continue
        report.set(pin, 'cpuset', format_cpuset(cpus), 'vcpupin %s' % vcpu)
    if cputune is not None and numa.vcpupin:
        asked = {int(vcpu) for vcpu in numa.vcpupin}
        for pin in cputune.findall('vcpupin'):
            if int(pin.get('vcpu', -1)) not in asked:
                report.untouched.append(
                    'vcpupin %s: not re-pinned by the destination (cpuset '
                    '%s)' % (pin.get('vcpu'), pin.get('cpuset')))
    if numa.emulatorpin is not None:
        pin = None if cputune is None else cputune.find('emulatorpin')
        if pin is None:
            report.not_found.append('emulatorpin: none on the source')
        else:
            report.set(pin, 'cpuset', format_cpuset(numa.emulatorpin),
                       'emulatorpin')
    numatune = root.find('numatune')
    if numa.memory_nodeset is not None:
        memory = None if numatune is None else numatune.find('memory')
        if memory is None:
            report.not_found.append('numatune memory: none on the source')
        else:
            report.set(memory, 'nodeset', format_cpuset(numa.memory_nodeset),
                       'numatune memory')
    for cell, nodes in sorted(numa.memnodes.items()):
        memnode = None if numatune is None else numatune.find(
            "memnode[@cellid='%d']" % int(cell))
        if memnode is None:
            report.not_found.append('memnode %s: none on the source' % cell)
            continue
        report.set(memnode, 'nodeset', format_cpuset(nodes),
                   'memnode %s' % cell)
