"""The only module of vmha that imports libvirt.

Everything else talks to the narrow interface below, which lists just the
calls vmha makes: the default event loop, opening a connection, event and
close callbacks, keepalive, listing and looking up domains, domain state
and guest-agent commands, and (for the demo and the benchmark) creating and
driving domains on ``test:///default``.  Tests pass their own fake libvirt
module (``tests/fixtures/fakelibvirt.py``) that implements the same calls.

libvirt errors are translated into ``vmha.virt.exception`` types here, so
no caller ever catches ``libvirt.libvirtError``.
"""

import json
import math
import threading
import weakref

from vmha.virt import exception

try:
    import libvirt
    import libvirt_qemu
except ImportError:  # pragma: no cover - depends on the host
    libvirt = None
    libvirt_qemu = None

# virErrorNumber values the translation cares about (stable ABI).
_ERR_NO_SUPPORT = 3
_ERR_NO_DOMAIN = 42
_ERR_OPERATION_TIMEOUT = 68
_ERR_AGENT_UNRESPONSIVE = 86
_ERR_NO_DOMAIN_METADATA = 80
_METADATA_ELEMENT = 2  # VIR_DOMAIN_METADATA_ELEMENT
_AFFECT_LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
_AFFECT_CONFIG = 2  # VIR_DOMAIN_AFFECT_CONFIG
_STATS_STATE = 1  # VIR_DOMAIN_STATS_STATE

# libvirt has one default event loop per process: remember which libvirt
# modules (the real one, or a test's fake) already run theirs.
_event_loop_lock = threading.Lock()
_event_loops_started: weakref.WeakSet[object] = weakref.WeakSet()


def _translate(error, default=exception.HypervisorError):
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code == _ERR_NO_SUPPORT:
        return exception.NotSupported(message, code)
    if code == _ERR_NO_DOMAIN:
        return exception.DomainNotFound(message, code)
    return default(message, code)


class LibvirtAPI:
    """The libvirt module, reduced to what vmha uses.

    :param module: the libvirt module (default: the real one)
    :param qemu_module: the libvirt_qemu module (default: the real one)
    """

    def __init__(self, module=None, qemu_module=None):
        self._lv = module if module is not None else libvirt
        self._qemu = qemu_module if qemu_module is not None else libvirt_qemu
        if self._lv is None:
            raise exception.ConnectionFailed(
                'the libvirt Python binding is not installed '
                '(pip install libvirt-python)')

    def ensure_event_loop(self, start_thread, sleep):
        """Register libvirt's default event loop and run it, once per
        process, on the native thread ``start_thread(target)`` starts.

        Must run before the first connection is opened.  Returns True if
        this call started the loop.
        """
        with _event_loop_lock:
            if self._lv in _event_loops_started:
                return False
            # libvirt prints every error to stderr unless a handler is set;
            # vmha logs the errors it gets as exceptions instead.
            self._lv.registerErrorHandler(_ignore_error, None)
            self._lv.virEventRegisterDefaultImpl()
            _event_loops_started.add(self._lv)

        def run_forever():
            while True:
                try:
                    self._lv.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive whatever happens
                    sleep(0.1)
        start_thread(run_forever)
        return True

    def open(self, uri):
        """Open a read-write connection.  Raises ConnectionFailed."""
        try:
            conn = self._lv.open(uri)
        except self._lv.libvirtError as error:
            raise _translate(error, exception.ConnectionFailed)
        if conn is None:  # old bindings returned None instead of raising
            raise exception.ConnectionFailed('cannot open %s' % uri)
        return Connection(self, conn)


def _ignore_error(context, error):
    pass


