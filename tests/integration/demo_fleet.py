"""The demo's real fleet: ``tools/demo.sh --real`` (``tools/demo_real.py``).

The same story as the embedded demo (``vmha.demo``), on the real-VM test
bed of :mod:`tests.integration.testbed`: a libvirtd of its own on
``qemu:///system``, and five QEMU guests (TCG unless KVM really works)
booting the test bed's tiny image, with qemu-ga.  Nothing is simulated:

* crash: SIGKILL of the guest's QEMU process (libvirt sends
  LIFECYCLE STOPPED_FAILED);
* hang: SIGSTOP of the guest's QEMU process (guest-ping times out, the
  vCPUs use no CPU); it gets SIGCONT before it is destroyed at the end;
* shutdown: ``virsh shutdown`` (ACPI power button; the guest powers off);
* libvirtd restart: SIGKILL of libvirtd, then a new one, as the test bed's
  ``Libvirtd.restart`` does; the crashed guest is started again with
  ``virsh start`` once libvirtd answers, racing vmha's reconnect.

Needs root and Debian (apt-get installs what is missing, the guest image
is built once into /var/cache/vmha-testbed); holds the test bed's session
lock, so it waits for a running real-VM test session and the other way
round.  Every guest it defined is destroyed and undefined at the end.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from tests.integration import services
from tests.integration import testbed
from vmha.virt.libvirt import driver as libvirt_driver


class RealFleet:
    """The story's fleet on real VMs (``vmha.demo`` lists the interface).

    :param backend: the concurrency backend's name
    :param unavailable: the exception class to raise when the test bed
        cannot run here (``vmha.demo.FleetUnavailable``)
    """

    uri = testbed.URI
    title = ('the real-VM test bed: a libvirtd of its own on %s and QEMU '
             'guests running qemu-ga (nothing simulated)' % testbed.URI)
    boot_timeout = 300.0
    hang_timeout = 60.0
    shutdown_timeout = 120.0
    notes = {
        'crash': 'SIGKILL of the guest\'s QEMU process',
        'hang': ("SIGSTOP of the guest's QEMU process: libvirt still says "
                 '"running", the guest agent does not answer, the vCPUs '
                 'stop'),
        'shutdown': '`virsh shutdown`: ACPI power button, the guest powers '
                    'off',
        'drop': 'SIGKILL of libvirtd, then a new libvirtd',
        'recover': ('`virsh start` as soon as the new libvirtd answers '
                    '(none can run while libvirtd is down): vmha sees its '
                    'event if it has reconnected by then, else its audit '
                    'finds it'),
    }

    def __init__(self, backend, unavailable=RuntimeError):
        self._backend = backend
        self._unavailable = unavailable
        self._session = contextlib.ExitStack()
        self.base_dir = None
        self.libvirtd = None
        self.domains = None
        self._names = {}  # story name -> domain name
        self._recover = []

    def _fail(self, what, error):
        first = str(error).strip().splitlines()[0] if str(error) else \
            type(error).__name__
        return self._unavailable('%s: %s (logs in %s)'
                                 % (what, first, self.base_dir))

    def prepare(self):
        """Install, build and start what the test bed needs."""
        if os.geteuid() != 0:
            raise self._unavailable(
                'the real-VM test bed needs root: it runs a libvirtd of its '
                'own and QEMU guests')
        if shutil.which('apt-get') is None:
            raise self._unavailable(
                'the real-VM test bed installs its Debian packages with '
                'apt-get, which this host does not have')
        self.base_dir = tempfile.mkdtemp(prefix='vmha-demo-real-')
        print('real-VM test bed: installing what is missing, building the '
              'guest image and starting libvirtd; logs in %s'
              % self.base_dir, flush=True)
        self.libvirtd = testbed.Libvirtd(os.path.join(self.base_dir,
                                                      'libvirtd'))
        self._session.enter_context(
            testbed.exclusive_session(self.libvirtd.timings))
        try:
            self.libvirtd.ensure_installed()
            self.libvirtd.start()
            image = testbed.GuestImage().build()
            self.domains = testbed.Domains(
                self.libvirtd, image, os.path.join(self.base_dir,
                                                   'domains'))
            self.domains.purge_stale()
        except (services.ServiceError, subprocess.SubprocessError,
                OSError) as error:
            self.close()
            raise self._fail('the real-VM test bed did not come up', error)

    def conf_defaults(self):
        return {
            ('libvirt', 'connection_uri'): self.uri,
            # Only the story's guests, whatever else runs here.
            ('monitoring', 'include_names'): [testbed.NAME_PREFIX + '*'],
            ('libvirt', 'reconnect_max_interval'): 2.0,
            # libvirt waits whole seconds for a real guest agent, and a
            # guest booting under TCG takes minutes to start qemu-ga.
            ('guest_agent', 'interval'): 2.0,
            ('guest_agent', 'timeout'): 1.0,
            ('guest_agent', 'discovery_timeout'): 120.0,
        }

    def make_driver(self, conf):
        return libvirt_driver.LibvirtDriver.from_conf(conf)

    def start(self):
        """Nothing: the guests are defined by ``boot``."""

    def boot(self, names):
        for name in names:
            guest = self.domains.define_guest(name)
            self._names[name] = guest.name
        for name in names:
            self.domains.start(self._names[name])
        return dict(self._names)

    def crash(self, name):
        return self.domains.kill9_qemu(self._names[name])

    def hang(self, name):
        self.domains.stop_qemu(self._names[name])
        return time.monotonic()

    def shutdown(self, name):
        when = time.monotonic()
        self.domains.virsh('shutdown', self._names[name],
                           name=self._names[name])
        return when

    def drop_libvirt(self):
        return self.libvirtd.kill9()

    def recover(self, name):
        self._recover.append(self._names[name])

    def restore_libvirt(self):
        self.libvirtd.start()
        when = time.monotonic()
        for name in self._recover:
            self.domains.start(name)
        self._recover = []
        return when

    def close(self):
        try:
            if self.domains is not None:
                errors = self.domains.cleanup()
                for error in errors:
                    print('demo fleet clean-up: %s'
                          % str(error).splitlines()[0], flush=True)
                self.domains = None
            if self.libvirtd is not None:
                self.libvirtd.stop()
        finally:
            self._session.close()
