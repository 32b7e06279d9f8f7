"""The libvirt implementation of ``vmha.virt.driver.VirtDriver``."""

import logging
import math
import time

from vmha import concurrency
from vmha.virt import driver
from vmha.virt import exception
from vmha.virt import power_state
from vmha.virt.libvirt import api as libvirt_api
from vmha.virt.libvirt import daemon_conf
from vmha.virt.libvirt import event_handler
from vmha.virt.libvirt import guest
from vmha.virt.libvirt import host as libvirt_host
from vmha.virt.libvirt import migration

LOG = logging.getLogger(__name__)

SHUTOFF = 5  # virDomainState VIR_DOMAIN_SHUTOFF

# virDomainState -> (power state, readable name), and reasons per state.
_STATES = {
    0: (power_state.NOSTATE, 'NOSTATE'),
    1: (power_state.RUNNING, 'RUNNING'),
    2: (power_state.RUNNING, 'BLOCKED'),
    3: (power_state.PAUSED, 'PAUSED'),
    4: (power_state.RUNNING, 'SHUTDOWN'),  # shutting down, still running
    5: (power_state.SHUTDOWN, 'SHUTOFF'),
    6: (power_state.CRASHED, 'CRASHED'),
    7: (power_state.SUSPENDED, 'PMSUSPENDED'),
}
_REASONS = {
    'RUNNING': ('UNKNOWN', 'BOOTED', 'MIGRATED', 'RESTORED', 'FROM_SNAPSHOT',
                'UNPAUSED', 'MIGRATION_CANCELED', 'SAVE_CANCELED', 'WAKEUP',
                'CRASHED', 'POSTCOPY', 'POSTCOPY_FAILED'),
    'PAUSED': ('UNKNOWN', 'USER', 'MIGRATION', 'SAVE', 'DUMP', 'IOERROR',
               'WATCHDOG', 'FROM_SNAPSHOT', 'SHUTTING_DOWN', 'SNAPSHOT',
               'CRASHED', 'STARTING_UP', 'POSTCOPY', 'POSTCOPY_FAILED'),
    'SHUTOFF': ('UNKNOWN', 'SHUTDOWN', 'DESTROYED', 'CRASHED', 'MIGRATED',
                'SAVED', 'FAILED', 'FROM_SNAPSHOT', 'DAEMON'),
    'CRASHED': ('UNKNOWN', 'PANICKED'),
}


def describe_state(state, reason):
    """(power_state, 'SHUTOFF_CRASHED') for libvirt's (state, reason)."""
    power, name = _STATES.get(state, (power_state.NOSTATE,
                                      'UNKNOWN_%s' % state))
    reasons = _REASONS.get(name, ())
    reason_name = (reasons[reason] if 0 <= reason < len(reasons)
                   else 'UNKNOWN' if not reasons else 'UNKNOWN_%s' % reason)
    return power, '%s_%s' % (name, reason_name)


