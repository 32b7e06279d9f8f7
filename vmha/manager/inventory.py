"""What operators see, and the one thing they switch.

``Inventory.instances()`` joins, per domain: libvirt's current state (or
the journal's, while libvirt is unreachable), whether vmha monitors it
and why not, the guest-agent monitor's state and last ping, the guest
heartbeat's state, and the last failure vmha reported.  ``vmha-status``,
``/status`` and the RPC API all show these rows.  ``set_monitoring``
records an operator's choice in the journal (it outlives restarts) and
applies it at once.

Rows are plain dicts of JSON types, so they cross HTTP and RPC as they
are; times are ISO 8601 in UTC.
"""

import logging
import time

from vmha import concurrency
from vmha import timestamps
from vmha.manager import overrides
from vmha.virt import exception
from vmha.virt import power_state

LOG = logging.getLogger(__name__)


class InstanceNotFound(LookupError):
    """No domain on this host has that UUID or name."""


class Inventory:
    """:param driver: the virt driver
    :param store: the ``state.StateStore``
    :param overrides: the ``overrides.OverrideKeeper``
    :param selector: the ``selection.Selector`` the monitors ask
    :param guest_monitor: the ``GuestAgentMonitor``, or None
    :param heartbeat_monitor: the ``HeartbeatMonitor``, or None
    :param audit: the ``PowerStateAudit`` (run after re-enabling), or None
    :param migration_monitor: the ``MigrationMonitor``, or None (the
        MIGRATING column: 'out 63% it3 dt=150ms', 'in')
    :param run_blocking: the backend's way to make a libvirt call
    :param clock: the guest monitor's monotonic clock
    :param recoveries: the ``recoveries.RecoveryBook``, or None
    """

    def __init__(self, driver, store, overrides, selector,
                 guest_monitor=None, audit=None, run_blocking=None,
                 clock=time.monotonic, wall=time.time,
                 heartbeat_monitor=None, recoveries=None,
                 migration_monitor=None):
        self._migration_monitor = migration_monitor
        self._driver = driver
        self._store = store
        self._overrides = overrides
        self._selector = selector
        self._guest_monitor = guest_monitor
        self._heartbeat_monitor = heartbeat_monitor
        self._audit = audit
        self._run_blocking = run_blocking or concurrency.inline_run_blocking
        self._clock = clock
        self._wall = wall
        self._recoveries = recoveries

    def load(self):
        """Apply the operator choices the journal holds (at start-up)."""
        self._overrides.load()

    def instances(self):
        """One row per domain, by name."""
        known = self._store.all()
        try:
            infos = [(i.uuid, i.name, i.power_state, i.state_reason)
                     for i in self._run_blocking(self._driver.list_instances)]
            source = 'libvirt'
        except exception.HypervisorError as error:
            LOG.info('Status from the journal: %s', error)
            infos = [(r.uuid, r.name, None, r.state_reason)
                     for r in known.values()]
            source = 'journal'
        guests = {}
        if self._guest_monitor is not None:
            guests = {g['uuid']: g for g in self._guest_monitor.status()}
        beats = {}
        if self._heartbeat_monitor is not None:
            beats = {b['uuid']: b for b in self._heartbeat_monitor.status()}
        recoveries = {}
        if self._recoveries is not None:
            recoveries = self._recoveries.latest()
        rows = [self._row(uuid, name, power, reason, known.get(uuid),
                          guests.get(uuid), source, beats.get(uuid))
                for uuid, name, power, reason in infos]
        for row in rows:
            row['recovery'] = recoveries.get(row['uuid'])
        if self._migration_monitor is not None:
            migrating = {m['uuid']: m['migrating']
                         for m in self._migration_monitor.status()}
            for row in rows:
                row['migrating'] = migrating.get(row['uuid'])
        return sorted(rows, key=lambda row: (row['name'], row['uuid']))

    def instance(self, key):
        """The row of the domain with UUID or name ``key``."""
        rows = self.instances()
        for field in ('uuid', 'name'):
            for row in rows:
                if row[field] == key:
                    return row
        raise InstanceNotFound('no domain %r on this host' % key)

    def set_monitoring(self, key, enabled, reason=None,
                       requested_by=overrides.LOCAL):
        """Enable (True) or disable (False) monitoring of one domain, or
        give it back to metadata and name patterns (None), on behalf of
        ``requested_by``.  Returns the domain's row as it is now."""
        row = self.instance(key)
        uuid = row['uuid']
        self._overrides.change(uuid, row['name'], enabled, reason,
                               requested_by)
        LOG.warning('Monitoring of %s (%s) %s by %s%s', row['name'], uuid,
                    {True: 'enabled', False: 'disabled',
                     None: 'back to metadata and name rules'}[enabled],
                    requested_by, ': %s' % reason if reason else '')
        if self._guest_monitor is not None:
            self._guest_monitor.reconsider(uuid)
        if enabled is not False and self._audit is not None:
            self._audit.request()  # catch up with what was not watched
        return self.instance(uuid)

    def _row(self, uuid, name, power, reason, known, guest, source,
             beat=None):
        override = self._selector.overrides.get(uuid)
        if override is not None:
            monitoring = 'monitored' if override.enabled else 'disabled'
        else:
            monitoring = ('monitored'
                          if self._selector.is_monitored(uuid, name)
                          else 'excluded')
        row = {
            'uuid': uuid, 'name': name,
            'power_state': (power_state.STATE_MAP.get(power, 'unknown')
                            if power is not None
                            else known.power_state if known else None),
            'state_reason': reason, 'source': source,
            'monitoring': monitoring,
            'override': None if override is None else {
                'enabled': override.enabled, 'reason': override.reason,
                'set_at': timestamps.isotime(override.set_at),
                'requested_by': override.requested_by},
            'guest_agent': None, 'last_ping_at': None,
            'last_ping_latency': None, 'guest_agent_error': None,
            'failure_open': bool(known and known.failure_cause),
            'last_decision': known.last_decision if known else None,
            'last_decision_at': timestamps.isotime(known.last_decision_at
                                        if known else None),
        }
        if guest is not None and guest['pinged']:
            row['guest_agent'] = guest['state']
            row['guest_agent_error'] = guest['last_error']
            row['last_ping_latency'] = guest['last_ping_latency']
            if guest['last_ping_at'] is not None:
                row['last_ping_at'] = timestamps.isotime(
                    self._wall() - (self._clock() - guest['last_ping_at']))
        row['heartbeat'] = heartbeat_cell(beat)
        row['heartbeat_state'] = beat['state'] if beat else None
        return row


def heartbeat_cell(beat):
    """What the HEARTBEAT column says: 'enabled 1s', 'failed (2
    missed)', 'paused (migrating)', or None without a channel."""
    if beat is None:
        return None
    state = beat['state']
    if state == 'failed':
        return ('failed (%d missed)' % beat['misses'] if beat['misses']
                else 'failed (unhealthy)')
    if state == 'paused' and beat.get('paused'):
        return 'paused (%s)' % ', '.join(beat['paused'])
    if state in ('enabled', 'enabling') and beat.get('interval'):
        return '%s %gs' % (state, beat['interval'])
    return state
