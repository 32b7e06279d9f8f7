"""Which domains vmha monitors: name patterns and a metadata element.

Order of precedence: an operator's choice over the RPC API
(``vmha.manager.overrides``), then the domain's own
``<vmha:monitoring enabled=.../>`` metadata element (when
``[monitoring] use_metadata``), then ``exclude_names``, then
``include_names``.  A domain's answer is cached
until it is redefined (DEFINED/UNDEFINED events call ``forget``).
"""

import fnmatch
import logging

from lxml import etree

from vmha.virt import exception

LOG = logging.getLogger(__name__)

NAMESPACE = 'http://openstack.org/xmlns/vmha/1.0'


def metadata_choice(xml):
    """True/False from a ``monitoring`` element, None if it says nothing.

    The XML comes from the domain definition, which a tenant-facing
    tool may have written: anything unparsable is ignored, not trusted.
    """
    if not xml:
        return None
    try:
        element = etree.fromstring(xml.encode() if isinstance(xml, str)
                                   else xml)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if etree.QName(element).localname != 'monitoring':
        return None
    value = (element.get('enabled') or '').strip().lower()
    if value in ('true', 'yes', '1'):
        return True
    if value in ('false', 'no', '0'):
        return False
    return None


# <vmha:guest-agent .../> inside <vmha:monitoring>: per-VM settings of the
# guest-agent monitor, each checked like the option of the same name.
_SETTINGS = {
    'enabled': lambda v: {'true': True, 'yes': True, '1': True,
                          'false': False, 'no': False, '0': False}[v.lower()],
    'interval': lambda v: _positive(float(v), 0.5),
    'timeout': lambda v: _positive(float(v), 0.1),
    'failure_threshold': lambda v: int(_positive(int(v), 1)),
    'action': lambda v: {'notify': 'notify', 'reset': 'reset',
                         'restart': 'restart'}[v],
}


def _positive(value, minimum):
    if not value >= minimum:  # also rejects NaN
        raise ValueError('below %s' % minimum)
    return value


def guest_agent_settings(xml, name='-'):
    """Per-VM guest-agent settings from a ``monitoring`` element:
    ``{option: value}`` for the attributes of its ``guest-agent`` child
    that are valid; the rest are logged with the domain and ignored."""
    if not xml:
        return {}
    try:
        element = etree.fromstring(xml.encode() if isinstance(xml, str)
                                   else xml)
    except (etree.XMLSyntaxError, ValueError):
        LOG.warning('%s: vmha metadata does not parse; config defaults '
                    'apply', name)
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
            except (KeyError, ValueError):
                LOG.warning('%s: ignoring guest-agent setting %s=%r in its '
                            'vmha metadata', name, key, value)
    if settings.get('timeout', 0) >= settings.get('interval', float('inf')):
        LOG.warning('%s: guest-agent timeout must be less than interval; '
                    'ignoring both', name)
        settings.pop('timeout')
        settings.pop('interval')
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
        self._run_blocking = run_blocking or (lambda f, *a: f(*a))
        self._include = list(include)
        self._exclude = list(exclude)
        self._use_metadata = use_metadata
        self._cache = {}
        self.overrides = {}  # uuid -> overrides.Override

    @classmethod
    def from_conf(cls, conf, driver, run_blocking=None):
        return cls(driver, conf.monitoring.include_names,
                   conf.monitoring.exclude_names,
                   conf.monitoring.use_metadata, run_blocking)

    def is_monitored(self, uuid, name):
        override = self.overrides.get(uuid)
        if override is not None:
            return override.enabled
        answer = self._cache.get(uuid)
        if answer is None:
            answer, final = self._decide(uuid, name)
            if final:  # a passing libvirt error is asked again next time
                self._cache[uuid] = answer
        return answer

    def decide(self, uuid, name, metadata):
        """Like ``is_monitored``, from the ``monitoring`` element the
        caller already read (no libvirt call); the answer is cached."""
        choice = metadata_choice(metadata) if self._use_metadata else None
        if choice is None:
            choice = self._by_name(name)
        self._cache[uuid] = choice
        return self.is_monitored(uuid, name)

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
                choice = metadata_choice(self._run_blocking(
                    self._driver.get_instance_metadata, uuid, NAMESPACE))
            except exception.DomainNotFound:
                choice = None  # gone: the name rules answer
            except exception.HypervisorError as error:
                # Unreachable for now: the name rules answer this time.
                LOG.debug('No metadata for %s (%s): %s', name, uuid, error)
                choice, final = None, False
            if choice is not None:
                return choice, final
        return self._by_name(name), final
