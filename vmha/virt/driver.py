"""The virt driver API the manager programs against.

A driver turns hypervisor callbacks into ``vmha.virt.event`` objects and
hands them to every registered listener, and answers the few questions the
monitors ask: which domains exist and in what state, and what a guest agent
says.  It knows nothing of policy, messaging or the journal.
"""

import abc
import collections
import logging

from vmha.virt import exception

LOG = logging.getLogger(__name__)

InstanceInfo = collections.namedtuple(
    'InstanceInfo', ['uuid', 'name', 'power_state', 'state_reason'])
InstanceInfo.__doc__ = """One domain as the hypervisor sees it now.

``power_state`` is a ``vmha.virt.power_state`` value; ``state_reason`` a
readable libvirt state and reason such as 'SHUTOFF_CRASHED'.
"""

DispatchStats = collections.namedtuple(
    'DispatchStats', ['turnover_age', 'queue_depth', 'dispatched', 'dropped'])
DispatchStats.__doc__ = """The event dispatcher, for health and metrics.

``turnover_age``: seconds since the dispatcher last woke (it wakes at
least once a second when idle, so a large value means it is wedged);
``queue_depth``: events waiting; ``dispatched``, ``dropped``: totals.
"""

ConnectionStats = collections.namedtuple(
    'ConnectionStats', ['connected', 'disconnected_for', 'reconnects'])
ConnectionStats.__doc__ = """The hypervisor connection, for health and
metrics: ``disconnected_for`` is seconds since it was lost (None while
connected); ``reconnects`` counts reconnections since start-up.
"""


