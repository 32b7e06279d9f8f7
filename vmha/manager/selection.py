"""Which domains vmha monitors: name patterns and a metadata element.

Order of precedence: an operator's choice over the RPC API
(``vmha.manager.overrides``), then the domain's own
``<vmha:monitoring enabled=.../>`` metadata element (when
``[monitoring] use_metadata``), then ``exclude_names``, then
``include_names``.  A domain's answer is cached
until it is redefined (DEFINED/UNDEFINED events call ``forget``).

The metadata is untrusted input (whoever defined the domain wrote it):
each value vmha cannot use is ignored with one warning naming the
domain, and per-VM guest-agent settings keep the bounds of the
``[guest_agent]`` options.  An operator's choice found in the element (a
domain that migrated here) is handed to ``on_metadata_override``.
"""

import fnmatch
import logging

from lxml import etree

from vmha import concurrency
from vmha.conf import guest_agent as guest_agent_opts
from vmha.virt import exception

LOG = logging.getLogger(__name__)

NAMESPACE = 'http://openstack.org/xmlns/vmha/1.0'
# Domains whose metadata one blocking call reads (``Selector.prefetch``).
BATCH = 500
#: The XML prefix vmha writes its element with.
PREFIX = 'vmha'


# What ``enabled`` may say, on <vmha:monitoring> and on <vmha:guest-agent>.
_BOOLEANS = {'true': True, 'yes': True, '1': True,
             'false': False, 'no': False, '0': False}


def parse_monitoring(xml, name='-', uuid='-', quiet=False):
    """The ``monitoring`` element of a metadata text, or None (logged
    unless there is no text at all, or ``quiet``: another reader of the
    same text warns already).  An element parsed already is returned as
    it is, so that readers of one domain's metadata share one parse."""
    if isinstance(xml, etree._Element):
        return xml
    if not xml:
        return None
    try:
        element = etree.fromstring(xml.encode() if isinstance(xml, str)
                                   else xml)
    except (etree.XMLSyntaxError, ValueError):
        if not quiet:
            LOG.warning('%s (%s): vmha metadata does not parse; ignored',
                        name, uuid)
        return None
    qname = etree.QName(element)
    # libvirt hands the element back in the namespace asked for; a
    # test double may leave it out.
    if qname.localname != 'monitoring' or \
            qname.namespace not in (None, NAMESPACE):
        if not quiet:
            LOG.warning('%s (%s): vmha metadata element is %r, not '
                        '<monitoring> in %s; ignored', name, uuid,
                        element.tag, NAMESPACE)
        return None
    return element


def metadata_choice(xml, name='-', uuid='-'):
    """True/False from a ``monitoring`` element, None if it says nothing.

    The XML comes from the domain definition, which a tenant-facing
    tool may have written: anything unusable is logged with the domain
    and ignored, not trusted.
    """
    element = parse_monitoring(xml, name, uuid)
    if element is None:
        return None
    raw = element.get('enabled')
    choice = _BOOLEANS.get((raw or '').strip().lower())
    if choice is not None:
        return choice
    if raw is not None:
        LOG.warning('%s (%s): ignoring enabled=%r in its vmha metadata '
                    '(true or false); the name rules decide', name, uuid,
                    raw)
    return None


def _bounded(convert, minimum, maximum):
    def check(text):
        value = convert(text)
        # Comparisons also reject NaN; float('1e400') is inf.
        if not minimum <= value <= maximum:
            raise ValueError('not within %s..%s' % (minimum, maximum))
        return value
    return check


def _choice(table):
    return lambda text: table[text.lower()]


# <vmha:guest-agent .../> inside <vmha:monitoring>: per-VM settings of the
# guest-agent monitor, each held to the bounds of the option of the same
# name (vmha.conf.guest_agent).
_SETTINGS = {
    'enabled': _choice(_BOOLEANS),
    'interval': _bounded(float, guest_agent_opts.INTERVAL_MIN,
                         guest_agent_opts.INTERVAL_MAX),
    'timeout': _bounded(float, guest_agent_opts.TIMEOUT_MIN,
                        guest_agent_opts.TIMEOUT_MAX),
    'failure_threshold': _bounded(int,
                                  guest_agent_opts.FAILURE_THRESHOLD_MIN,
                                  guest_agent_opts.FAILURE_THRESHOLD_MAX),
    'action': _choice({a: a for a in guest_agent_opts.ACTIONS}),
}


def guest_agent_settings(xml, name='-', uuid='-', defaults=None):
    """Per-VM guest-agent settings from a ``monitoring`` element:
    ``{option: value}`` for the attributes of its ``guest-agent`` child
    that are valid; each other one is logged with the domain and
    ignored.  ``defaults``: the settings that apply where the element
    sets none (a timeout it sets must stay below the interval)."""
    element = parse_monitoring(xml, name, uuid)
    if element is None:
        return {}
    settings = {}
    for child in element:
        if not isinstance(child.tag, str) or \
                etree.QName(child).localname != 'guest-agent':
            continue
        for key, value in child.attrib.items():
            key = key.replace('-', '_')
            try:
                settings[key] = _SETTINGS[key](value.strip())
            except (KeyError, ValueError, OverflowError):
                LOG.warning('%s (%s): ignoring guest-agent setting %s=%r '
                            'in its vmha metadata', name, uuid, key, value)
    # A timeout set here must be below the interval in force; an
    # interval alone is left to the monitor (a ping still out is not
    # sent again).
    timeout = settings.get('timeout')
    interval = settings.get('interval', getattr(defaults, 'interval', None))
    if None not in (timeout, interval) and timeout >= interval:
        for key in ('timeout', 'interval'):
            if key in settings:
                LOG.warning('%s (%s): ignoring guest-agent setting %s=%r '
                            'in its vmha metadata: the timeout (%ss) must '
                            'be less than the interval (%ss)', name, uuid,
                            key, settings.pop(key), timeout, interval)
    return settings


