"""What an operator decided about one domain's monitoring.

``set_monitoring`` over the RPC API writes a row here; it wins over the
domain's metadata element and the name patterns, and outlives restarts
and redefinitions, until the operator clears it or the domain leaves
this host.

Every change is written with an ``instance.monitoring`` notification in
the same journal transaction, naming who asked (``requested_by``) and
what changed it (``source``), so a choice never changes without a trace.

The choice follows the domain.  ``OverrideKeeper`` also writes it into
the domain's own ``<vmha:monitoring>`` metadata element (an
``<override/>`` child), which a live migration carries to the
destination; an agent that reads a domain's metadata and finds a choice
its journal does not hold adopts it.  When the domain is undefined here
(the UNDEFINED event, or the audit finding it gone) the row is dropped:
a domain defined later with the same UUID is monitored by the rules
again.  Either way the domain is looked up first: events race, and an
undefined domain that still runs (transient now) is still here.
"""

import collections
import datetime
import logging
import math
import time

from lxml import etree

from vmha import concurrency
from vmha import timestamps
from vmha.journal import db
from vmha.journal import retry
from vmha.manager import selection
from vmha.objects import fields
from vmha.objects import monitoring
from vmha.virt import event as ev
from vmha.virt import exception

LOG = logging.getLogger(__name__)

Override = collections.namedtuple(
    'Override', ['enabled', 'reason', 'set_at', 'requested_by'],
    defaults=[None])
Override.__doc__ = """One operator choice: ``enabled`` True or False, the
operator's ``reason``, ``set_at`` (POSIX time) and ``requested_by``."""

#: ``requested_by`` of a change that did not come over the RPC API.
LOCAL = 'local'
#: Longest ``requested_by`` or reason kept (they come from clients).
MAX_TEXT = 255

# Keys of an oslo.messaging RPC context dict (oslo.context's to_dict),
# in the order they are looked for.
_CONTEXT_KEYS = (
    ('user', ('user_id', 'user', 'user_name')),
    ('project', ('project_id', 'tenant', 'project_name')),
    ('request_id', ('request_id', 'global_request_id')),
)


def requested_by(ctxt):
    """Who asked, from an RPC context dict: ``user=.. project=..
    request_id=..`` with what it holds, or 'rpc (anonymous)'."""
    if not isinstance(ctxt, dict):
        return 'rpc (anonymous)'
    parts = []
    for label, keys in _CONTEXT_KEYS:
        for key in keys:
            value = ctxt.get(key)
            if value not in (None, ''):
                parts.append('%s=%s' % (label, value))
                break
    return ' '.join(parts)[:MAX_TEXT] if parts else 'rpc (anonymous)'


def metadata_override(xml, name='-', uuid='-'):
    """The ``Override`` in a ``monitoring`` element's ``<override/>``
    child, or None.  A child vmha cannot use is logged and ignored."""
    element = selection.parse_monitoring(xml, name, uuid, quiet=True)
    child = None if element is None else _override_child(element)
    if child is None:
        return None
    enabled = (child.get('enabled') or '').strip().lower()
    if enabled not in ('true', 'false'):
        LOG.warning('%s (%s): ignoring the operator choice in its vmha '
                    'metadata: enabled=%r (true or false)', name, uuid,
                    child.get('enabled'))
        return None
    try:
        set_at = datetime.datetime.fromisoformat(child.get('at')).timestamp()
        if not math.isfinite(set_at):
            raise ValueError(set_at)
    except (TypeError, ValueError, OverflowError):
        LOG.warning('%s (%s): operator choice in its vmha metadata has no '
                    'usable time (at=%r); taken as set now', name, uuid,
                    child.get('at'))
        set_at = time.time()
    return Override(enabled == 'true', _text(child.get('reason')), set_at,
                    _text(child.get('by')) or 'unknown')


