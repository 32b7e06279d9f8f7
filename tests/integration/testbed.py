"""Real virtual machines for the tests: libvirtd, a tiny guest, domains.

Plain Python (no pytest), like :mod:`tests.integration.services`, so the
demo, a benchmark or a shell can drive the same test bed::

    daemon = Libvirtd('/tmp/tb/libvirtd')
    daemon.ensure_installed()              # apt-get what is missing
    daemon.start()                         # virtlogd + libvirtd, by hand
    image = GuestImage()                   # kernel + initramfs, cached
    image.build()
    domains = Domains(daemon, image, '/tmp/tb/domains')
    guest = domains.create('demo')         # defined, started
    guest.wait_for_agent()                 # seconds to the first ping
    guest.panic()                          # or kill_agent(), hang(), ...
    domains.cleanup()                      # destroy + undefine ours
    daemon.stop()

Facts this module relies on (Debian 12: libvirt 9.0.0, QEMU 7.2, guest
kernel linux-image-6.1.0-*-amd64; container without systemd, PID 1 is
not an init):

* ``virtlogd`` and ``libvirtd`` run in the foreground as children of
  this process (their own session, so a Ctrl-C of the tests does not
  reach them); their PIDs are the ones we stop.  The stock
  ``/etc/libvirt/qemu.conf`` works (verified: no root user, no cgroup or
  security driver change is needed): QEMU runs as libvirt-qemu with the
  DAC driver, which chowns the kernel and initramfs while a domain runs
  and gives them back afterwards, and libvirt uses the cgroup v1
  controllers under /machine.  Nothing of /etc/libvirt is changed;
  logging goes to ``base_dir`` through ``LIBVIRT_LOG_OUTPUTS``.  The
  kernel's postinst builds no host initramfs (``INITRD=No``): the
  guest brings its own.
* KVM does not work on these machines: /dev/kvm exists but belongs to
  ``kvm_pvm`` and the CPU has no vmx/svm.  Domains use
  ``<domain type='qemu'>`` (TCG) unless :func:`detect_virt_type` finds a
  KVM that really works.
* The guest boots the Debian kernel straight into an initramfs (no
  disk): static busybox, qemu-ga and the libraries ``ldd`` names, and the
  virtio, pvpanic, watchdog and ACPI button modules in dependency order
  (they are all modules in Debian's 6.1 kernel).  There is no udev, so
  the guest makes /dev/virtio-ports/<name> itself.  The kernel boots
  uncompressed through its PVH entry (:func:`pvh_kernel`): 256 MiB guests
  answer their first guest-ping 4-6 s after ``virsh start`` under TCG
  (7-9 s from the compressed bzImage); each QEMU holds about 260 MiB.
* The guest goes down in order, as a real one does.  acpid runs busybox
  ``poweroff`` on the ACPI power button; /sbin/shutdown, which qemu-ga's
  guest-shutdown runs as ``shutdown -h -P|-H|-r +0 MESSAGE``, reboots on
  ``-r`` and powers off otherwise.  busybox init then stops every process
  (qemu-ga closes its channel) and the kernel powers off or resets about
  2 s later: ``virsh shutdown --mode acpi`` reaches ``shut off
  (shutdown)`` in ~3.5 s, and after ``virsh reboot`` (agent or acpi
  mode, ``on_reboot`` restart) the new boot's agent answers in 5-6 s.
* Commands reach the guest over a second virtio-serial channel,
  ``org.vmha.control.0``, not through qemu-ga: they must work when the
  agent is dead or stopped (kill it, then panic; freeze it, then thaw
  it).  A command is one line; the guest answers ``ack <line>`` before
  acting on it and ``done <line> <status>`` after.  The same commands can
  be given at boot on the kernel command line (``vmha.do=panic@5``); see
  guest/vmha-do for the list.
"""

import base64
import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid as uuid_lib
from xml.etree import ElementTree

from tests.integration import guest_python
from tests.integration import services

HERE = pathlib.Path(__file__).resolve().parent
GUEST_FILES = HERE / 'guest'

URI = 'qemu:///system'
NAME_PREFIX = 'vmha-it-'
AGENT_CHANNEL = 'org.qemu.guest_agent.0'
CONTROL_CHANNEL = 'org.vmha.control.0'
HEARTBEAT_CHANNEL = 'org.vmha.heartbeat.0'

# Everything the test bed needs from Debian, in one apt-get call.
# libvirt-daemon-system pulls systemd in as a dependency; nothing of it
# runs.  kmod gives modprobe/modinfo to the image builder.
PACKAGES = (
    'libvirt-daemon-system', 'libvirt-daemon-driver-qemu',
    'libvirt-clients', 'qemu-system-x86', 'qemu-guest-agent',
    'busybox-static', 'linux-image-amd64', 'kmod', 'python3.11-minimal',
)
APT_LOCK = pathlib.Path('/tmp/vmha-testbed-apt.lock')
SESSION_LOCK = pathlib.Path('/tmp/vmha-testbed-session.lock')

LIBVIRTD_SOCKET = pathlib.Path('/run/libvirt/libvirt-sock')
VIRTLOGD_SOCKET = pathlib.Path('/run/libvirt/virtlogd-sock')
LIBVIRTD_PIDFILE = pathlib.Path('/run/libvirtd.pid')
VIRTLOGD_PIDFILE = pathlib.Path('/run/virtlogd.pid')
QEMU_RUN_DIR = pathlib.Path('/run/libvirt/qemu')
QEMU_LOG_DIR = pathlib.Path('/var/log/libvirt/qemu')
# Daemon processes get a plain environment, not the test virtualenv's.
DAEMON_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'

# The guest image is shared by sessions and must be readable by the
# libvirt-qemu user: not under pytest's private (0700) basetemp.
DEFAULT_IMAGE_CACHE = pathlib.Path(
    os.environ.get('VMHA_TESTBED_CACHE', '/var/cache/vmha-testbed'))


class TestbedError(services.ServiceError):
    """The test bed could not install, build, start or drive something.

    The message carries the tails of the logs that explain it.
    """

    __test__ = False  # not a test class, whatever pytest thinks


# -- installing ------------------------------------------------------------

def package_versions(packages):
    """{package: version} of the installed ones among ``packages``."""
    result = subprocess.run(
        ['dpkg-query', '-W', '-f', '${Package} ${Version} '
         '${db:Status-Abbrev}\n', *packages],
        capture_output=True, text=True, timeout=60)
    versions = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == 'ii':
            versions[parts[0]] = parts[1]
    return versions


def missing_packages(packages=PACKAGES):
    installed = package_versions(packages)
    return [name for name in packages if name not in installed]


@contextlib.contextmanager
def no_service_start():
    """Keep package scripts from starting daemons (no systemd here).

    deb-systemd-invoke and invoke-rc.d ask /usr/sbin/policy-rc.d; exit
    status 101 means "do not start".  Container images usually ship one;
    if this machine does not, one is there for the install only.
    """
    policy = pathlib.Path('/usr/sbin/policy-rc.d')
    if policy.exists():
        yield
        return
    policy.write_text('#!/bin/sh\n# vmha test bed\nexit 101\n')
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


def ensure_packages(log_path, packages=PACKAGES):
    """apt-get install whatever of ``packages`` is missing.

    Returns the seconds it took, or None if nothing was missing.  One
    session installs at a time (a lock file); apt's own lock is waited
    for up to 600 s.  ``INITRD=No`` stops the kernel's postinst from
    building an initramfs for the host (the guest brings its own), which
    is most of the kernel's install time.
    """
    if not missing_packages(packages):
        return None
    log_path = pathlib.Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with services.file_lock(APT_LOCK):
        missing = missing_packages(packages)
        if not missing:
            return None
        started = time.monotonic()
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive',
                   INITRD='No')
        command = ['apt-get', '-o', 'DPkg::Lock::Timeout=600', 'install',
                   '-y', '--no-install-recommends', *missing]
        with no_service_start():
            try:
                services.run(command, log_path, 1800, env=env,
                             what='apt-get install')
            except services.ServiceError:
                # Stale or missing package lists: refresh once, retry.
                services.run(['apt-get', '-o', 'DPkg::Lock::Timeout=600',
                              'update'], log_path, 600, env=env,
                             what='apt-get update')
                services.run(command, log_path, 1800, env=env,
                             what='apt-get install')
        still = missing_packages(packages)
        if still:
            raise TestbedError('still not installed: %s\n%s'
                               % (' '.join(still),
                                  services.log_tail([log_path])))
        return time.monotonic() - started


