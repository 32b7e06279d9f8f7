"""Which domains vmha monitors: name patterns and a metadata element.

Order of precedence: the domain's own ``<vmha:monitoring enabled=.../>``
metadata element (when ``[monitoring] use_metadata``), then
``exclude_names``, then ``include_names``.  A domain's answer is cached
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

    @classmethod
    def from_conf(cls, conf, driver, run_blocking=None):
        return cls(driver, conf.monitoring.include_names,
                   conf.monitoring.exclude_names,
                   conf.monitoring.use_metadata, run_blocking)

    def is_monitored(self, uuid, name):
        answer = self._cache.get(uuid)
        if answer is None:
            answer, final = self._decide(uuid, name)
            if final:  # a passing libvirt error is asked again next time
                self._cache[uuid] = answer
        return answer

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
        if any(fnmatch.fnmatchcase(name, p) for p in self._exclude):
            return False, final
        return any(fnmatch.fnmatchcase(name, p)
                   for p in self._include), final