class VirtDriver(metaclass=abc.ABCMeta):
    """Listener registry plus the calls vmha makes on a hypervisor."""

    def __init__(self):
        self._listeners = []
        self._turnover_callbacks = []

    def register_event_listener(self, callback):
        """Call ``callback(event)`` for every event, in arrival order.

        Listeners run on the dispatcher (a greenthread or a thread,
        depending on the concurrency backend): they must not block.
        """
        self._listeners.append(callback)

    def emit_event(self, event):
        """Hand ``event`` to every listener.

        A listener that raises is logged with the domain and never keeps
        the event from the listeners after it.
        """
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                LOG.exception('Event listener %r failed on %s; the other '
                              'listeners still get it',
                              listener, event.describe())

    def register_turnover_callback(self, callback):
        """Call ``callback()`` on the dispatcher each time it turns over:
        after every batch of events, and at least once a second when idle
        (a listener's periodic work, such as retrying what it could not
        write, without a thread of its own)."""
        self._turnover_callbacks.append(callback)

    def turned_over(self):
        """Run the turnover callbacks (the dispatcher calls it)."""
        for callback in self._turnover_callbacks:
            try:
                callback()
            except Exception:
                LOG.exception('Turnover callback %r failed', callback)

    @abc.abstractmethod
    def init_host(self):
        """Connect and start delivering events.  Raises ConnectionFailed."""

    @abc.abstractmethod
    def cleanup(self):
        """Stop delivering events and close the connection."""

    @abc.abstractmethod
    def list_instances(self):
        """Every domain with its power state: a list of InstanceInfo."""

    @abc.abstractmethod
    def get_instance_info(self, uuid):
        """One domain's InstanceInfo.  Raises DomainNotFound."""

    @abc.abstractmethod
    def get_instance_metadata(self, uuid, namespace_uri):
        """The domain's metadata element in ``namespace_uri`` as XML
        text, or None.  Raises DomainNotFound."""

    def daemon_limits(self):
        """(where, limits) of the hypervisor daemon's call limits
        (``max_workers``, ``max_client_requests``), limits None when
        unreadable; None when the driver has no such daemon."""
        return None

    def get_metadata_batch(self, uuids, namespace_uri):
        """``get_instance_metadata`` of many domains in one call (one
        blocking job for the caller, not one per domain): a dict of each
        uuid to its XML text, None, or the ``VirtError`` its read raised
        (DomainNotFound, HypervisorError); drivers read them as cheaply
        as they can."""
        return _each(self.get_instance_metadata, uuids, namespace_uri)

    @abc.abstractmethod
    def set_instance_metadata(self, uuid, namespace_uri, key, xml):
        """Replace the domain's metadata element in ``namespace_uri``
        (XML namespace prefix ``key``) by the element ``xml``, or remove
        it (``xml`` None), in the running domain and in its persistent
        definition.  Raises DomainNotFound, HypervisorError."""

    @abc.abstractmethod
    def guest_agent_command(self, uuid, command, timeout):
        """Send ``command`` (a dict) to the guest agent, return its reply.

        Blocks up to ``timeout`` seconds: callers on the eventlet backend
        run it off the hub.  Raises NotSupported, AgentError,
        AgentTimeout or DomainNotFound.
        """

    @abc.abstractmethod
    def describe_guest(self, uuid, namespace_uri):
        """What the guest-agent monitor needs from the domain's live XML:
        a ``GuestXML(agent_channel, metadata)`` with the metadata element
        in ``namespace_uri``.  Raises DomainNotFound; ValueError for an
        XML that does not parse."""

    def describe_guests(self, uuids, namespace_uri):
        """``describe_guest`` of many domains in one call: a dict of each
        uuid to its ``GuestXML`` or the error it raised
        (DomainNotFound, HypervisorError, ValueError)."""
        return _each(self.describe_guest, uuids, namespace_uri)

    def channel_paths(self, uuids, name):
        """``channel_path`` of many domains in one call: a dict of each
        uuid to its path (or None) or the error it raised."""
        return _each(self.channel_path, uuids, name)

    @abc.abstractmethod
    def channel_path(self, uuid, name):
        """The host-side unix socket path of the domain's virtio-serial
        channel ``name`` (from its live XML), for vmha to connect to; None
        when there is no such channel, it is not a unix socket QEMU
        listens on, or it has no path (yet).  An unparsable XML is logged
        with the domain and gives None.  Raises DomainNotFound."""

    @abc.abstractmethod
    def get_guest_counters(self, uuid, disk=False):
        """Host-side counters of the guest (``guest.Counters``): CPU time
        and network always, disk only with ``disk`` (that one asks QEMU,
        so ask only while QEMU runs).  Raises NotSupported, DomainNotFound.
        """

    @abc.abstractmethod
    def reset_instance(self, uuid):
        """Hard-reset the guest (the reset button)."""

    @abc.abstractmethod
    def restart_instance(self, uuid):
        """Destroy the domain and start it again."""

    # Lifecycle actions (``request_action``).  Each blocks (a stopped
    # QEMU blocks it for as long as it is stopped): callers run them off
    # the dispatcher and the hub, with a bound.  Each returns a phrase
    # saying what it did, and raises DomainNotFound or HypervisorError.

    @abc.abstractmethod
    def stop_instance(self, uuid, shutdown_timeout):
        """Shut the guest down gracefully (the ACPI power button), and
        destroy the domain if it is still running after
        ``shutdown_timeout`` seconds (0: destroy at once), as nova's
        stop does."""

    @abc.abstractmethod
    def reboot_instance(self, uuid):
        """Reboot the guest gracefully (it runs its own shutdown)."""

    @abc.abstractmethod
    def pause_instance(self, uuid):
        """Pause the vCPUs; the memory stays in QEMU."""

    @abc.abstractmethod
    def unpause_instance(self, uuid):
        """Run the vCPUs of a paused domain again."""

    @abc.abstractmethod
    def suspend_instance(self, uuid):
        """Save the memory to disk and stop the domain (a managed save)."""

    @abc.abstractmethod
    def resume_instance(self, uuid):
        """Start a suspended domain again from its saved memory."""

    @abc.abstractmethod
    def destroy_instance(self, uuid):
        """Power the domain off at once (the power cord, not a graceful
        shutdown: a corrective action on a guest that no longer answers).
        """
    # Live migration: not abstract, so that a driver without migrations
    # (a test's) need not implement them.

    def job_stats(self, uuid):
        """The domain's current job as a hypervisor-neutral dict (see
        ``vmha.virt.libvirt.migration.neutral_stats``): ``active``,
        ``direction``, data total/processed/remaining, memory dirty
        rate, iteration, downtime, ``postcopy``, ``state_reason``.
        Raises DomainNotFound, HypervisorError."""
        raise NotImplementedError

    def live_migrate(self, uuid, destination_uri, features=(),
                     block_migration=False, bandwidth_mib=None):
        """Migrate the domain live to ``destination_uri`` (peer to peer);
        blocks until it ends: run it off the hub and the dispatcher.
        ``features``: {'postcopy', 'auto_converge'}.  Raises
        HypervisorError when the migration fails."""
        raise NotImplementedError

    def set_migration_downtime(self, uuid, downtime_ms):
        """Set the running migration's maximum downtime."""
        raise NotImplementedError

    def start_postcopy(self, uuid):
        """Switch the running migration to post-copy."""
        raise NotImplementedError

    def abort_job(self, uuid):
        """Abort the domain's running job (a migration)."""
        raise NotImplementedError

    @abc.abstractmethod
    def dispatch_stats(self):
        """A ``DispatchStats``; never blocks."""

    @abc.abstractmethod
    def connection_stats(self):
        """A ``ConnectionStats``; never blocks."""


def _each(function, uuids, *args):
    """{uuid: function(uuid, *args) or the error it raised}."""
    found = {}
    for uuid in uuids:
        try:
            found[uuid] = function(uuid, *args)
        except (exception.HypervisorError, ValueError) as error:
            found[uuid] = error
    return found