def detect_virt_type():
    """'kvm' if KVM really works here, else 'qemu' (TCG).

    ``VMHA_TESTBED_VIRT_TYPE`` forces the answer.  Opening /dev/kvm is
    not enough: on these machines it belongs to ``kvm_pvm``, which even
    creates VMs (KVM_CREATE_VM succeeds) but a guest never runs.  KVM
    counts only with hardware virtualization (vmx or svm in the CPU
    flags), kvm_intel or kvm_amd loaded, and /dev/kvm answering
    KVM_GET_API_VERSION with 12.
    """
    forced = os.environ.get('VMHA_TESTBED_VIRT_TYPE')
    if forced:
        return forced
    try:
        cpuinfo = pathlib.Path('/proc/cpuinfo').read_text()
    except OSError:
        return 'qemu'
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith('flags'):
            flags.update(line.split(':', 1)[1].split())
    if not flags & {'vmx', 'svm'}:
        return 'qemu'
    if not any(pathlib.Path('/sys/module', name).exists()
               for name in ('kvm_intel', 'kvm_amd')):
        return 'qemu'
    try:
        fd = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 'qemu'
    try:
        api_version = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
    except OSError:
        return 'qemu'
    finally:
        os.close(fd)
    return 'kvm' if api_version == 12 else 'qemu'


@contextlib.contextmanager
def exclusive_session(timings=None):
    """Hold the test bed for this process: other sessions wait here.

    Real-VM tests kill, hang and restart the one libvirtd of the machine;
    two sessions at once would break each other's tests.  The time spent
    waiting goes to ``timings['waited for another session']``.
    """
    SESSION_LOCK.touch(exist_ok=True)
    started = time.monotonic()
    with services.file_lock(SESSION_LOCK):
        waited = time.monotonic() - started
        if timings is not None and waited > 0.5:
            timings['waited for another session'] = waited
        yield


def pid_alive(pid):
    """Whether ``pid`` runs (a zombie does not count)."""
    if not pid:
        return False
    try:
        fields = pathlib.Path('/proc/%d/stat' % pid).read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name.
    return fields.rsplit(')', 1)[-1].split()[0] not in ('Z', 'X')


def read_pid(path):
    try:
        return int(pathlib.Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def socket_answers(path, timeout=1.0):
    """Whether something accepts connections on the unix socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# -- libvirtd --------------------------------------------------------------

class Libvirtd:
    """virtlogd and libvirtd, started by hand (there is no systemd).

    Both run in the foreground as children of this process, in their own
    session, with their output and a warnings-and-errors log in
    ``base_dir``.  If a libvirtd already answers, :meth:`start` reuses it
    and :meth:`stop` leaves it running; the same holds for virtlogd.
    :meth:`kill9` and :meth:`restart` act on whichever libvirtd runs
    (tests of "libvirtd was killed" need that); one that replaces a
    reused daemon is left running too, so the machine ends as it began.

    Running QEMU processes survive libvirtd stopping or dying; a new
    libvirtd takes them over.  Stop the domains first
    (:meth:`Domains.cleanup`) to leave nothing behind.
    """

    uri = URI

    def __init__(self, base_dir, log_level=3):
        self.base_dir = pathlib.Path(base_dir)
        self.log_level = log_level
        self.timings = {}
        self.reused = False
        self.starts = 0  # how many libvirtd this object started
        self._process = None
        self._virtlogd = None
        self._frozen = None
        self.install_log = self.base_dir / 'apt-get.log'
        self.log_file = self.base_dir / 'libvirtd.log'
        self.stdout_log = self.base_dir / 'libvirtd.out'
        self.virtlogd_log = self.base_dir / 'virtlogd.out'

    @property
    def pid(self):
        """PID of the libvirtd that runs now (ours or reused), or None."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        pid = read_pid(LIBVIRTD_PIDFILE)
        return pid if pid_alive(pid) else None

    @property
    def virtlogd_pid(self):
        if self._virtlogd is not None and self._virtlogd.poll() is None:
            return self._virtlogd.pid
        pid = read_pid(VIRTLOGD_PIDFILE)
        return pid if pid_alive(pid) else None

    def log_tail(self, lines=40, skip=None):
        """The tails of libvirtd's and virtlogd's logs, leaving out the
        lines that contain ``skip``."""
        parts = []
        for path in (self.stdout_log, self.log_file, self.virtlogd_log):
            try:
                text = path.read_text(errors='replace').splitlines()
            except OSError:
                continue
            if skip:
                text = [line for line in text if skip not in line]
            text = text[-lines:]
            parts.append('--- %s (last %d lines)\n%s'
                         % (path, len(text), '\n'.join(text)))
        return '\n'.join(parts) or '(no libvirtd log written: reused?)'

    def ensure_installed(self):
        """apt-get install every package of the test bed that is missing.
        """
        seconds = ensure_packages(self.install_log)
        if seconds is not None:
            self.timings['install'] = seconds

    def answers(self, timeout=10):
        """Whether libvirtd accepts a qemu:///system connection now."""
        if not socket_answers(LIBVIRTD_SOCKET):
            return False
        try:
            result = subprocess.run(
                ['virsh', '-q', '-c', self.uri, 'uri'], capture_output=True,
                stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _env(self):
        env = {'PATH': DAEMON_PATH, 'LANG': 'C.UTF-8', 'HOME': '/root'}
        env['LIBVIRT_LOG_OUTPUTS'] = '%d:file:%s' % (self.log_level,
                                                     self.log_file)
        return env

    def _spawn(self, command, log_path):
        with open(log_path, 'a') as out:
            out.write('\n$ %s  (%s)\n' % (' '.join(command),
                                         time.strftime('%H:%M:%S')))
            out.flush()
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(),
                start_new_session=True)

    def start(self, timeout=60):
        """Start virtlogd and libvirtd unless they answer already."""
        if self._process is not None and self._process.poll() is None:
            return
        if self.answers():
            if self._process is None:
                self.reused = True
            return
        self.ensure_installed()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if not socket_answers(VIRTLOGD_SOCKET):
            self._virtlogd = self._spawn(['virtlogd'], self.virtlogd_log)
            if not services.wait_until(
                    lambda: socket_answers(VIRTLOGD_SOCKET)
                    or self._virtlogd.poll() is not None, timeout):
                raise TestbedError('virtlogd did not answer within %ss\n%s'
                                   % (timeout, self.log_tail()))
            if self._virtlogd.poll() is not None:
                raise TestbedError('virtlogd exited with status %s\n%s'
                                   % (self._virtlogd.returncode,
                                      self.log_tail()))
        self._process = self._spawn(['libvirtd'], self.stdout_log)
        process = self._process
        if not services.wait_until(
                lambda: process.poll() is not None or self.answers(),
                timeout, interval=0.05):
            self.kill9()
            raise TestbedError('libvirtd did not answer within %ss\n%s'
                               % (timeout, self.log_tail()))
        if process.poll() is not None:
            raise TestbedError('libvirtd exited with status %s\n%s'
                               % (process.returncode, self.log_tail()))
        self.timings['restart' if self.starts else 'start'] = (
            time.monotonic() - started)
        self.starts += 1

    def kill9(self, timeout=30):
        """SIGKILL libvirtd (ours or reused) and wait until it is gone.

        Returns ``time.monotonic()`` right after the signal was sent.
        """
        pid = self.pid
        if pid is None:
            raise TestbedError('no libvirtd runs\n%s' % self.log_tail())
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        self._wait_gone(pid, timeout)
        return killed

    def _wait_gone(self, pid, timeout):
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TestbedError('libvirtd %d still runs %ss after '
                                   'SIGKILL' % (pid, timeout))
            self._process = None
        elif not services.wait_until(lambda: not pid_alive(pid), timeout):
            raise TestbedError('libvirtd %d still runs %ss after SIGKILL'
                               % (pid, timeout))

    def freeze(self):
        """SIGSTOP libvirtd: it hangs (clients notice only through
        keepalive).  Returns ``time.monotonic()`` after the signal."""
        pid = self.pid
        if pid is None:
            raise TestbedError('no libvirtd runs\n%s' % self.log_tail())
        os.kill(pid, signal.SIGSTOP)
        self._frozen = pid
        return time.monotonic()

    def thaw(self):
        """SIGCONT the libvirtd :meth:`freeze` stopped."""
        pid, self._frozen = self._frozen, None
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    @contextlib.contextmanager
    def hung(self):
        """``with libvirtd.hung(): ...``: the block runs with libvirtd
        stopped (SIGSTOP), resumed afterwards whatever happens."""
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def restart(self, kill=True, timeout=60):
        """Stop libvirtd (SIGKILL by default, else SIGTERM), start anew.

        Running domains survive.  The new libvirtd answers before it has
        reconnected to their guest agents: for ~0.1 s agent commands may
        fail "QEMU guest agent is not connected" (use wait_for_agent).
        """
        pid = self.pid
        if pid is not None:
            if kill:
                self.kill9()
            else:
                os.kill(pid, signal.SIGTERM)
                self._wait_gone(pid, timeout)
        self.start(timeout)

    def stop(self, timeout=30):
        """Stop what this object started, by PID; leave a reused daemon.
        """
        self.thaw()
        if self.reused:
            return
        for process in (self._process, self._virtlogd):
            services.stop_process(process, timeout)
        self._process = None
        self._virtlogd = None


# -- the guest image -------------------------------------------------------

# Modules the guest loads (with their dependencies, in order), if the
# kernel has them as modules: virtio-serial for the agent and control
# channels, pvpanic (ISA: pvpanic-mmio) for CRASHED/PANICKED, the
# i6300esb watchdog, the ACPI power button for an ACPI shutdown.
GUEST_MODULES = ('virtio_pci', 'virtio_console', 'pvpanic_mmio',
                 'pvpanic_pci', 'i6300esb', 'button', 'evdev')
# Files of tests/integration/guest and where they go in the image.
GUEST_SCRIPTS = {
    'init': ('init', 0o755),
    'lib.sh': ('etc/vmha/lib.sh', 0o644),
    'inittab': ('etc/inittab', 0o644),
    'vmha-agent': ('sbin/vmha-agent', 0o755),
    'vmha-control': ('sbin/vmha-control', 0o755),
    'vmha-do': ('sbin/vmha-do', 0o755),
    'vmha-heartbeat': ('sbin/vmha-heartbeat', 0o755),
    'heartbeat.conf': ('etc/vmha-guest/heartbeat.conf', 0o644),
    'health-check': ('etc/vmha-guest/health-check', 0o755),
    'event-handler': ('etc/vmha-guest/event-handler', 0o755),
    'shutdown': ('sbin/shutdown', 0o755),
    'power-button': ('etc/acpi/PWRF/00000080', 0o755),
}
BUSYBOX = pathlib.Path('/bin/busybox')
QEMU_GA = pathlib.Path('/usr/sbin/qemu-ga')
# Bump when the image layout changes in a way the inputs do not show.
IMAGE_FORMAT = 3
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point note


class Cpio:
    """A newc ("070701") cpio archive written from memory, as the kernel
    unpacks an initramfs.  Owner root, time 0: the same inputs give the
    same bytes."""

    def __init__(self):
        self._out = bytearray()
        self._inode = 0
        self._seen = set()

    def _entry(self, name, mode, data=b'', rdev=(0, 0)):
        self._inode += 1
        name = name.encode() + b'\0'
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(name), 0)
        self._out += b'070701' + b''.join(b'%08X' % f for f in fields)
        self._out += name + b'\0' * (-(110 + len(name)) % 4)
        self._out += data + b'\0' * (-len(data) % 4)

    def directory(self, path):
        """``path`` and its missing parents."""
        parts = pathlib.PurePosixPath(path).parts
        for i in range(1, len(parts) + 1):
            name = '/'.join(parts[:i])
            if name not in self._seen:
                self._seen.add(name)
                self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, path, data, mode=0o644):
        self.directory(pathlib.PurePosixPath(path).parent)
        self._entry(str(path), stat.S_IFREG | mode, data)

    def char_device(self, path, major, minor, mode=0o600):
        self.directory(pathlib.PurePosixPath(path).parent)
        self._entry(str(path), stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self):
        self._entry('TRAILER!!!', 0)
        return bytes(self._out)