class Selector:
    """Answers "is this domain monitored?".

    :param driver: the virt driver (for metadata)
    :param include: fnmatch patterns of names to monitor
    :param exclude: fnmatch patterns of names not to monitor
    :param use_metadata: honour the domain's metadata element
    """

    def __init__(self, driver, include=('*',), exclude=(),
                 use_metadata=True, run_blocking=None):
        self._driver = driver
        self._run_blocking = run_blocking or concurrency.inline_run_blocking
        self._include = list(include)
        self._exclude = list(exclude)
        self._use_metadata = use_metadata
        self._cache = {}
        self.overrides = {}  # uuid -> overrides.Override
        # callable(uuid, name, monitoring element) for each element
        # read: an operator choice that came with the domain is adopted
        # (``overrides.OverrideKeeper``).
        self.on_metadata_override = None
        # callable(infos) after every full listing of the host's domains.
        self.on_listed = None

    @classmethod
    def from_conf(cls, conf, driver, run_blocking=None):
        return cls(driver, conf.monitoring.include_names,
                   conf.monitoring.exclude_names,
                   conf.monitoring.use_metadata, run_blocking)

    def is_monitored(self, uuid, name):
        override = self.overrides.get(uuid)
        if override is None:
            answer = self._cache.get(uuid)
            if answer is not None:
                return answer
            answer, final = self._decide(uuid, name)
            if final:  # a passing libvirt error is asked again next time
                self._cache[uuid] = answer
            override = self.overrides.get(uuid)  # adopted from metadata
            if override is None:
                return answer
        return override.enabled

    def prefetch(self, infos):
        """Decide every domain of ``infos`` (``InstanceInfo``s) not yet
        decided, reading their metadata in batches of ``BATCH``: one
        blocking call per batch instead of one per domain (the first
        audit of a big host).  ``is_monitored`` then answers from the
        cache; a domain whose read failed is asked again there."""
        if not self._use_metadata:
            return
        todo = [info for info in infos if info.uuid not in self._cache
                and info.uuid not in self.overrides]
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            try:
                found = self._run_blocking(self._driver.get_metadata_batch,
                                           [info.uuid for info in batch],
                                           NAMESPACE)
            except exception.HypervisorError as error:
                LOG.debug('No metadata for %d domain(s): %s', len(batch),
                          error)
                return  # each is asked on its own, later
            for info in batch:
                metadata = found.get(info.uuid)
                if isinstance(metadata, exception.DomainNotFound):
                    # Gone: the name rules answer (as is_monitored does).
                    self._cache[info.uuid] = self._by_name(info.name)
                elif isinstance(metadata, Exception):
                    LOG.debug('No metadata for %s (%s): %s', info.name,
                              info.uuid, metadata)
                else:
                    self.decide(info.uuid, info.name, metadata)

    def decide(self, uuid, name, metadata):
        """Like ``is_monitored``, from the ``monitoring`` element the
        caller already read (no libvirt call); the answer is cached."""
        choice = None
        if self._use_metadata:
            choice = self._metadata_choice(uuid, name, metadata)
        if choice is None:
            choice = self._by_name(name)
        self._cache[uuid] = choice
        return self.is_monitored(uuid, name)

    def listed(self, infos):
        """Every domain of the host was just listed (``InstanceInfo``s)."""
        if self.on_listed is not None:
            self.on_listed(infos)

    def _metadata_choice(self, uuid, name, metadata):
        """The element's choice; parsed once, and handed to
        ``on_metadata_override`` as well (an operator choice in it)."""
        element = parse_monitoring(metadata, name, uuid)
        if element is not None and self.on_metadata_override is not None:
            self.on_metadata_override(uuid, name, element)
        return metadata_choice(element, name, uuid)

    def disabled(self, uuid):
        """True if an operator turned this domain's monitoring off."""
        override = self.overrides.get(uuid)
        return override is not None and not override.enabled

    def override(self, uuid, value):
        """Apply an operator's ``overrides.Override`` (None: clear it)."""
        if value is None:
            self.overrides.pop(uuid, None)
        else:
            self.overrides[uuid] = value

    def _by_name(self, name):
        if any(fnmatch.fnmatchcase(name, p) for p in self._exclude):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self._include)

    def forget(self, uuid):
        self._cache.pop(uuid, None)

    def _decide(self, uuid, name):
        """(monitored?, may the answer be cached?)"""
        final = True
        if self._use_metadata:
            try:
                metadata = self._run_blocking(
                    self._driver.get_instance_metadata, uuid, NAMESPACE)
                choice = self._metadata_choice(uuid, name, metadata)
            except exception.DomainNotFound:
                choice = None  # gone: the name rules answer
            except exception.HypervisorError as error:
                # Unreachable for now: the name rules answer this time.
                LOG.debug('No metadata for %s (%s): %s', name, uuid, error)
                choice, final = None, False
            if choice is not None:
                return choice, final
        return self._by_name(name), final