class LibvirtDriver(driver.VirtDriver):
    """Watches every domain on one libvirt connection.

    :param uri: libvirt connection URI
    :param backend: concurrency backend name, 'eventlet' or 'threading'
    :param api: a LibvirtAPI (tests pass one over a fake libvirt module)
    :param handler_factory: ``callable(deliver)`` returning the
        EventHandler; tests pass one that runs no threads
    """

    def __init__(self, uri, backend='eventlet', stopped_delay=15.0,
                 queue_size=10000, keepalive_interval=5, keepalive_count=3,
                 reconnect_min=0.5, reconnect_max=30.0, api=None,
                 handler_factory=None, agent_calls=32,
                 max_client_requests=5):
        super().__init__()
        self._api = api or libvirt_api.LibvirtAPI()
        self._uri = uri
        self._backend = concurrency.get(backend)
        # Guest-agent calls go over connections of their own, at most
        # max_client_requests at once on each (see guest.py).
        self.agent_connections = guest.AgentConnections(
            lambda: self._api.open(uri),
            math.ceil(agent_calls / max_client_requests),
            max_client_requests, concurrency.get(backend).native_lock())

        def make_handler(deliver):
            return event_handler.EventHandler.create(
                backend, deliver, stopped_delay=stopped_delay,
                queue_size=queue_size)

        self.host = libvirt_host.Host(
            self._api, uri, handler_factory or make_handler, self.emit_event,
            keepalive_interval=keepalive_interval,
            keepalive_count=keepalive_count,
            reconnect_min=reconnect_min, reconnect_max=reconnect_max)
        self.host.handler.on_turnover = self.turned_over

    @classmethod
    def from_conf(cls, conf, api=None):
        return cls(conf.libvirt.connection_uri,
                   backend=conf.concurrency_backend,
                   stopped_delay=conf.events.stopped_delay,
                   queue_size=conf.events.queue_size,
                   keepalive_interval=conf.libvirt.keepalive_interval,
                   keepalive_count=conf.libvirt.keepalive_count,
                   reconnect_min=conf.libvirt.reconnect_min_interval,
                   reconnect_max=conf.libvirt.reconnect_max_interval,
                   agent_calls=conf.guest_agent.max_concurrent_pings
                   + conf.guest_agent.max_suspect_pings,
                   max_client_requests=conf.guest_agent.max_client_requests,
                   api=api)

    def daemon_limits(self):
        """(path, {'max_workers', 'max_client_requests'}) of the local
        libvirt daemon's configuration, (path, None) when unreadable, or
        None when ``uri`` is not the local QEMU driver."""
        if not self._uri.startswith('qemu:///'):
            return None
        return daemon_conf.read_limits()

    def init_host(self):
        self.host.initialize()

    def cleanup(self):
        self.host.cleanup()
        self.agent_connections.close()

    def dispatch_stats(self):
        handler = self.host.handler
        return driver.DispatchStats(
            handler.turnover_age(), handler.queue_depth(),
            handler.dispatched_total, handler.dropped_total)

    def connection_stats(self):
        host = self.host
        since = host.disconnected_since
        return driver.ConnectionStats(
            host.connected, None if since is None else
            max(0.0, time.time() - since), host.reconnects)

    def _info(self, domain):
        power, reason = describe_state(*domain.state())
        return driver.InstanceInfo(domain.uuid, domain.name, power, reason)

    def list_instances(self):
        infos = []
        for domain, state, reason in self.host.get_connection(
                ).domain_states():
            power, state_reason = describe_state(state, reason)
            infos.append(driver.InstanceInfo(domain.uuid, domain.name, power,
                                             state_reason))
        return infos

    def get_instance_metadata(self, uuid, namespace_uri):
        return self.host.get_connection().lookup(uuid).metadata(
            namespace_uri)

    def get_metadata_batch(self, uuids, namespace_uri):
        connection = self.host.get_connection()
        found = {}
        for uuid in uuids:
            try:
                found[uuid] = connection.lookup(uuid).metadata(namespace_uri)
            except exception.HypervisorError as error:
                found[uuid] = error
        return found

    def set_instance_metadata(self, uuid, namespace_uri, key, xml):
        self.host.get_connection().lookup(uuid).set_metadata(
            namespace_uri, key, xml)

    def get_instance_info(self, uuid):
        return self._info(self.host.get_connection().lookup(uuid))

    def guest_agent_command(self, uuid, command, timeout):
        return self.agent_connections.call(
            lambda conn: conn.lookup(uuid).agent_command(command, timeout))

    def describe_guest(self, uuid, namespace_uri):
        return guest.describe_xml(
            self.host.get_connection().lookup(uuid).xml(), namespace_uri)

    def channel_path(self, uuid, name):
        xml = self.host.get_connection().lookup(uuid).xml()
        try:
            return guest.channel_path(xml, name, domain=uuid)
        except ValueError as error:
            LOG.warning('Domain %s: cannot find channel %s, its XML is '
                        'unusable: %s', uuid, name, error)
            return None

    def get_guest_counters(self, uuid, disk=False):
        def read(conn):
            domain = conn.lookup(uuid)
            stats = conn.domain_stats(domain, guest.STATS_INTERFACE)
            if disk:
                # NOWAIT: skip (never wait for) the disk counters while
                # another job holds the domain.
                stats.update(conn.domain_stats(
                    domain, guest.STATS_BLOCK, guest.STATS_NOWAIT))
            stats['cpu.time'] = domain.cpu_time()
            return stats
        return guest.counters_from_stats(
            self.agent_connections.call(read), disk)

    def reset_instance(self, uuid):
        self.agent_connections.call(lambda conn: conn.lookup(uuid).reset())

    def restart_instance(self, uuid):
        def restart(conn):
            domain = conn.lookup(uuid)
            domain.destroy()
            domain.start()
        self.agent_connections.call(restart)

    def destroy_instance(self, uuid):
        self.agent_connections.call(lambda conn: conn.lookup(uuid).destroy())

    # Lifecycle actions: on the agent connections, like the guest-agent
    # calls, so a slow action never holds up the event connection.

    def _on_domain(self, uuid, function):
        return self.agent_connections.call(
            lambda conn: function(conn.lookup(uuid)))

    def stop_instance(self, uuid, shutdown_timeout, poll=0.5):
        def off(domain):
            # A transient domain is gone once it is off: off too.
            try:
                return domain.state()[0] == SHUTOFF
            except exception.DomainNotFound:
                return True

        def stop(domain):
            if domain.state()[0] == SHUTOFF:
                return 'already shut off'
            started = time.monotonic()
            if shutdown_timeout > 0:
                domain.shutdown()
                while time.monotonic() - started < shutdown_timeout:
                    if off(domain):
                        return 'shut down by the guest in %.1fs' % (
                            time.monotonic() - started)
                    self._backend.native_sleep(min(poll, max(
                        0.0, shutdown_timeout -
                        (time.monotonic() - started))))
            if off(domain):
                return 'shut down by the guest in %.1fs' % (
                    time.monotonic() - started)
            domain.destroy()
            if not shutdown_timeout:
                return 'destroyed (no graceful shutdown asked for)'
            return ('destroyed: the guest did not shut down within %gs'
                    % shutdown_timeout)
        return self._on_domain(uuid, stop)

    def reboot_instance(self, uuid):
        def reboot(domain):
            domain.reboot()
            return 'reboot requested (graceful)'
        return self._on_domain(uuid, reboot)

    def pause_instance(self, uuid):
        def pause(domain):
            domain.suspend()
            return 'paused'
        return self._on_domain(uuid, pause)

    def unpause_instance(self, uuid):
        def unpause(domain):
            domain.resume()
            return 'unpaused'
        return self._on_domain(uuid, unpause)

    def suspend_instance(self, uuid):
        def suspend(domain):
            domain.managed_save()
            return 'memory saved, domain stopped (managed save)'
        return self._on_domain(uuid, suspend)

    def resume_instance(self, uuid):
        def resume(domain):
            if not domain.has_managed_save():
                raise exception.HypervisorError(
                    'domain %s has no saved memory to resume from (resume '
                    'follows a suspend)' % uuid)
            domain.start()
            return 'started from its saved memory'
        return self._on_domain(uuid, resume)
    # --- live migration ---------------------------------------------------

    def job_stats(self, uuid):
        # Local calls of libvirtd's (its job bookkeeping), on an agent
        # connection: the event connection's slots stay free for events.
        def read(conn):
            domain = conn.lookup(uuid)
            stats = domain.job_stats()
            return migration.neutral_stats(
                stats, describe_state(*domain.state())[1])
        return self.agent_connections.call(read)

    def live_migrate(self, uuid, destination_uri, features=(),
                     block_migration=False, bandwidth_mib=None):
        params = {}
        if bandwidth_mib:
            params[migration.PARAM_BANDWIDTH] = int(bandwidth_mib)
        flags = migration.flags(features, block_migration)
        # A connection of its own: the call blocks for the whole
        # migration, and would hold one of libvirtd's per-client slots.
        connection = self._api.open(self._uri)
        try:
            connection.lookup(uuid).migrate_to_uri3(destination_uri, params,
                                                    flags)
        finally:
            connection.close()

    def set_migration_downtime(self, uuid, downtime_ms):
        self.agent_connections.call(
            lambda conn: conn.lookup(uuid).migrate_set_max_downtime(
                downtime_ms))

    def start_postcopy(self, uuid):
        self.agent_connections.call(
            lambda conn: conn.lookup(uuid).migrate_start_postcopy())

    def abort_job(self, uuid):
        self.agent_connections.call(lambda conn: conn.lookup(uuid).abort_job())