def unpack_initramfs(image, directory):
    """Unpack a gzipped newc initramfs (as :class:`Cpio` writes it) into
    ``directory``: directories, files and their modes; device nodes are
    left out.  For tests that run the image's programs in a chroot."""
    data = gzip.decompress(pathlib.Path(image).read_bytes())
    directory = pathlib.Path(directory)
    position = 0
    while True:
        header = data[position:position + 110]
        if header[:6] != b'070701':
            raise TestbedError('%s: no newc header at %d' % (image, position))
        mode = int(header[14:22], 16)
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        position += 110
        name = data[position:position + name_size - 1].decode()
        position += name_size + (-(110 + name_size) % 4)
        content = data[position:position + size]
        position += size + (-size % 4)
        if name == 'TRAILER!!!':
            return
        target = directory / name
        if stat.S_ISDIR(mode):
            target.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISREG(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(stat.S_IMODE(mode))


def guest_kernel_version():
    """The kernel linux-image-amd64 depends on, e.g. '6.1.0-56-amd64'.

    Falls back to the newest /lib/modules/* with a /boot/vmlinuz-*.
    """
    result = subprocess.run(
        ['dpkg-query', '-W', '-f', '${Depends}', 'linux-image-amd64'],
        capture_output=True, text=True, timeout=60)
    for dependency in result.stdout.split(','):
        name = dependency.split()[0] if dependency.split() else ''
        if name.startswith('linux-image-'):
            version = name[len('linux-image-'):]
            if pathlib.Path('/boot/vmlinuz-' + version).exists():
                return version
    found = [path.name for path in pathlib.Path('/lib/modules').iterdir()
             if pathlib.Path('/boot/vmlinuz-' + path.name).exists()]
    if not found:
        raise TestbedError('no kernel in /boot with modules in /lib/modules:'
                           ' is linux-image-amd64 installed?')
    return max(found, key=lambda v: [int(p) if p.isdigit() else p
                                     for p in v.replace('-', '.').split('.')])


def shared_libraries(binary):
    """The shared libraries ``binary`` loads (ldd), the loader included.
    """
    result = subprocess.run(['ldd', str(binary)], capture_output=True,
                            text=True, timeout=60)
    if result.returncode != 0:
        raise TestbedError('ldd %s: %s' % (binary, result.stderr.strip()))
    libraries = []
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.startswith('/'):
                libraries.append(word)
                break
    return libraries


def module_files(kernel_version, modules=GUEST_MODULES):
    """.ko files to insmod, dependencies first, each once.

    ``modprobe --show-depends`` lists each module's chain in load order;
    built-in ones are left out, missing ones skipped.
    """
    files = []
    for module in modules:
        result = subprocess.run(
            ['modprobe', '-S', kernel_version, '--show-depends', module],
            capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            continue  # this kernel has no such module
        for line in result.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == 'insmod' \
                    and words[1] not in files:
                files.append(words[1])
    return files


def pvh_kernel(bzimage):
    """The uncompressed ELF kernel inside a bzImage, if it can boot PVH.

    QEMU loads such an ELF straight into guest memory and enters it at
    its PVH entry point (``XEN_ELFNOTE_PHYS32_ENTRY``): the guest skips
    decompressing itself, which under TCG takes ~5 s of the ~9 s to
    /init for Debian's XZ-compressed kernel (measured: /init after 3.9 s
    instead of 9.1 s).  The price is ~30 MiB more QEMU RSS and a ~65 MB
    file.  Returns None when the kernel is not XZ or gzip compressed or
    has no PVH entry.
    """
    data = pathlib.Path(bzimage).read_bytes()
    if data[0x202:0x206] != b'HdrS':
        return None
    setup_sectors = data[0x1f1] or 4
    offset = int.from_bytes(data[0x248:0x24c], 'little')
    length = int.from_bytes(data[0x24c:0x250], 'little')
    start = (setup_sectors + 1) * 512 + offset
    payload = data[start:start + length]
    try:
        if payload.startswith(b'\xfd7zXZ\x00'):
            elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b'\x1f\x8b'):
            elf = gzip.decompress(payload)
        else:
            return None
    except (lzma.LZMAError, OSError, EOFError):
        return None
    return elf if has_pvh_note(elf) else None


def has_pvh_note(elf):
    """Whether a 64-bit little-endian ELF has a Xen PVH entry note."""
    if elf[:5] != b'\x7fELF\x02' or elf[5] != 1:
        return False
    phoff = int.from_bytes(elf[0x20:0x28], 'little')
    phentsize = int.from_bytes(elf[0x36:0x38], 'little')
    phnum = int.from_bytes(elf[0x38:0x3a], 'little')
    for index in range(phnum):
        header = elf[phoff + index * phentsize:][:phentsize]
        if int.from_bytes(header[0:4], 'little') != 4:  # PT_NOTE
            continue
        position = int.from_bytes(header[8:16], 'little')
        end = position + int.from_bytes(header[32:40], 'little')
        while position + 12 <= end:
            name_size, desc_size, note_type = (
                int.from_bytes(elf[position + i:position + i + 4], 'little')
                for i in (0, 4, 8))
            name = elf[position + 12:position + 12 + name_size]
            if name == b'Xen\x00' and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            position += 12 + (name_size + 3) // 4 * 4 \
                + (desc_size + 3) // 4 * 4
    return False


def module_bytes(path):
    """A module's contents, decompressed (busybox insmod wants .ko)."""
    data = pathlib.Path(path).read_bytes()
    if path.endswith('.xz'):
        return lzma.decompress(data)
    if path.endswith('.zst'):
        raise TestbedError('%s is zstd-compressed: not supported' % path)
    return data


class GuestImage:
    """The Debian kernel plus an initramfs with busybox and qemu-ga.

    Built once per set of inputs into ``cache_dir/<key>/`` (``vmlinux``,
    the kernel uncompressed for a PVH boot, see :func:`pvh_kernel`, or
    ``vmlinuz`` with ``pvh=False`` or a kernel that cannot; ``initrd.img``;
    ``manifest.json``); ``key`` hashes the versions of the
    packages the image comes from, the size and time of every library
    qemu-ga loads, and the guest scripts in tests/integration/guest.  The
    cache directory must be readable by libvirt-qemu, hence not under
    pytest's basetemp.  A lock file keeps parallel sessions from building
    twice.

    With ``python=True`` (``cache_dir/python-<key>/``) the image also
    carries the host's python3.11 with the part of its standard library
    the guest heartbeat daemon imports, and that daemon, from ``guest/``
    of the checkout (or ``guest_dir``): see :mod:`guest_python`.  Its key
    also hashes the daemon's sources, so an edit there builds a new image.
    busybox init keeps the daemon running (guest/vmha-heartbeat) on a
    domain with the heartbeat channel.
    """

    def __init__(self, cache_dir=DEFAULT_IMAGE_CACHE, pvh=True,
                 python=False, guest_dir=None):
        self.cache_dir = pathlib.Path(cache_dir)
        self.pvh = pvh
        self.python = python
        self.guest_dir = pathlib.Path(guest_dir or
                                      guest_python.GUEST_SOURCE_DIR)
        self.timings = {}
        self.built = False
        self.kernel_version = None
        self.key = None
        self.kernel = None
        self.initrd = None
        self.manifest = None

    def ensure_installed(self, log_path=None):
        log_path = log_path or self.cache_dir / 'apt-get.log'
        seconds = ensure_packages(log_path)
        if seconds is not None:
            self.timings['install'] = seconds

    def inputs(self):
        """What the image is made of, as recorded in its manifest."""
        kernel = guest_kernel_version()
        versions = package_versions(['linux-image-' + kernel,
                                     'busybox-static', 'qemu-guest-agent'])
        libraries = {}
        for library in shared_libraries(QEMU_GA):
            info = os.stat(library)
            libraries[library] = [info.st_size, int(info.st_mtime)]
        scripts = {name: hashlib.sha256(
            (GUEST_FILES / name).read_bytes()).hexdigest()[:16]
            for name in sorted(GUEST_SCRIPTS)}
        inputs = {'format': IMAGE_FORMAT, 'kernel': kernel, 'pvh': self.pvh,
                  'packages': versions, 'libraries': libraries,
                  'modules': list(GUEST_MODULES), 'scripts': scripts}
        if self.python:
            try:
                inputs['python'] = dict(
                    guest_python.inputs(self.guest_dir),
                    packages=package_versions(guest_python.PYTHON_PACKAGES))
            except guest_python.PythonImageError as error:
                raise TestbedError('the heartbeat guest image: %s' % error)
        return inputs

    @property
    def directory_prefix(self):
        """Cached images of this variant are ``<prefix><key>``."""
        return 'python-' if self.python else ''

    def build(self, force=False):
        """Build the image unless the cache has it; return self."""
        self.ensure_installed()
        inputs = self.inputs()
        self.kernel_version = inputs['kernel']
        self.key = hashlib.sha256(json.dumps(
            inputs, sort_keys=True).encode()).hexdigest()[:16]
        target = self.cache_dir / (self.directory_prefix + self.key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.chmod(0o755)
        with services.file_lock(self.cache_dir / '.lock'):
            if force and target.exists():
                shutil.rmtree(target)
            if not (target / 'manifest.json').exists():
                started = time.monotonic()
                self._build(inputs, target)
                self.timings['build'] = time.monotonic() - started
                self.built = True
            else:
                os.utime(target)  # in use: _prune keeps it a while
            self._prune(keep=target)
        self.manifest = json.loads((target / 'manifest.json').read_text())
        self.kernel = target / self.manifest['kernel_file']
        self.initrd = target / 'initrd.img'
        return self

    def _build(self, inputs, target):
        kernel = inputs['kernel']
        archive = Cpio()
        for directory in ('bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/vmha',
                          'proc', 'sys', 'dev', 'run', 'tmp', 'root',
                          'lib/modules'):
            archive.directory(directory)
        # The kernel opens /dev/console before it runs /init.
        archive.char_device('dev/console', 5, 1)
        archive.file('bin/busybox', BUSYBOX.read_bytes(), 0o755)
        for name, (path, mode) in sorted(GUEST_SCRIPTS.items()):
            archive.file(path, (GUEST_FILES / name).read_bytes(), mode)
        archive.file('etc/passwd', b'root:x:0:0:root:/root:/bin/sh\n')
        archive.file('etc/group', b'root:x:0:\n')
        archive.file('usr/sbin/qemu-ga', QEMU_GA.read_bytes(), 0o755)
        for library in inputs['libraries']:
            archive.file(library.lstrip('/'),
                         pathlib.Path(library).read_bytes(), 0o755)
        if 'python' in inputs:
            # The interpreter finds its prefix by os.py(c) and
            # lib-dynload, which must exist even when empty.
            archive.directory(str(guest_python.STDLIB / 'lib-dynload')
                              .lstrip('/'))
            files = guest_python.image_files(inputs['python'],
                                             self.guest_dir)
            shipped = {library.lstrip('/')
                       for library in inputs['libraries']}
            for path, (data, mode) in sorted(files.items()):
                if path not in shipped:  # qemu-ga's libc, say
                    archive.file(path, data, mode)
        modules = module_files(kernel)
        names = []
        for path in modules:
            name = pathlib.PurePosixPath(path).name
            for suffix in ('.xz', '.zst'):
                name = name.removesuffix(suffix)
            archive.file('lib/modules/' + name, module_bytes(path))
            names.append(name)
        archive.file('etc/vmha/modules',
                     ''.join(name + '\n' for name in names).encode())
        building = pathlib.Path(tempfile.mkdtemp(
            prefix='.build-', dir=self.cache_dir))
        try:
            data = archive.finish()
            with open(building / 'initrd.img', 'wb') as out:
                # mtime=0: the same inputs give the same file.
                with gzip.GzipFile(fileobj=out, mode='wb', mtime=0,
                                   compresslevel=6) as packed:
                    packed.write(data)
            bzimage = '/boot/vmlinuz-' + kernel
            elf = pvh_kernel(bzimage) if self.pvh else None
            if elf is None:
                kernel_file = 'vmlinuz'
                shutil.copyfile(bzimage, building / kernel_file)
            else:
                kernel_file = 'vmlinux'
                (building / kernel_file).write_bytes(elf)
            manifest = dict(inputs, modules_loaded=names,
                            kernel_boot='pvh' if elf else 'bzImage',
                            kernel_file=kernel_file,
                            initrd_bytes=len(data),
                            built=time.strftime('%Y-%m-%d %H:%M:%S'))
            (building / 'manifest.json').write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + '\n')
            for path in building.iterdir():
                path.chmod(0o644)
            building.chmod(0o755)
            building.rename(target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise

    def _prune(self, keep, age=3600):
        """Remove images of this variant built from other inputs (older
        package versions, other guest sources) not used for ``age``
        seconds: a session that still boots one keeps it for a while.
        The other variant's images are left alone."""
        for path in self.cache_dir.iterdir():
            if path.is_dir() and path != keep \
                    and path.name.startswith('python-') == self.python \
                    and time.time() - path.stat().st_mtime > age:
                shutil.rmtree(path, ignore_errors=True)

    def cmdline(self, extra=''):
        """The kernel command line of a test guest."""
        # panic=-1: reboot at once after a panic that pvpanic did not
        # turn into on_crash (no pvpanic device, say).
        return ('console=ttyS0 panic=-1 ' + extra).strip()


# -- domains ---------------------------------------------------------------

DOMAIN_XML = """\
<domain type='{virt_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <description>{description}</description>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>{cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>{on_reboot}</on_reboot>
  <on_crash>{on_crash}</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>{channels}{panic}{watchdog}
    <memballoon model='none'/>
  </devices>
</domain>
"""
CHANNEL_XML = """
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='{name}'/>
    </channel>"""
OWNER_MARK = 'vmha-it owner pid='
# What libvirtd logs for every ping of a guest whose agent is not up yet.
BOOT_PING_ERROR = 'QEMU guest agent is not connected'
# Guest commands after which the guest cannot say "done".
NO_RETURN_COMMANDS = frozenset({'panic', 'hang-kernel', 'poweroff',
                                'reboot'})


class AgentCommandError(TestbedError):
    """``virsh qemu-agent-command`` failed (message: virsh's error)."""


class Domains:
    """Test guests on a :class:`Libvirtd`, driven with ``virsh``.

    Every domain is persistent, named ``vmha-it-<name>-<6 hex>``, and
    records the PID of the process that defined it in its description,
    so :meth:`purge_stale` can remove what a crashed session left.
    :meth:`cleanup` destroys and undefines every domain this object
    defined.  Console output goes to ``run_dir/<name>.console``.

    Methods take a domain name; :class:`Guest` binds one.  Errors raise
    :class:`TestbedError` with the domain's QEMU log, its console and the
    libvirtd log in the message.
    """

    def __init__(self, libvirtd, image, run_dir, virt_type=None,
                 heartbeat_image=None):
        self.libvirtd = libvirtd
        self.image = image
        self._heartbeat_image = heartbeat_image
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.virt_type = virt_type or detect_virt_type()
        self.defined = {}  # name -> uuid, in definition order
        self.started_at = {}  # name -> monotonic time of the last start
        self.boot_to_ping = {}  # name -> seconds, start to first ping
        self._qemu_stopped = set()

    @property
    def uri(self):
        return self.libvirtd.uri

    @property
    def heartbeat_image(self):
        """The image with Python and the heartbeat daemon (built on first
        use, next to :attr:`image` in its cache)."""
        if self._heartbeat_image is None:
            if self.image.python:
                self._heartbeat_image = self.image
            else:
                self._heartbeat_image = GuestImage(
                    self.image.cache_dir, pvh=self.image.pvh,
                    python=True).build()
        return self._heartbeat_image

    # -- plumbing ----------------------------------------------------------

    def virsh(self, *args, timeout=60, check=True, name=None):
        """Run ``virsh -q -c URI ARGS``; return its stripped stdout.

        With ``check`` a failure raises TestbedError carrying the logs of
        ``name`` (a domain) and of libvirtd.
        """
        command = ['virsh', '-q', '-c', self.uri, *map(str, args)]
        try:
            result = subprocess.run(command, capture_output=True,
                                    text=True, stdin=subprocess.DEVNULL,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestbedError('%s timed out after %ss\n%s'
                               % (' '.join(command[3:]), timeout,
                                  self.log_tail(name)))
        if check and result.returncode != 0:
            raise TestbedError('virsh %s failed: %s\n%s'
                               % (' '.join(command[4:]),
                                  result.stderr.strip(),
                                  self.log_tail(name)))
        return result.stdout.strip() if check else result

    def console_log(self, name):
        return self.run_dir / ('%s.console' % name)

    def console_text(self, name):
        try:
            return self.console_log(name).read_text(errors='replace')
        except OSError:
            return ''

    def qemu_log(self, name):
        return QEMU_LOG_DIR / ('%s.log' % name)

    def log_tail(self, name=None, lines=30):
        """The QEMU log and console of ``name``, and libvirtd's logs.

        libvirtd's log leaves out the errors of pings sent while a guest
        boots (:meth:`wait_for_agent` polls), which would crowd out the
        rest.
        """
        paths = []
        if name:
            paths += [self.qemu_log(name), self.console_log(name)]
        parts = [services.log_tail(paths, lines)] if paths else []
        parts.append(self.libvirtd.log_tail(lines, skip=BOOT_PING_ERROR))
        return '\n'.join(parts)

    # -- defining and starting ---------------------------------------------

    def domain_xml(self, name, uuid, memory_mib=256, vcpus=1, pvpanic=True,
                   watchdog=False, watchdog_action='none',
                   on_crash='destroy', on_reboot='restart', agent=True,
                   control=True, cmdline='', heartbeat=False, image=None):
        """The XML of a test guest (see :meth:`define_guest`)."""
        image = image or self.image
        channels = ''.join(CHANNEL_XML.format(name=channel) for channel, on
                           in ((AGENT_CHANNEL, agent),
                               (CONTROL_CHANNEL, control),
                               (HEARTBEAT_CHANNEL, heartbeat)) if on)
        return DOMAIN_XML.format(
            virt_type=self.virt_type, name=name, uuid=uuid,
            description='%s%d' % (OWNER_MARK, os.getpid()),
            memory_mib=memory_mib, vcpus=vcpus,
            kernel=image.kernel, initrd=image.initrd,
            cmdline=image.cmdline(cmdline),
            cpu=("\n  <cpu mode='host-passthrough'/>"
                 if self.virt_type == 'kvm' else ''),
            on_reboot=on_reboot, on_crash=on_crash,
            console=self.console_log(name), channels=channels,
            panic="\n    <panic model='isa'/>" if pvpanic else '',
            watchdog=("\n    <watchdog model='i6300esb' action='%s'/>"
                      % watchdog_action if watchdog else ''))

    def define_guest(self, name='vm', memory_mib=256, pvpanic=True,
                     watchdog=False, watchdog_action='none',
                     on_crash='destroy', on_reboot='restart', agent=True,
                     control=True, agent_off=False, boot_commands=(),
                     cmdline='', vcpus=1, heartbeat=False,
                     heartbeat_off=False, heartbeat_conf=None):
        """Define (not start) a guest; return its :class:`Guest`.

        :param name: middle part of the domain name
            (``vmha-it-<name>-<6 hex>``)
        :param pvpanic: an ISA pvpanic device (``<panic model='isa'/>``),
            so a guest panic is CRASHED/PANICKED, then ``on_crash``
        :param watchdog: an i6300esb watchdog with ``watchdog_action``
            (none, reset, poweroff, pause, shutdown, dump, inject-nmi)
        :param on_crash: destroy, restart, preserve, ...
        :param agent: the ``org.qemu.guest_agent.0`` channel
        :param control: the ``org.vmha.control.0`` command channel
        :param agent_off: boot without starting qemu-ga (``agent-start``
            starts it)
        :param boot_commands: guest commands run at boot, each
            ``command`` or ``command@seconds`` (e.g. ``'panic@5'``)
        :param cmdline: more kernel command line
        :param heartbeat: boot the image with Python and vmha-guest
            (:attr:`heartbeat_image`) and give the domain the
            ``org.vmha.heartbeat.0`` channel (``<source mode='bind'/>``:
            libvirt picks the socket path; :meth:`channel_path` finds it)
        :param heartbeat_off: boot without starting vmha-guest
            (``hb-start`` starts it)
        :param heartbeat_conf: {KEY: VALUE} replacing keys of the guest's
            /etc/vmha-guest/heartbeat.conf (guest/heartbeat.conf), e.g.
            ``{'CORRECTIVE_ACTION': 'log'}``; no spaces in values
        """
        full_name = '%s%s-%s' % (NAME_PREFIX, name, uuid_lib.uuid4().hex[:6])
        uuid = str(uuid_lib.uuid4())
        extra = [cmdline] if cmdline else []
        if agent_off:
            extra.append('vmha.agent=off')
        if boot_commands:
            extra.append('vmha.do=' + ','.join(boot_commands))
        if heartbeat:
            extra.append('vmha.heartbeat=on')
        if heartbeat_off:
            extra.append('vmha.heartbeat=off')
        for key, value in sorted((heartbeat_conf or {}).items()):
            if not key.isidentifier() or not str(value) or \
                    any(c.isspace() for c in str(value)):
                raise TestbedError('heartbeat_conf %s=%r: a KEY and a value '
                                   'without spaces, please' % (key, value))
            extra.append('vmha.hb.%s=%s' % (key, value))
        xml = self.domain_xml(
            full_name, uuid, memory_mib=memory_mib, vcpus=vcpus,
            pvpanic=pvpanic, watchdog=watchdog,
            watchdog_action=watchdog_action, on_crash=on_crash,
            on_reboot=on_reboot, agent=agent, control=control,
            cmdline=' '.join(extra), heartbeat=heartbeat,
            image=self.heartbeat_image if heartbeat else None)
        path = self.run_dir / ('%s.xml' % full_name)
        path.write_text(xml)
        self.virsh('define', path, name=full_name)
        self.defined[full_name] = uuid
        return Guest(self, full_name, uuid)

    def start(self, name):
        """``virsh start``; returns the seconds it took."""
        started = time.monotonic()
        self.started_at[name] = started
        self.virsh('start', name, name=name)
        return time.monotonic() - started

    def create(self, name='vm', start=True, wait_for_agent=False,
               agent_timeout=120, **kwargs):
        """Define a guest (``define_guest`` arguments), start it, and
        with ``wait_for_agent`` wait for its first guest-ping."""
        guest = self.define_guest(name, **kwargs)
        if start:
            self.start(guest.name)
            if wait_for_agent:
                self.wait_for_agent(guest.name, agent_timeout)
        return guest

    # -- state -------------------------------------------------------------

    def state(self, name):
        """``virsh domstate --reason``: e.g. 'running (booted)',
        'shut off (crashed)'."""
        return self.virsh('domstate', '--reason', name, name=name)

    def is_running(self, name):
        return self.state(name).startswith('running')

    def wait_for_state(self, name, prefix, timeout=30):
        """Wait until the state starts with ``prefix``; return it."""
        found = []

        def reached():
            found[:] = [self.state(name)]
            return found[0].startswith(prefix)
        if not services.wait_until(reached, timeout, interval=0.2):
            raise TestbedError('%s is %r, not %r, after %ss\n%s'
                               % (name, found[0], prefix, timeout,
                                  self.log_tail(name)))
        return found[0]

    def wait_for_console(self, name, text, timeout=60):
        """Wait until the guest's console shows ``text``."""
        if not services.wait_until(
                lambda: text in self.console_text(name), timeout,
                interval=0.2):
            raise TestbedError('%r not on the console of %s after %ss\n%s'
                               % (text, name, timeout, self.log_tail(name)))

    def live_xml(self, name):
        return self.virsh('dumpxml', name, name=name)

    def channel_path(self, name, channel):
        """Host-side unix socket of a running domain's virtio channel."""
        root = ElementTree.fromstring(self.live_xml(name))
        for element in root.iterfind('./devices/channel'):
            target = element.find('target')
            source = element.find('source')
            if target is not None and target.get('name') == channel \
                    and source is not None and source.get('path'):
                return source.get('path')
        raise TestbedError('%s has no channel %s (running?)\n%s'
                           % (name, channel, self.log_tail(name)))

    # -- the QEMU process --------------------------------------------------

    def qemu_pid(self, name):
        """PID of the domain's QEMU (from /run/libvirt/qemu), or None."""
        pid = read_pid(QEMU_RUN_DIR / ('%s.pid' % name))
        return pid if pid_alive(pid) else None

    def _signal_qemu(self, name, signum):
        pid = self.qemu_pid(name)
        if pid is None:
            raise TestbedError('%s has no QEMU process\n%s'
                               % (name, self.log_tail(name)))
        os.kill(pid, signum)
        return pid

    def kill9_qemu(self, name):
        """SIGKILL the domain's QEMU; returns monotonic time of the kill.
        """
        self._signal_qemu(name, signal.SIGKILL)
        killed = time.monotonic()
        self._qemu_stopped.discard(name)
        return killed

    def stop_qemu(self, name):
        """SIGSTOP the QEMU process: the domain hangs as a whole (monitor
        calls block, destroy takes ~11 s).  :meth:`cont_qemu` undoes it;
        :meth:`cleanup` does too."""
        self._signal_qemu(name, signal.SIGSTOP)
        self._qemu_stopped.add(name)

    def cont_qemu(self, name):
        self._signal_qemu(name, signal.SIGCONT)
        self._qemu_stopped.discard(name)

    # -- the guest agent ---------------------------------------------------

    def agent_command(self, name, command, timeout=5):
        """Send ``command`` (a dict) with virsh qemu-agent-command; return
        the reply's ``return`` value.  Raises AgentCommandError."""
        result = self.virsh(
            'qemu-agent-command', name, json.dumps(command), '--timeout',
            max(1, int(timeout)), timeout=timeout + 30, check=False)
        if result.returncode != 0:
            raise AgentCommandError('%s: %s' % (name, result.stderr.strip()))
        try:
            return json.loads(result.stdout).get('return')
        except ValueError:
            raise AgentCommandError('%s: reply is not JSON: %.200r'
                                    % (name, result.stdout))

    def guest_ping(self, name, timeout=2):
        """Whether the agent answers guest-ping within ``timeout`` s."""
        try:
            self.agent_command(name, {'execute': 'guest-ping'}, timeout)
        except AgentCommandError:
            return False
        return True

    def wait_for_agent(self, name, timeout=120):
        """Ping until the agent answers; return seconds since the start.

        While the guest boots, pings fail at once ("agent is not
        connected"), so polling is cheap.
        """
        begun = time.monotonic()
        deadline = begun + timeout
        while not self.guest_ping(name, timeout=2):
            if time.monotonic() > deadline:
                raise TestbedError('the agent of %s did not answer within '
                                   '%ss (state: %s)\n%s'
                                   % (name, timeout, self.state(name),
                                      self.log_tail(name)))
            if not self.is_running(name):
                raise TestbedError('%s stopped while waiting for its agent '
                                   '(%s)\n%s' % (name, self.state(name),
                                                 self.log_tail(name)))
            time.sleep(0.2)
        seconds = time.monotonic() - self.started_at.get(name, begun)
        self.boot_to_ping.setdefault(name, seconds)
        return seconds

    # -- commands to the guest (the org.vmha.control.0 channel) -------------

    def send(self, name, command, timeout=30):
        """Have the guest run ``vmha-do COMMAND`` and wait for it.

        Waits for the guest's "done" (the command has run; its exit
        status must be 0), or only for its "ack" for commands that do not
        return (panic, hang-kernel, poweroff, reboot).  Returns
        ``time.monotonic()`` when the ack arrived: the guest acts right
        after it, so latencies measured from there are upper bounds.
        Works whatever state qemu-ga is in; a guest that is still booting
        gets the command once it listens (~3 s after the kernel started).
        """
        return self._exchange(name, command, timeout)[0]

    def output(self, name, command, timeout=30):
        """Like :meth:`send`, but return what the command printed in the
        guest (its stdout and stderr, as text)."""
        return self._exchange(name, command, timeout)[1]

    def _exchange(self, name, command, timeout):
        """Send ``command``; return (time of the ack, its output)."""
        path = self.channel_path(name, CONTROL_CHANNEL)
        verb = command.split(':')[0]
        final = b'ack ' if verb in NO_RETURN_COMMANDS else b'done '
        final += command.encode() + b' '
        ack = ('ack %s\n' % command).encode()
        deadline = time.monotonic() + timeout
        received = b''
        acked = None
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b'\n')
            while not self._answered(received, final):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
                if acked is None and ack in received:
                    acked = time.monotonic()
        answer = self._answered(received, final)
        if answer is None:
            raise TestbedError('%s did not %s %r within %ss (got %r)\n%s'
                               % (name, 'acknowledge' if ack not in received
                                  else 'finish', command, timeout, received,
                                  self.log_tail(name)))
        output = ''.join(
            line[4:].decode(errors='replace') + '\n'
            for line in received.split(b'\n')[:-1]
            if line.startswith(b'out '))
        if final.startswith(b'done ') and answer.split()[-1] != b'0':
            raise TestbedError('%s: %r failed in the guest (%s)\n%s\n%s'
                               % (name, command, answer.decode(), output,
                                  self.log_tail(name)))
        return acked, output

    @staticmethod
    def _answered(received, final):
        """The guest's line that starts with ``final``, if complete."""
        for line in received.split(b'\n')[:-1]:
            if (line + b' ').startswith(final):
                return line
        return None

    def panic(self, name):
        """Kernel panic in the guest (echo c > /proc/sysrq-trigger)."""
        return self.send(name, 'panic')

    def kill_agent(self, name):
        """SIGKILL qemu-ga and keep it dead (AGENT DISCONNECTED/CHANNEL)."""
        return self.send(name, 'agent-kill')

    def start_agent(self, name):
        """Let qemu-ga run again after kill_agent or agent_off."""
        return self.send(name, 'agent-start')

    def hang(self, name):
        """The guest stops answering: qemu-ga gets SIGSTOP, its channel
        stays open, pings time out; the domain keeps running."""
        return self.send(name, 'agent-freeze')

    def unhang(self, name):
        return self.send(name, 'agent-thaw')

    def hang_kernel(self, name):
        """The guest kernel stops for good without telling QEMU (pvpanic
        unloaded, panic without reboot).  The vCPU spins: destroy the
        domain soon."""
        return self.send(name, 'hang-kernel')

    def fire_watchdog(self, name, seconds=2):
        """Arm the watchdog with a ``seconds`` timeout, never feed it."""
        return self.send(name, 'watchdog:%d' % seconds)

    # -- the heartbeat daemon (vmha-guest) and its test scripts -----------

    def heartbeat_path(self, name):
        """Host-side socket of the domain's heartbeat channel."""
        return self.channel_path(name, HEARTBEAT_CHANNEL)

    def heartbeat_command(self, name, what):
        """``hb-kill`` (SIGKILL vmha-guest, keep it dead), ``hb-stop``
        (SIGTERM: it says exit), ``hb-start``, ``hb-freeze`` (SIGSTOP),
        ``hb-thaw``.  Returns the time of the guest's ack."""
        if what not in ('hb-kill', 'hb-stop', 'hb-start', 'hb-freeze',
                        'hb-thaw'):
            raise ValueError('no such heartbeat command: %r' % what)
        return self.send(name, what)

    def set_healthy(self, name, healthy=True, reason=None):
        """Make the guest's health check pass, or fail with ``reason``
        (it runs every HEALTH_CHECK_INTERVAL s of heartbeat.conf)."""
        if healthy:
            return self.send(name, 'hb-healthy')
        return self.send(name, 'hb-unhealthy' + (':' + reason if reason
                                                 else ''))

    def set_stop_vote(self, name, accept=True, reason=None):
        """Make the guest's event handler accept or reject a stop vote."""
        if accept:
            return self.send(name, 'accept-stop')
        return self.send(name, 'reject-stop' + (':' + reason if reason
                                                else ''))

    def heartbeat_events(self, name):
        """The event handler's calls since this boot, one list of
        arguments each (e.g. ``['revocable', 'stop']``)."""
        return [line.split() for line in
                self.output(name, 'events').splitlines() if line.strip()]

    # -- through qemu-ga ---------------------------------------------------

    def guest_exec(self, name, *argv, timeout=10):
        """Run ``argv`` in the guest with qemu-ga's guest-exec; return
        (exit status, stdout + stderr).  Raises AgentCommandError."""
        started = self.agent_command(name, {
            'execute': 'guest-exec', 'arguments': {
                'path': argv[0], 'arg': list(argv[1:]),
                'capture-output': True}})
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent_command(name, {
                'execute': 'guest-exec-status',
                'arguments': {'pid': started['pid']}})
            if status.get('exited'):
                break
            if time.monotonic() > deadline:
                raise AgentCommandError('%s: %s still runs after %ss'
                                        % (name, ' '.join(argv), timeout))
            time.sleep(0.1)
        output = b''.join(base64.b64decode(status.get(key, ''))
                          for key in ('out-data', 'err-data'))
        return status.get('exitcode'), output.decode(errors='replace')

    def boot_id(self, name):
        """The guest kernel's boot id: a new one after every boot."""
        status, output = self.guest_exec(
            name, '/bin/cat', '/proc/sys/kernel/random/boot_id')
        if status != 0 or not output.strip():
            raise AgentCommandError('%s: no boot id (%s, %r)'
                                    % (name, status, output))
        return output.strip()

    def wait_for_new_boot(self, name, boot_id, timeout=120):
        """Wait until the agent answers from a boot other than
        ``boot_id``; return the new boot id.

        The old boot's agent may still answer for a moment after a
        reboot was asked for, and none answers while the guest boots.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestbedError('%s did not boot again within %ss (%s)'
                                   '\n%s' % (name, timeout,
                                             self.state(name),
                                             self.log_tail(name)))
            self.wait_for_agent(name, remaining)
            with contextlib.suppress(AgentCommandError):
                current = self.boot_id(name)
                if current != boot_id:
                    return current
            time.sleep(0.2)

    # -- shutdown and reboot, as an operator asks for them -----------------

    def shutdown(self, name, mode='acpi'):
        """``virsh shutdown --mode MODE`` (acpi: the power button; agent:
        qemu-ga's guest-shutdown).  Returns ``time.monotonic()`` after
        virsh returned: the guest powers off a few seconds later."""
        self.virsh('shutdown', '--mode', mode, name, name=name)
        return time.monotonic()

    def reboot(self, name, mode='acpi'):
        """``virsh reboot --mode MODE``.  agent: qemu-ga runs
        ``shutdown -h -r +0``; acpi: libvirt presses the power button and,
        when the guest has powered off, resets it instead of stopping
        QEMU.  Returns ``time.monotonic()`` after virsh returned."""
        self.virsh('reboot', '--mode', mode, name, name=name)
        return time.monotonic()

    # -- stopping and removing ---------------------------------------------

    def destroy(self, name):
        """``virsh destroy`` if it runs (SIGCONT first if stopped)."""
        if name in self._qemu_stopped:
            with contextlib.suppress(TestbedError, OSError):
                self.cont_qemu(name)
        result = self.virsh('destroy', name, check=False, timeout=120)
        if result.returncode != 0 and 'not running' not in result.stderr:
            raise TestbedError('virsh destroy %s failed: %s\n%s'
                               % (name, result.stderr.strip(),
                                  self.log_tail(name)))

    def remove(self, name):
        """Destroy and undefine a domain."""
        self.destroy(name)
        result = self.virsh('undefine', name, check=False)
        if result.returncode != 0 and 'ailed to get domain' not in \
                result.stderr:
            raise TestbedError('virsh undefine %s failed: %s\n%s'
                               % (name, result.stderr.strip(),
                                  self.log_tail(name)))
        self.defined.pop(name, None)

    def cleanup(self):
        """Destroy and undefine every domain this object defined.

        Returns the errors (a failure does not stop the others).
        """
        errors = []
        for name in list(self.defined):
            try:
                self.remove(name)
            except TestbedError as error:
                errors.append(error)
        return errors

    def purge_stale(self):
        """Remove ``vmha-it-*`` domains whose defining process is gone.

        Domains of other live sessions stay.  Returns the names removed.
        """
        result = self.virsh('list', '--all', '--name', check=False)
        removed = []
        for name in result.stdout.split():
            if not name.startswith(NAME_PREFIX):
                continue
            description = self.virsh('desc', name, check=False).stdout
            owner = None
            if OWNER_MARK in description:
                owner = description.split(OWNER_MARK, 1)[1].split()[0]
            if owner and owner.isdigit() and pid_alive(int(owner)):
                continue
            self.remove(name)
            removed.append(name)
        return removed


class Guest:
    """One test domain: a name bound to :class:`Domains` calls."""

    def __init__(self, domains, name, uuid):
        self.domains = domains
        self.name = name
        self.uuid = uuid

    def __repr__(self):
        return '<Guest %s %s>' % (self.name, self.uuid)

    def start(self):
        return self.domains.start(self.name)

    def state(self):
        return self.domains.state(self.name)

    def is_running(self):
        return self.domains.is_running(self.name)

    def wait_for_state(self, prefix, timeout=30):
        return self.domains.wait_for_state(self.name, prefix, timeout)

    def wait_for_console(self, text, timeout=60):
        return self.domains.wait_for_console(self.name, text, timeout)

    def console_text(self):
        return self.domains.console_text(self.name)

    def log_tail(self, lines=30):
        return self.domains.log_tail(self.name, lines)

    def qemu_pid(self):
        return self.domains.qemu_pid(self.name)

    def kill9_qemu(self):
        return self.domains.kill9_qemu(self.name)

    def stop_qemu(self):
        return self.domains.stop_qemu(self.name)

    def cont_qemu(self):
        return self.domains.cont_qemu(self.name)

    def agent_command(self, command, timeout=5):
        return self.domains.agent_command(self.name, command, timeout)

    def ping(self, timeout=2):
        return self.domains.guest_ping(self.name, timeout)

    def wait_for_agent(self, timeout=120):
        return self.domains.wait_for_agent(self.name, timeout)

    def send(self, command, timeout=30):
        return self.domains.send(self.name, command, timeout)

    def output(self, command, timeout=30):
        return self.domains.output(self.name, command, timeout)

    def heartbeat_path(self):
        return self.domains.heartbeat_path(self.name)

    def heartbeat_command(self, what):
        return self.domains.heartbeat_command(self.name, what)

    def set_healthy(self, healthy=True, reason=None):
        return self.domains.set_healthy(self.name, healthy, reason)

    def set_stop_vote(self, accept=True, reason=None):
        return self.domains.set_stop_vote(self.name, accept, reason)

    def heartbeat_events(self):
        return self.domains.heartbeat_events(self.name)

    def panic(self):
        return self.domains.panic(self.name)

    def kill_agent(self):
        return self.domains.kill_agent(self.name)

    def start_agent(self):
        return self.domains.start_agent(self.name)

    def hang(self):
        return self.domains.hang(self.name)

    def unhang(self):
        return self.domains.unhang(self.name)

    def hang_kernel(self):
        return self.domains.hang_kernel(self.name)

    def fire_watchdog(self, seconds=2):
        return self.domains.fire_watchdog(self.name, seconds)

    def guest_exec(self, *argv, timeout=10):
        return self.domains.guest_exec(self.name, *argv, timeout=timeout)

    def boot_id(self):
        return self.domains.boot_id(self.name)

    def wait_for_new_boot(self, boot_id, timeout=120):
        return self.domains.wait_for_new_boot(self.name, boot_id, timeout)

    def shutdown(self, mode='acpi'):
        return self.domains.shutdown(self.name, mode)

    def reboot(self, mode='acpi'):
        return self.domains.reboot(self.name, mode)

    def destroy(self):
        return self.domains.destroy(self.name)

    def remove(self):
        return self.domains.remove(self.name)


def main(argv=None):
    """Drive the test bed by hand.

    ``python -m tests.integration.testbed build [python]`` builds the
    guest image (with ``python``: the heartbeat image);
    ``... purge`` removes domains of dead sessions; ``... up [N [DIR]]``
    starts libvirtd, boots N guests (default 1) and keeps them until
    Ctrl-C, with logs in DIR (a new temporary directory by default).
    """
    argv = sys.argv[1:] if argv is None else argv
    action = argv[0] if argv else 'up'
    if action == 'build':
        image = GuestImage(python=argv[1:2] == ['python']).build()
        print('kernel  %s\ninitrd  %s\ntimings %s'
              % (image.kernel, image.initrd, image.timings))
        return
    base = pathlib.Path(argv[2] if len(argv) > 2 else
                        tempfile.mkdtemp(prefix='vmha-testbed-'))
    daemon = Libvirtd(base / 'libvirtd')
    image = GuestImage()
    domains = None
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        daemon.start()
        image.build()
        domains = Domains(daemon, image, base / 'domains')
        if action == 'purge':
            print('removed: %s' % (' '.join(domains.purge_stale()) or '-'))
            return
        count = int(argv[1]) if len(argv) > 1 else 1
        guests = [domains.create('manual') for _ in range(count)]
        for guest in guests:
            guest.wait_for_agent()
            print('%s %s qemu pid %s, first ping %.1fs after start, '
                  'console %s' % (guest.name, guest.uuid, guest.qemu_pid(),
                                  domains.boot_to_ping[guest.name],
                                  domains.console_log(guest.name)))
        print('libvirtd %s pid %s%s; logs in %s\ntimings %s %s\n'
              'Ctrl-C removes the guests and stops what was started.'
              % (daemon.uri, daemon.pid, ' (reused)' if daemon.reused
                 else '', base, daemon.timings, image.timings), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        if domains is not None:
            domains.cleanup()
        daemon.stop()


if __name__ == '__main__':
    main()
