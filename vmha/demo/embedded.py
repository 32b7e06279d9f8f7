"""The demo's embedded fleet: five domains on libvirt's test:///default.

test:///default is libvirt's daemon-less test driver: domains, states and
lifecycle events are real libvirt, in this process, but there is no QEMU,
no guest and no libvirtd.  What the story needs from those is simulated
here, as close to the edge of vmha as possible, so that everything from
the libvirt callback on is vmha's real code:

* a QEMU crash: the domain is destroyed, and the event libvirt sends when
  QEMU dies (LIFECYCLE STOPPED_FAILED) is queued into vmha's event
  handler, as the libvirt callback would queue it;
* the guest agents: ``DemoDriver`` answers guest-ping for running guests,
  and for a hung guest waits the timeout and raises the ``AgentTimeout``
  libvirt raises; its host-side counters stop (the CPU time of a stopped
  QEMU does not move);
* libvirtd going away: the close callback vmha registered fires (reason
  EOF) and new connections are refused for a moment.  The fleet keeps a
  connection of its own open throughout, because test:///default forgets
  its domains when the process's last connection to it closes.

The domains carry a real guest-agent channel in their XML, so vmha reads
"has an agent" from the XML as on a real host.
"""

import time
import uuid as uuid_lib

from vmha import concurrency
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt.libvirt import api as libvirt_api
from vmha.virt.libvirt import driver as libvirt_driver
from vmha.virt.libvirt import event_builder
from vmha.virt.libvirt import guest

URI = 'test:///default'

_XML = """<domain type='test'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <channel type='unix'>
      <source mode='bind' path='/run/vmha-demo/%(name)s.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>"""

# libvirt's numbers for what the simulation raises (stable ABI).
_ERR_OPERATION_INVALID = 55
_ERR_AGENT_UNRESPONSIVE = 86
_RUNNING = 1
_CLOSE_REASON_EOF = 1

# A live guest's host-side counters grow at these rates (per second).
_CPU_SHARE = 0.2
_PACKETS = 40
_DISK_REQUESTS = 12

# How long "libvirtd" refuses connections while it restarts (seconds).
OUTAGE = 1.0


class SimulatedHost:
    """The parts of a compute host test:///default does not have.

    :param native_sleep: sleeps a native thread (the pings run on the
        guest-agent monitor's native threads)
    :param clock: monotonic clock
    """

    def __init__(self, native_sleep, clock=time.monotonic):
        self._native_sleep = native_sleep
        self._clock = clock
        self.libvirtd_down = False
        self._close_callbacks = {}  # connection id -> callback
        self._booted = {}  # uuid -> monotonic time of boot
        self._hung = {}  # uuid -> monotonic time the guest hung

    # --- libvirtd -----------------------------------------------------------

    def check_libvirtd(self):
        if self.libvirtd_down:
            raise exception.HypervisorUnavailable(
                "Failed to connect socket to '/var/run/libvirt/libvirt-"
                "sock': Connection refused (simulated libvirtd restart)")

    def watch_close(self, key, callback):
        self._close_callbacks[key] = callback

    def forget_close(self, key):
        self._close_callbacks.pop(key, None)

    def stop_libvirtd(self):
        """Close every connection as libvirtd's exit would: each close
        callback is called with reason EOF."""
        self.libvirtd_down = True
        for callback in list(self._close_callbacks.values()):
            callback(_CLOSE_REASON_EOF)

    def start_libvirtd(self):
        self.libvirtd_down = False

    # --- guests -------------------------------------------------------------

    def booted(self, uuid):
        self._booted[uuid] = self._clock()
        self._hung.pop(uuid, None)

    def hang(self, uuid):
        self._hung[uuid] = self._clock()

    def ping(self, uuid, timeout):
        """A guest-ping reply, or the error libvirt gives for a guest
        whose agent does not answer within ``timeout``."""
        if uuid in self._hung:
            self._native_sleep(timeout)
            raise exception.AgentTimeout(
                'Guest agent is not responding: Guest agent not available '
                'for now', _ERR_AGENT_UNRESPONSIVE)
        return {'return': {}}

    def counters(self, uuid, disk):
        """Host-side counters that grow while the guest lives and stop
        when it hangs."""
        now = self._hung.get(uuid, self._clock())
        alive = max(0.0, now - self._booted.get(uuid, now))
        return guest.Counters(
            cpu_time=int(alive * _CPU_SHARE * 1e9),
            net_tx_packets=int(alive * _PACKETS),
            disk_requests=int(alive * _DISK_REQUESTS) if disk else None)


class DemoAPI(libvirt_api.LibvirtAPI):
    """The real libvirt binding, except that opening a connection fails
    while the simulated libvirtd is down, and close callbacks can be
    fired by ``SimulatedHost.stop_libvirtd``."""

    def __init__(self, host):
        super().__init__()
        self._host = host

    def open(self, uri):
        if self._host.libvirtd_down:
            raise exception.ConnectionFailed(
                "Failed to connect socket to '/var/run/libvirt/libvirt-"
                "sock': Connection refused (simulated libvirtd restart)")
        return _Connection(super().open(uri), self._host)


class _Connection:
    """A ``libvirt_api.Connection`` whose close callback the simulated
    libvirtd can fire."""

    def __init__(self, connection, host):
        self._connection = connection
        self._host = host

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def register_close_callback(self, callback):
        self._connection.register_close_callback(callback)
        self._host.watch_close(id(self), callback)

    def close(self):
        self._host.forget_close(id(self))
        self._connection.close()