def with_override(xml, value, name='-', uuid='-'):
    """The ``monitoring`` element text ``xml`` with its ``<override/>``
    child replaced by ``value`` (None: removed), everything else kept;
    None when nothing would be left.  libvirt keeps one element per
    namespace: whatever else the element says must survive."""
    element = selection.parse_monitoring(xml, name, uuid)
    monitoring_element = etree.Element('monitoring')
    if element is not None:
        monitoring_element.attrib.update(element.attrib)
        for child in element:
            if isinstance(child.tag, str) and \
                    etree.QName(child).localname != 'override':
                monitoring_element.append(child)
    if value is not None:
        override = etree.SubElement(monitoring_element, 'override')
        override.set('enabled', 'true' if value.enabled else 'false')
        if value.reason:
            override.set('reason', value.reason)
        if value.requested_by:
            override.set('by', value.requested_by)
        override.set('at', timestamps.isotime(value.set_at))
    if not len(monitoring_element) and not monitoring_element.attrib:
        return None
    # libvirt puts the root in the namespace itself; children go
    # without one, as operators write them with virsh.
    for node in monitoring_element.iter():
        if isinstance(node.tag, str):
            node.tag = etree.QName(node).localname
    etree.cleanup_namespaces(monitoring_element)
    return etree.tostring(monitoring_element, encoding='unicode')


def _override_child(element):
    for child in element:
        if isinstance(child.tag, str) and \
                etree.QName(child).localname == 'override':
            return child
    return None


def _text(value):
    return None if value is None else value[:MAX_TEXT]


class OverrideStore:
    """The ``monitoring_override`` table of a ``Journal``.

    :param journal: the ``Journal``
    :param outbox: the ``Outbox`` each change's notification goes to
    :param host: this host, the notifications' publisher
    """

    def __init__(self, journal, outbox=None, host=None):
        self.journal = journal
        self.outbox = outbox
        self.host = host

    def all(self):
        """``{uuid: Override}`` (a read outside any transaction)."""
        return {row[0]: Override(bool(row[1]), row[2], row[3], row[4])
                for row in self.journal.query(
                    'SELECT uuid, enabled, reason, set_at, requested_by '
                    'FROM monitoring_override')}

    def set(self, uuid, enabled, reason, when, requested_by=LOCAL,
            name=None, source=fields.MonitoringChangeSource.RPC):
        """Record the choice; ``enabled=None`` clears it.  Returns the
        ``Override`` now in force, or None."""
        value = None if enabled is None else Override(
            enabled, reason, when, requested_by)
        with self.journal.transaction() as tx:
            previous = self._get(tx, uuid)
            self._write(tx, uuid, value)
            self._notify(tx, uuid, name, value, previous, reason,
                         requested_by, source, when)
        return value

    def adopt(self, uuid, name, value, when):
        """Record ``value`` (found in the domain's metadata) unless the
        journal already holds a choice.  Returns whether it did."""
        with self.journal.transaction() as tx:
            if self._get(tx, uuid) is not None:
                return False
            self._write(tx, uuid, value)
            self._notify(tx, uuid, name, value, None, value.reason,
                         value.requested_by,
                         fields.MonitoringChangeSource.METADATA, when)
        return True

    def drop(self, uuid, name, source, when, also=None):
        """Forget the choice for a domain gone from this host, and run
        ``also(tx)`` in the same transaction.  Returns the ``Override``
        dropped, or None if there was none."""
        with self.journal.transaction() as tx:
            previous = self._get(tx, uuid)
            if also is not None:
                also(tx)
            if previous is not None:
                self._write(tx, uuid, None)
                self._notify(tx, uuid, name, None, previous,
                             'the domain is no longer defined on this host',
                             LOCAL, source, when)
        return previous

    @staticmethod
    def _get(tx, uuid):
        row = tx.execute('SELECT enabled, reason, set_at, requested_by '
                         'FROM monitoring_override WHERE uuid = ?',
                         (uuid,)).fetchone()
        return None if row is None else Override(bool(row[0]), *row[1:])

    @staticmethod
    def _write(tx, uuid, value):
        if value is None:
            tx.execute('DELETE FROM monitoring_override WHERE uuid = ?',
                       (uuid,))
        else:
            tx.execute(
                'INSERT INTO monitoring_override (uuid, enabled, reason, '
                'set_at, requested_by) VALUES (?, ?, ?, ?, ?) '
                'ON CONFLICT (uuid) DO UPDATE SET '
                'enabled = excluded.enabled, reason = excluded.reason, '
                'set_at = excluded.set_at, '
                'requested_by = excluded.requested_by',
                (uuid, int(value.enabled), value.reason, value.set_at,
                 value.requested_by))

    def _notify(self, tx, uuid, name, value, previous, reason, who, source,
                when):
        if self.outbox is None:
            return
        # The outbox wakes the sender once the transaction commits.
        self.outbox.add(tx, monitoring.monitoring_notification(
            self.host, uuid, name,
            None if value is None else value.enabled,
            None if previous is None else previous.enabled, reason, who,
            source, timestamps.utc(when)).to_message())