class Connection:
    """One libvirt connection."""

    def __init__(self, api, conn):
        self._api = api
        self._lv = api._lv
        self._conn = conn
        self._event_handles = []

    def _call(self, method, *args):
        try:
            return method(*args)
        except self._lv.libvirtError as error:
            raise _translate(error)

    def register_domain_event(self, event_id, sink):
        """Call ``sink(event_id, uuid, name, args)`` for each event.

        ``args`` are the callback's arguments after the domain (the opaque
        argument removed).  The sink runs on libvirt's event-loop thread.
        Returns a handle for ``deregister_domain_event``.
        """
        def callback(conn, dom, *args):
            sink(event_id, dom.UUIDString(), dom.name(), args[:-1])
        handle = self._call(self._conn.domainEventRegisterAny, None,
                            event_id, callback, None)
        self._event_handles.append(handle)
        return handle

    def deregister_domain_event(self, handle):
        self._call(self._conn.domainEventDeregisterAny, handle)
        self._event_handles.remove(handle)

    def register_close_callback(self, callback):
        """Call ``callback(reason_code)`` when the connection closes."""
        def on_close(conn, reason, opaque):
            callback(reason)
        self._call(self._conn.registerCloseCallback, on_close, None)

    def set_keepalive(self, interval, count):
        """Raises NotSupported where the driver has no keepalive."""
        self._call(self._conn.setKeepAlive, interval, count)

    def is_alive(self):
        try:
            return bool(self._conn.isAlive())
        except self._lv.libvirtError:
            return False

    def close(self):
        """Deregister every callback, then close.

        libvirt keeps calling the callbacks of a closed connection as long
        as they are registered (the event loop is per process), so a
        replaced connection would go on feeding the queue.
        """
        for handle in self._event_handles:
            try:
                self._conn.domainEventDeregisterAny(handle)
            except self._lv.libvirtError:
                pass  # a dead connection has no callbacks left to call
        self._event_handles = []
        for method in (self._conn.unregisterCloseCallback,
                       self._conn.close):
            try:
                method()
            except self._lv.libvirtError:
                pass  # closing a dead connection: nothing left to lose

    def uri(self):
        return self._call(self._conn.getURI)

    def list_domains(self):
        return [Domain(self, dom)
                for dom in self._call(self._conn.listAllDomains, 0)]

    def domain_states(self):
        """[(Domain, state, reason)] for every domain, in one call where
        the driver can (getAllDomainStats), else one call per domain."""
        try:
            stats = self._call(self._conn.getAllDomainStats, _STATS_STATE, 0)
        except exception.NotSupported:
            return [(domain,) + domain.state()
                    for domain in self.list_domains()]
        return [(Domain(self, dom), values.get('state.state', 0),
                 values.get('state.reason', 0)) for dom, values in stats]

    def lookup(self, uuid):
        return Domain(self, self._call(self._conn.lookupByUUIDString, uuid))

    def domain_stats(self, domain, stats, flags=0):
        """One domain's ``virDomainListGetStats`` dict ({} if none)."""
        result = self._call(self._conn.domainListGetStats, [domain._dom],
                            stats, flags)
        return dict(result[0][1]) if result else {}

    # Scenario calls: the demo and the benchmark drive test:///default.
    def create_domain(self, xml):
        """Create and start a transient domain."""
        return Domain(self, self._call(self._conn.createXML, xml, 0))

    def define_domain(self, xml):
        return Domain(self, self._call(self._conn.defineXML, xml))


