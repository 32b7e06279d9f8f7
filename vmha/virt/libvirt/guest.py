"""Guest calls: the virtio channels in a domain's XML (the guest agent's,
and the socket path of any other, such as the heartbeat's), guest-agent
commands on connections of their own, and the host-side counters of a
guest.

libvirtd serves at most ``max_client_requests`` (default 5) calls at once
per client connection, and a guest-agent call holds its slot until the
guest answers or the timeout passes.  Pings of many guests on the event
connection would queue behind each other (and behind a hung guest), so
``AgentConnections`` keeps a few connections for agent calls only and
puts at most ``per_connection`` calls in flight on each.

Counters: the CPU time comes from ``virDomainGetInfo`` (libvirt reads
it from /proc) and the interface counters from the host's tap devices:
neither asks QEMU.  The CPU group of ``virDomainListGetStats`` does (it
blocked for as long as QEMU was stopped, measured on libvirt 9.0), and
so do the disk counters (QEMU's monitor): a caller asks for disk
counters only once it saw the vCPUs move, that is while QEMU runs.
"""

import collections
import logging

from lxml import etree

from vmha.virt import exception

LOG = logging.getLogger(__name__)

AGENT_CHANNEL = 'org.qemu.guest_agent.0'

# virDomainStatsTypes and virConnectGetAllDomainStatsFlags (stable ABI).
STATS_INTERFACE = 16
STATS_BLOCK = 32
STATS_NOWAIT = 1 << 29

GuestXML = collections.namedtuple('GuestXML', ['agent_channel', 'metadata'])
GuestXML.__doc__ = """What the monitor needs from a domain's XML.

``agent_channel``: True if the domain has a virtio channel named
``org.qemu.guest_agent.0`` (its socket path does not matter); ``metadata``: the
metadata element in the namespace asked for, as XML text, or None.
"""

Counters = collections.namedtuple(
    'Counters', ['cpu_time', 'net_tx_packets', 'disk_requests'])
Counters.__doc__ = """Host-side counters of one guest, summed over devices.

``cpu_time``: nanoseconds of CPU the guest used (None if the driver has
none).  ``net_tx_packets``: packets the guest sent (libvirt reports tap
counters from the guest's side; what it receives says nothing, since a
hung guest still "receives").  ``disk_requests``: reads and writes the
guest issued; None when not read.
"""

# A domain XML comes from whoever defined the domain: no entities, no
# network, no huge trees.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True,
                          huge_tree=False, remove_comments=True)


def parse_domain_xml(xml):
    """The root element of a domain XML.  Raises ValueError if it does
    not parse or is not a domain."""
    try:
        root = etree.fromstring(xml.encode() if isinstance(xml, str)
                                else xml, _PARSER)
    except etree.XMLSyntaxError as error:
        raise ValueError('domain XML does not parse: %s' % error)
    if root.tag != 'domain':
        raise ValueError('not a domain XML (root element %r)' % root.tag)
    return root


def virtio_channels(root, name):
    """The ``<channel>`` elements of a parsed domain XML whose target is
    the virtio-serial port ``name``, in document order."""
    return root.xpath(
        "devices/channel[target[@type='virtio' and @name=$name]]", name=name)


def describe_xml(xml, namespace=None):
    """The GuestXML of a domain XML.  Raises ValueError if unparsable."""
    root = parse_domain_xml(xml)
    channel = virtio_channels(root, AGENT_CHANNEL)
    metadata = None
    if namespace:
        found = root.xpath('metadata/*[namespace-uri() = $ns]', ns=namespace)
        if found:
            metadata = etree.tostring(found[0], encoding='unicode')
    return GuestXML(bool(channel), metadata)


def channel_path(xml, name, domain=None):
    """The host-side socket path of the virtio channel ``name``, or None.

    vmha connects to that socket, so only a ``<channel type='unix'>``
    whose ``<source mode='bind'>`` (QEMU listens; libvirt's default mode
    is 'connect', where QEMU would be the client) has an absolute path
    qualifies.  A running domain's live XML carries the path libvirt
    chose when the definition gave none; an inactive one may not.  A
    channel of that name that does not qualify is logged (``domain``
    names it) and skipped.  Raises ValueError if the XML is unparsable.
    """
    for channel in virtio_channels(parse_domain_xml(xml), name):
        source = channel.find('source')
        path = source.get('path') if source is not None else None
        if channel.get('type') != 'unix' or source is None or \
                source.get('mode') != 'bind':
            LOG.info("Domain %s: channel %s is not a unix socket QEMU "
                     "listens on (type %r, mode %r); not served", domain,
                     name, channel.get('type'),
                     None if source is None else source.get('mode'))
        elif not path:
            LOG.debug('Domain %s: channel %s has no socket path yet',
                      domain, name)
        elif not path.startswith('/'):
            LOG.info('Domain %s: channel %s has a relative socket path %r; '
                     'not served', domain, name, path)
        else:
            return path
    return None


def counters_from_stats(stats, disk):
    """Counters from one domain's ``virDomainListGetStats`` dict."""
    def total(prefix, fields):
        count = stats.get('%s.count' % prefix)
        if count is None:
            return None
        return sum(stats.get('%s.%d.%s' % (prefix, index, field), 0)
                   for index in range(count) for field in fields)
    return Counters(
        cpu_time=stats.get('cpu.time'),
        net_tx_packets=total('net', ('tx.pkts',)),
        disk_requests=total('block', ('rd.reqs', 'wr.reqs')) if disk
        else None)


class AgentConnections:
    """Connections reserved for guest-agent calls.

    :param open_connection: ``callable()`` returning a new
        ``api.Connection`` (raises ConnectionFailed)
    :param count: how many connections at most
    :param per_connection: calls in flight per connection at most
        (libvirtd's ``max_client_requests``)
    :param lock: a native lock (calls come from several native threads)
    """

    def __init__(self, open_connection, count, per_connection, lock):
        self._open = open_connection
        self._per_connection = per_connection
        self._lock = lock
        self._connections = [None] * max(1, count)
        self._in_flight = [0] * len(self._connections)
        self.opened = 0

    def call(self, function):
        """``function(connection)`` on the least busy connection."""
        with self._lock:
            slot = min(range(len(self._in_flight)),
                       key=self._in_flight.__getitem__)
            self._in_flight[slot] += 1
            connection = self._connections[slot]
        try:
            if connection is None:
                connection = self._connect(slot)
            try:
                return function(connection)
            except (exception.AgentError, exception.DomainNotFound,
                    exception.NotSupported):
                raise
            except exception.HypervisorError:
                if not connection.is_alive():
                    self._drop(slot, connection)
                raise
        finally:
            with self._lock:
                self._in_flight[slot] -= 1

    def _connect(self, slot):
        connection = self._open()
        with self._lock:
            current = self._connections[slot]
            if current is None:
                self._connections[slot] = connection
                self.opened += 1
                return connection
        connection.close()  # another thread was faster
        return current

    def _drop(self, slot, connection):
        with self._lock:
            if self._connections[slot] is connection:
                self._connections[slot] = None
        connection.close()
        LOG.info('Guest-agent connection %d closed by libvirtd; reopened on '
                 'the next call', slot)

    def close(self):
        with self._lock:
            connections = [c for c in self._connections if c is not None]
            self._connections = [None] * len(self._connections)
        for connection in connections:
            connection.close()