class OverrideKeeper:
    """Keeps the operators' choices with their domains.

    A driver listener (UNDEFINED drops a choice), the selector's
    ``on_metadata_override`` (adopts a choice a domain brought along) and
    ``on_listed`` (the audit's full listing drops the choices of domains
    gone), and ``change`` for ``Inventory.set_monitoring``.

    :param driver: the virt driver
    :param store: the ``OverrideStore``
    :param selector: the ``selection.Selector`` the monitors ask
    :param state_store: the ``state.StateStore``: a dropped domain's row
        goes too (its events went unseen while it was disabled, so the
        row may still say running, and the audit would report it gone)
    :param run_blocking: the backend's way to make a libvirt call
    :param clock: monotonic, for the backoff of ``retry_adoptions``

    A choice adopted while the journal cannot be written applies at once
    (an operator who disabled a VM at the source must not see it
    reported here) and is kept in memory until ``retry_adoptions``, on
    the dispatcher's turnovers, records it: the lookup that found it
    never fails for it, so the event being looked up is not lost.
    """

    def __init__(self, driver, store, selector, state_store=None,
                 run_blocking=None, wall=time.time, clock=time.monotonic):
        self._driver = driver
        self._store = store
        self._state_store = state_store
        self._selector = selector
        self._run_blocking = run_blocking or concurrency.inline_run_blocking
        self._wall = wall
        # uuid -> (name, Override): adopted and applied, not yet in the
        # journal.
        self._unsaved = {}
        self._retry = retry.WriteRetry(clock)
        selector.on_metadata_override = self.adopt
        selector.on_listed = self.listed

    def load(self):
        """Apply the choices the journal holds (at start-up)."""
        for uuid, value in self._store.all().items():
            self._selector.override(uuid, value)

    def change(self, uuid, name, enabled, reason, requested_by):
        """An operator's choice: journal and notification first, then the
        domain's metadata (best effort).  Returns the ``Override`` now in
        force, or None."""
        value = self._store.set(uuid, enabled, reason, self._wall(),
                                requested_by, name)
        # An adoption still waiting for the journal is older: dropped.
        self._unsaved.pop(uuid, None)
        self._selector.override(uuid, value)
        self._write_metadata(uuid, name, value)
        return value

    def _write_metadata(self, uuid, name, value):
        try:
            current = self._run_blocking(self._driver.get_instance_metadata,
                                         uuid, selection.NAMESPACE)
            element = with_override(current, value, name, uuid)
            self._run_blocking(self._driver.set_instance_metadata, uuid,
                               selection.NAMESPACE, selection.PREFIX,
                               element)
        except exception.HypervisorError as error:
            LOG.warning('%s (%s): the operator choice is in the journal and '
                        'applies here, but cannot be written into the '
                        "domain's metadata (%s): it will not follow the "
                        'domain if it migrates', name, uuid, error)

    def adopt(self, uuid, name, xml):
        """The selector read the domain's metadata: a choice there that
        the journal does not hold came with the domain (a migration):
        record it and apply it."""
        if uuid in self._selector.overrides:
            return  # the journal's choice wins
        value = metadata_override(xml, name, uuid)
        if value is None:
            return
        # Applied before it is written: the caller's answer must not
        # depend on the journal taking the write.
        self._selector.override(uuid, value)
        self._unsaved[uuid] = (name, value)
        if not self._retry.due():  # backing off: not even one try now
            LOG.warning('%s (%s): cannot record the operator choice in its '
                        'metadata (monitoring %s) while the journal is '
                        'unwritable: it applies now, and is recorded once '
                        'the journal takes writes', name, uuid,
                        'enabled' if value.enabled else 'disabled')
            return
        try:
            self._save(uuid, name, value)
        except db.JournalError as error:
            delay = self._retry.failed()
            LOG.warning('%s (%s): cannot record the operator choice in its '
                        'metadata (monitoring %s): %s; it applies now, and '
                        'is recorded once the journal takes writes (next '
                        'try in %.1fs)', name, uuid,
                        'enabled' if value.enabled else 'disabled', error,
                        delay)

    def retry_adoptions(self):
        """Record the adopted choices the journal refused (the
        dispatcher calls it on every turnover; backs off while the
        journal stays unwritable)."""
        if not self._unsaved or not self._retry.due():
            return
        for uuid, (name, value) in list(self._unsaved.items()):
            try:
                self._save(uuid, name, value)
            except db.JournalError as error:
                delay = self._retry.failed()
                LOG.debug('Operator choices adopted from metadata still not '
                          'recorded (%d): %s; next try in %.1fs',
                          len(self._unsaved), error, delay)
                return
        self._retry.succeeded()

    def _save(self, uuid, name, value):
        """Write an adopted choice; the journal's own choice, if it holds
        one already, wins.  Raises JournalError (the choice stays kept)."""
        retried = self._retry.failures > 0
        if self._store.adopt(uuid, name, value, self._wall()):
            LOG.warning('%s (%s): monitoring %s, as the operator choice in '
                        'its metadata says (set by %s%s)%s', name, uuid,
                        'enabled' if value.enabled else 'disabled',
                        value.requested_by,
                        ': %s' % value.reason if value.reason else '',
                        '; recorded now' if retried else '')
        else:
            value = self._store.all().get(uuid)
        if self._unsaved.pop(uuid, None) is not None:
            self._selector.override(uuid, value)

    def __call__(self, event):
        if isinstance(event, ev.LifecycleEvent) and \
                event.transition == ev.EVENT_LIFECYCLE_UNDEFINED and \
                event.uuid in self._selector.overrides:
            self._drop_if_gone(event.uuid, event.name,
                               fields.MonitoringChangeSource.UNDEFINED)

    def listed(self, infos):
        """Every domain of the host was just listed (the audit): drop
        the choices of domains no longer here."""
        present = {info.uuid for info in infos}
        for uuid in list(self._selector.overrides):
            if uuid not in present:
                self._drop_if_gone(uuid, None,
                                   fields.MonitoringChangeSource.VANISHED)

    def _drop_if_gone(self, uuid, name, source):
        try:
            self._run_blocking(self._driver.get_instance_info, uuid)
        except exception.DomainNotFound:
            pass
        except exception.HypervisorError as error:
            LOG.info('%s (%s): cannot tell whether the domain is still '
                     'here (%s); its operator choice is kept', name or '-',
                     uuid, error)
            return
        else:
            LOG.info('%s (%s): no longer defined but still running here: '
                     'its operator choice is kept', name or '-', uuid)
            return
        forget = None
        if self._state_store is not None:
            def forget(tx):
                self._state_store.forget(tx, uuid)
        dropped = self._store.drop(uuid, name, source, self._wall(), forget)
        self._unsaved.pop(uuid, None)  # gone: nothing left to record
        self._selector.override(uuid, None)
        if dropped is not None:
            LOG.warning('%s (%s): the operator choice (monitoring %s%s) is '
                        'dropped: the domain is no longer defined on this '
                        'host', name or '-', uuid,
                        'enabled' if dropped.enabled else 'disabled',
                        ': %s' % dropped.reason if dropped.reason else '')