class DemoDriver(libvirt_driver.LibvirtDriver):
    """The libvirt driver with the guest side simulated (see the module
    docstring).  Everything else is the real driver on test:///default."""

    simulation: SimulatedHost

    @classmethod
    def for_demo(cls, conf, simulation):
        driver = cls.from_conf(conf, api=DemoAPI(simulation))
        driver.simulation = simulation
        return driver

    def _running(self, uuid):
        state, _ = self.agent_connections.call(
            lambda conn: conn.lookup(uuid).state())
        return state == _RUNNING

    def guest_agent_command(self, uuid, command, timeout):
        self.simulation.check_libvirtd()
        if not self._running(uuid):
            raise exception.AgentError(
                'Requested operation is not valid: domain is not running',
                _ERR_OPERATION_INVALID)
        if command.get('execute') != 'guest-ping':
            raise exception.NotSupported(
                'the demo guest agent only answers guest-ping')
        return self.simulation.ping(uuid, timeout)

    def get_guest_counters(self, uuid, disk=False):
        self.simulation.check_libvirtd()
        self.agent_connections.call(lambda conn: conn.lookup(uuid))
        return self.simulation.counters(uuid, disk)


class EmbeddedFleet:
    """The story's fleet on test:///default (see ``vmha.demo`` for the
    interface every fleet has)."""

    uri = URI
    title = ("libvirt's daemon-less test:///default driver (no QEMU, no "
             "guest, no libvirtd: the crash, the guest agents and the "
             "libvirtd restart are simulated, as each step says)")
    boot_timeout = 10.0
    hang_timeout = 8.0
    shutdown_timeout = 10.0
    notes = {
        'crash': ('simulated: test:///default has no QEMU to kill, so the '
                  'demo destroys the domain and queues the event libvirt '
                  'sends when QEMU dies (LIFECYCLE STOPPED_FAILED) into '
                  "vmha's event handler, as libvirt's callback does (the "
                  'STOPPED_DESTROYED test:///default reports for the '
                  'destroy is held back, and cancelled by it)'),
        'hang': ("simulated: from now on the guest's agent leaves "
                 'guest-ping unanswered until the timeout (libvirt\'s '
                 '"Guest agent is not responding") and its vCPUs use no '
                 'more CPU, as with a stopped QEMU'),
        'shutdown': 'virDomainShutdown, as `virsh shutdown` does',
        'drop': ("simulated: vmha's libvirt connection closes as when "
                 'libvirtd exits (close callback, reason EOF) and new '
                 'connections are refused for %.1fs' % OUTAGE),
        'recover': ('started again through the demo\'s own connection, '
                    'which vmha does not watch: nobody tells vmha'),
    }

    def __init__(self, backend):
        self._backend = concurrency.get(backend)
        self.simulation = SimulatedHost(self._backend.native_sleep)
        self._driver = None
        self._conn = None
        self._domains = {}
        self._dropped_at = None
        self._stopped_delay = 0.0

    def prepare(self):
        """Nothing to set up: test:///default lives in this process."""

    def conf_defaults(self):
        return {}

    def make_driver(self, conf):
        self._driver = DemoDriver.for_demo(conf, self.simulation)
        self._stopped_delay = conf.events.stopped_delay
        return self._driver

    def start(self):
        """Open the fleet's own connection (after vmha's: libvirt's event
        loop must be registered before the first connection opens)."""
        self._conn = self._call(libvirt_api.LibvirtAPI().open, URI)

    def close(self):
        """Remove the fleet's domains (test:///default outlives the demo
        while any other connection of the process is open)."""
        for domain in self._domains.values():
            for remove in (domain.destroy, domain.undefine):
                try:
                    self._call(remove)
                except exception.HypervisorError:
                    pass  # not running, or gone already
        self._domains = {}
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, function, *args):
        # libvirt calls off the eventlet hub, as vmha makes them: the
        # dispatcher goes on meanwhile.
        return self._backend.run_blocking(function, *args)

    def boot(self, names):
        for name in names:
            self._domains[name] = self._call(
                self._conn.define_domain,
                _XML % {'name': name, 'uuid': uuid_lib.uuid4()})
        for name in names:
            self._start(name)
        return {name: name for name in names}

    def _start(self, name):
        domain = self._domains[name]
        self._call(domain.start)
        self.simulation.booted(domain.uuid)

    def crash(self, name):
        domain = self._domains[name]
        self._call(domain.destroy)
        # Let test:///default's own STOPPED_DESTROYED reach the handler
        # first: the STOPPED_FAILED after it then cancels it, as the only
        # event of a real crash.
        handler = self._driver.host.handler
        deadline = time.monotonic() + (1.0 if self._stopped_delay else 0)
        while time.monotonic() < deadline and \
                domain.uuid not in _held_back(handler):
            self._backend.sleep(0.005)
        crashed = handler.clock()
        handler.enqueue(event_builder.RawEvent(
            time.time(), crashed, ev.VIR_EVENT_ID_LIFECYCLE, domain.uuid,
            domain.name, (ev.VIR_LIFECYCLE_STOPPED, ev.STOPPED_FAILED)))
        return crashed

    def hang(self, name):
        self.simulation.hang(self._domains[name].uuid)
        return time.monotonic()

    def shutdown(self, name):
        self._call(self._domains[name].shutdown)
        return time.monotonic()

    def drop_libvirt(self):
        self._dropped_at = time.monotonic()
        self.simulation.stop_libvirtd()
        return self._dropped_at

    def recover(self, name):
        self._start(name)

    def restore_libvirt(self):
        """Let connections in again, once the outage has lasted OUTAGE."""
        self._backend.sleep(max(0.0, self._dropped_at + OUTAGE
                                - time.monotonic()))
        self.simulation.start_libvirtd()
        return time.monotonic()


def _held_back(handler):
    while True:
        try:
            return handler.held_back()
        except RuntimeError:  # the dispatcher changed it meanwhile
            continue