class Domain:
    """One libvirt domain."""

    def __init__(self, connection, dom):
        self._connection = connection
        self._dom = dom
        self.uuid = dom.UUIDString()
        self.name = dom.name()

    def _call(self, method, *args):
        return self._connection._call(method, *args)

    def state(self):
        """(state, reason) as libvirt numbers."""
        state, reason = self._call(self._dom.state, 0)
        return state, reason

    def xml(self):
        return self._call(self._dom.XMLDesc, 0)

    def cpu_time(self):
        """Nanoseconds of CPU the domain used (virDomainGetInfo: read
        from /proc, so it answers even while QEMU is stopped; the CPU
        group of virDomainListGetStats may wait on QEMU's monitor)."""
        return self._call(self._dom.info)[4]

    def metadata(self, namespace_uri):
        """The domain's metadata element in ``namespace_uri`` (XML text),
        or None when it has none."""
        try:
            return self._dom.metadata(_METADATA_ELEMENT, namespace_uri, 0)
        except self._connection._lv.libvirtError as error:
            if error.get_error_code() == _ERR_NO_DOMAIN_METADATA:
                return None
            raise _translate(error)

    def set_metadata(self, namespace_uri, key, xml):
        """Replace the domain's metadata element in ``namespace_uri``
        (prefix ``key``) by ``xml``, or remove it (``xml`` None).

        Both the running domain and its persistent definition, where it
        has them: the live XML is what a migration carries, the
        definition what a restart keeps."""
        flags = 0
        if self._call(self._dom.isActive):
            flags |= _AFFECT_LIVE
        if self._call(self._dom.isPersistent):
            flags |= _AFFECT_CONFIG
        self._call(self._dom.setMetadata, _METADATA_ELEMENT, xml, key,
                   namespace_uri, flags)

    def agent_command(self, command, timeout):
        """Send a guest-agent command (a dict); return the decoded reply.

        libvirt takes whole seconds (0 would mean "do not wait"): the
        timeout is rounded up."""
        api = self._connection._api
        try:
            reply = api._qemu.qemuAgentCommand(
                self._dom, json.dumps(command), max(1, math.ceil(timeout)),
                0)
        except self._connection._lv.libvirtError as error:
            code = error.get_error_code()
            message = error.get_error_message() or str(error)
            if code in (_ERR_NO_SUPPORT, _ERR_NO_DOMAIN):
                raise _translate(error)
            if code in (_ERR_OPERATION_TIMEOUT, _ERR_AGENT_UNRESPONSIVE):
                raise exception.AgentTimeout(message, code)
            raise exception.AgentError(message, code)
        try:
            return json.loads(reply)
        except (TypeError, ValueError):
            raise exception.AgentError(
                'guest agent of %s sent a reply that is not JSON: %.200r'
                % (self.uuid, reply))

    # Live migration (vmha.virt.libvirt.migration holds the numbers).
    def job_stats(self):
        """virDomainGetJobStats of the current job: a dict of libvirt's
        typed parameters ('type' 0 when there is no job)."""
        return dict(self._call(self._dom.jobStats, 0))

    def migrate_to_uri3(self, destination_uri, params, flags):
        """virDomainMigrateToURI3, peer to peer: blocks until the
        migration ends (raises HypervisorError when it fails)."""
        self._call(self._dom.migrateToURI3, destination_uri, dict(params),
                   flags)

    def migrate_set_max_downtime(self, downtime_ms):
        self._call(self._dom.migrateSetMaxDowntime, int(downtime_ms), 0)

    def migrate_start_postcopy(self):
        self._call(self._dom.migrateStartPostCopy, 0)

    def abort_job(self):
        self._call(self._dom.abortJob)

    # Scenario calls.
    def start(self):
        self._call(self._dom.create)

    def suspend(self):
        self._call(self._dom.suspend)

    def resume(self):
        self._call(self._dom.resume)

    def shutdown(self):
        self._call(self._dom.shutdown)

    def destroy(self):
        self._call(self._dom.destroy)

    def reset(self):
        """A hard reset, as the reset button (virDomainReset)."""
        self._call(self._dom.reset, 0)

    def reboot(self):
        """A graceful reboot (virDomainReboot, default method: ACPI or
        the guest agent, as the hypervisor chooses); returns at once."""
        self._call(self._dom.reboot, 0)

    def managed_save(self):
        """Save the memory to libvirt's managed image and stop the
        domain (virDomainManagedSave); ``start`` restores it."""
        self._call(self._dom.managedSave, 0)

    def has_managed_save(self):
        return bool(self._call(self._dom.hasManagedSaveImage, 0))

    def undefine(self):
        self._call(self._dom.undefine)
