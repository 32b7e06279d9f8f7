"""Smoke tests of the real-VM test bed, and of vmha's libvirt driver
against a real libvirtd with real QEMU guests.

Each test boots at most one guest of its own (4-6 s to the first
guest-ping under TCG), removed after it.  The driver runs on this run's
concurrency backend with ``stopped_delay=0``, so STOPPED events arrive as
they happen.  Latencies run from the moment the test acted (for a guest
command: the guest's ack, sent just before it acts) to the moment
libvirt's callback ran (the event's ``monotonic`` stamp, taken on
libvirt's event-loop thread); the terminal summary prints them.
"""

import shutil
import subprocess
import time

import pytest

from tests.conftest import BACKEND
from tests.integration import guest_python
from tests.integration import heartbeat_peer
from tests.integration import testbed
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt import power_state
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = [pytest.mark.realvm, pytest.mark.one_backend]

# Generous: a loaded 2-core machine boots TCG guests slowly.
EVENT_TIMEOUT = 30
# From "virsh start" to the heartbeat guest's first init (~6 s measured
# on an idle machine, the recipe saw ~10 s), with room for a loaded one:
# 45 s ran out once with three other TCG guests booting beside it.
HEARTBEAT_START_TIMEOUT = 90


@pytest.fixture
def make_driver(libvirtd):
    """``make_driver(**options)``: vmha's LibvirtDriver on the test bed's
    libvirtd, started, every event kept in ``driver.received``."""
    drivers = []

    def make(**options):
        options = dict(dict(stopped_delay=0, reconnect_min=0.2,
                            reconnect_max=1.0), **options)
        drv = libvirt_driver.LibvirtDriver(libvirtd.uri, backend=BACKEND,
                                           **options)
        drv.received = []
        drv.register_event_listener(drv.received.append)
        drv.init_host()
        drivers.append(drv)
        return drv

    yield make
    for drv in drivers:
        drv.cleanup()


@pytest.fixture
def driver(make_driver):
    return make_driver()


def find(driver, guest, event_name, vir_domain_event, after=None):
    """The first event of ``guest`` with these names (at or after the
    monotonic time ``after``), or None."""
    for event in list(driver.received):
        if (isinstance(event, ev.InstanceEvent)
                and event.uuid == guest.uuid
                and event.event_name == event_name
                and event.vir_domain_event == vir_domain_event
                and (after is None or event.monotonic >= after)):
            return event
    return None


def find_host(driver, event_class, after=None):
    for event in list(driver.received):
        if isinstance(event, event_class) and (
                after is None or event.monotonic >= after):
            return event
    return None


def seen(driver, guest):
    """What the driver got for ``guest``, for failure messages."""
    return ['%s %s' % (e.event_name, e.vir_domain_event)
            for e in list(driver.received)
            if isinstance(e, ev.InstanceEvent) and e.uuid == guest.uuid]


def wait_event(wait_for, driver, guest, event_name, vir_domain_event,
               after=None, timeout=EVENT_TIMEOUT):
    found = []

    def arrived():
        found[:] = [find(driver, guest, event_name, vir_domain_event, after)]
        return found[0] is not None
    try:
        wait_for(arrived, timeout, what='%s %s of %s'
                 % (event_name, vir_domain_event, guest.name))
    except BaseException:
        print('events of %s: %s\n%s' % (guest.name, seen(driver, guest),
                                        guest.log_tail()))
        raise
    return found[0]


def test_guest_boots_and_answers_guest_ping(vm_factory, driver):
    guest = vm_factory()
    assert guest.ping()
    assert guest.qemu_pid()
    assert 'vmha-guest' in guest.console_text()
    info = guest.agent_command({'execute': 'guest-info'})
    assert info['version']
    # The same through vmha's driver.
    assert driver.guest_agent_command(
        guest.uuid, {'execute': 'guest-ping'}, 2) == {'return': {}}
    state = driver.get_instance_info(guest.uuid)
    assert (state.power_state, state.state_reason) == (
        power_state.RUNNING, 'RUNNING_BOOTED')
    assert guest.uuid in [i.uuid for i in driver.list_instances()]


def test_kill9_of_qemu_is_stopped_failed(vm_factory, driver, wait_for,
                                         realvm_measure):
    guest = vm_factory()
    killed = guest.kill9_qemu()
    event = wait_event(wait_for, driver, guest, 'LIFECYCLE',
                       'STOPPED_FAILED')
    realvm_measure('kill -9 qemu -> STOPPED_FAILED',
                   event.monotonic - killed)
    assert event.transition == ev.EVENT_LIFECYCLE_STOPPED
    assert guest.state() == 'shut off (crashed)'
    assert driver.get_instance_info(guest.uuid).state_reason == \
        'SHUTOFF_CRASHED'


def test_guest_panic_is_crashed_then_stopped(vm_factory, driver, wait_for,
                                             realvm_measure):
    guest = vm_factory(on_crash='destroy')
    acked = guest.panic()
    crashed = wait_event(wait_for, driver, guest, 'LIFECYCLE',
                         'CRASHED_PANICKED')
    stopped = wait_event(wait_for, driver, guest, 'LIFECYCLE',
                         'STOPPED_CRASHED')
    realvm_measure('panic -> CRASHED_PANICKED', crashed.monotonic - acked)
    realvm_measure('CRASHED_PANICKED -> STOPPED_CRASHED',
                   stopped.monotonic - crashed.monotonic)
    assert isinstance(crashed, ev.CrashedEvent)
    assert crashed.monotonic <= stopped.monotonic
    assert 'Kernel panic' in guest.console_text()
    assert guest.state() == 'shut off (crashed)'


def test_agent_killed_frozen_and_back(vm_factory, driver, wait_for,
                                      realvm_measure):
    guest = vm_factory()
    wait_event(wait_for, driver, guest, 'AGENT_LIFECYCLE',
               'CONNECTED_CHANNEL')

    # Frozen (SIGSTOP): the channel stays connected, pings time out.
    guest.hang()
    with pytest.raises(exception.AgentTimeout):
        driver.guest_agent_command(guest.uuid, {'execute': 'guest-ping'}, 2)
    guest.unhang()
    assert driver.guest_agent_command(
        guest.uuid, {'execute': 'guest-ping'}, 5) == {'return': {}}

    # Killed: the channel closes, pings fail at once.
    killed = guest.kill_agent()
    event = wait_event(wait_for, driver, guest, 'AGENT_LIFECYCLE',
                       'DISCONNECTED_CHANNEL', after=killed)
    realvm_measure('kill qemu-ga -> AGENT DISCONNECTED_CHANNEL',
                   event.monotonic - killed)
    # At once, not after the timeout.  (vmha raises AgentTimeout here:
    # libvirt gives "not connected" the same code, 86, as a timeout.)
    asked = time.monotonic()
    with pytest.raises(exception.AgentError, match='not connected'):
        driver.guest_agent_command(guest.uuid, {'execute': 'guest-ping'}, 2)
    assert time.monotonic() - asked < 1
    assert guest.is_running()

    restarted = guest.start_agent()
    wait_event(wait_for, driver, guest, 'AGENT_LIFECYCLE',
               'CONNECTED_CHANNEL', after=restarted)
    assert guest.ping()


def test_libvirtd_killed_and_restarted(libvirtd, vm_factory, driver,
                                       wait_for, realvm_measure):
    guest = vm_factory()
    qemu_pid = guest.qemu_pid()
    killed = libvirtd.kill9()
    try:
        wait_for(lambda: find_host(driver, ev.ConnectionLostEvent, killed),
                 EVENT_TIMEOUT, what='CONNECTION_LOST')
        lost = find_host(driver, ev.ConnectionLostEvent, killed)
        realvm_measure('kill -9 libvirtd -> CONNECTION_LOST',
                       lost.monotonic - killed)
        assert lost.reason == 'EOF'
        with pytest.raises(exception.HypervisorUnavailable):
            driver.list_instances()
    finally:
        libvirtd.start()
    lost = find_host(driver, ev.ConnectionLostEvent, killed)
    wait_for(lambda: find_host(driver, ev.ConnectionRestoredEvent,
                               lost.monotonic), EVENT_TIMEOUT,
             what='CONNECTION_RESTORED')
    restored = find_host(driver, ev.ConnectionRestoredEvent, lost.monotonic)
    realvm_measure('CONNECTION_LOST -> CONNECTION_RESTORED '
                   '(libvirtd killed, restarted)',
                   restored.monotonic - lost.monotonic)

    # QEMU outlived libvirtd; the new daemon and connection see it.  The
    # new libvirtd reconnects to the agent a moment after it answers:
    # pings fail "not connected" for ~0.1 s (seen in 1 of 6 restarts).
    assert guest.qemu_pid() == qemu_pid
    guest.wait_for_agent(timeout=10)
    assert guest.uuid in [i.uuid for i in driver.list_instances()]
    # Callbacks were registered again on the new connection.
    killed = guest.kill9_qemu()
    wait_event(wait_for, driver, guest, 'LIFECYCLE', 'STOPPED_FAILED',
               after=killed)


def test_libvirtd_hung_is_noticed_by_keepalive(libvirtd, make_driver,
                                               wait_for, realvm_measure):
    driver = make_driver(keepalive_interval=1, keepalive_count=2)
    with libvirtd.hung():
        frozen = time.monotonic()
        wait_for(lambda: find_host(driver, ev.ConnectionLostEvent, frozen),
                 EVENT_TIMEOUT, what='CONNECTION_LOST')
        lost = find_host(driver, ev.ConnectionLostEvent, frozen)
        realvm_measure('libvirtd SIGSTOP -> CONNECTION_LOST (keepalive 1x2)',
                       lost.monotonic - frozen)
        assert lost.reason == 'KEEPALIVE'
        with pytest.raises(exception.HypervisorUnavailable):
            driver.list_instances()
    wait_for(lambda: find_host(driver, ev.ConnectionRestoredEvent,
                               lost.monotonic), EVENT_TIMEOUT,
             what='CONNECTION_RESTORED')
    driver.list_instances()


def test_boot_command_on_the_kernel_command_line(vm_factory, driver,
                                                 wait_for):
    guest = vm_factory(wait_for_agent=False, agent_off=True,
                       boot_commands=['panic@1'])
    wait_event(wait_for, driver, guest, 'LIFECYCLE', 'CRASHED_PANICKED')
    console = guest.console_text()
    assert "boot command 'panic' in 1s" in console
    assert 'starting qemu-ga' not in console  # vmha.agent=off


def test_watchdog_fires(vm_factory, driver, wait_for, realvm_measure):
    guest = vm_factory(wait_for_agent=False, watchdog=True,
                       watchdog_action='none')
    guest.wait_for_console(']: ready', timeout=60)
    armed = guest.fire_watchdog(seconds=1)
    event = wait_event(wait_for, driver, guest, 'WATCHDOG', 'WATCHDOG_NONE')
    realvm_measure('watchdog armed (1 s) -> WATCHDOG',
                   event.monotonic - armed)
    assert guest.is_running()


def test_acpi_shutdown_powers_the_guest_off(vm_factory, driver, wait_for,
                                            realvm_measure):
    # The guest's acpid used to die at boot (no log file), so the power
    # button did nothing: the domain ran on.
    guest = vm_factory()
    asked = guest.shutdown('acpi')
    shutdown = wait_event(wait_for, driver, guest, 'LIFECYCLE',
                          'SHUTDOWN_GUEST')
    stopped = wait_event(wait_for, driver, guest, 'LIFECYCLE',
                         'STOPPED_SHUTDOWN')
    realvm_measure('virsh shutdown --mode acpi -> STOPPED_SHUTDOWN',
                   stopped.monotonic - asked)
    assert shutdown.monotonic <= stopped.monotonic
    assert guest.state() == 'shut off (shutdown)'
    assert 'power button: poweroff' in guest.console_text()
    assert not find(driver, guest, 'LIFECYCLE', 'STOPPED_FAILED')


@pytest.mark.parametrize('mode', ['agent', 'acpi'])
def test_reboot_boots_the_guest_again(vm_factory, driver, wait_for,
                                      realvm_measure, mode):
    # agent: qemu-ga runs "shutdown -h -r +0", which the guest's helper
    # used to read as a poweroff.  acpi: libvirt presses the power
    # button, then resets the guest once it has powered off.
    guest = vm_factory()
    boot_id = guest.boot_id()
    asked = guest.reboot(mode)
    new_boot_id = guest.wait_for_new_boot(boot_id, timeout=60)
    realvm_measure('virsh reboot --mode %s -> agent answers again' % mode,
                   time.monotonic() - asked)
    assert new_boot_id != boot_id
    wait_event(wait_for, driver, guest, 'REBOOT', 'UNKNOWN')
    assert guest.state() == 'running (booted)'
    console = guest.console_text()
    assert console.count(']: ready') == 2
    if mode == 'agent':
        assert 'shutdown -h -r +0' in console
        assert 'shutdown: reboot' in console
    else:
        assert 'power button: poweroff' in console
    assert [e for e in seen(driver, guest) if e.startswith('LIFECYCLE')
            and 'STOPPED' in e] == []


def test_harness_errors_carry_the_logs(libvirtd, domains):
    with pytest.raises(testbed.TestbedError,
                       match='virsh domstate') as error:
        domains.state('vmha-it-no-such-domain')
    assert 'libvirtd.log' in str(error.value) or libvirtd.reused


# -- the heartbeat guest (Python + vmha-guest in the image) ------------------
#
# These speak doc/heartbeat-protocol.md by hand (heartbeat_peer), so they
# test the guest end and the test bed without vmha's host side.

def test_heartbeat_image_follows_the_daemons_imports(tmp_path):
    # What the image carries comes from the daemon's own imports, lazy
    # ones included: a new import cannot leave the guest without it.
    daemon = tmp_path / 'vmha_guest.py'
    daemon.write_text('import json\n\n\ndef later():\n    import csv\n'
                      '    from xml.dom import minidom\n'
                      '    from vmha_guest_client import Client\n')
    (tmp_path / 'vmha_guest_client.py').write_text('import socket\n')
    files = guest_python.stdlib_files(guest_python.guest_sources(tmp_path))
    names = {f.removeprefix('/usr/lib/python3.11/') for f in files}
    for expected in ('json/__init__.py', 'csv.py', 'xml/dom/minidom.py',
                     'socket.py', 'runpy.py', 'encodings/utf_8.py'):
        assert expected in names, expected
    assert 'argparse.py' not in names  # nothing it does not import

    # Anything outside the standard library stops the build, by name.
    daemon.write_text('def later():\n    import yaml\n')
    with pytest.raises(guest_python.PythonImageError, match='yaml'):
        guest_python.stdlib_files(guest_python.guest_sources(tmp_path))


def test_heartbeat_image_imports_the_daemon_in_a_chroot(heartbeat_image,
                                                        tmp_path):
    # The image's own interpreter and files, nothing of the host's: every
    # module of the daemon imports, and its command line answers --help.
    image = heartbeat_image
    root = tmp_path / 'root'
    testbed.unpack_initramfs(image.initrd, root)
    modules = sorted({path.split('/')[0].removesuffix('.py') for path in
                      image.manifest['python']['guest_sources']})

    chroot = shutil.which('chroot', path='/usr/sbin:/usr/bin:/sbin:/bin')

    def run(script):
        # As guest/vmha-heartbeat starts it: "python3.11 -S -B" in the
        # daemon's directory.
        return subprocess.run(
            [chroot, str(root), '/usr/bin/python3.11', '-S', '-B', '-c',
             'import os, sys\nos.chdir("/usr/lib/vmha-guest")\n'
             'sys.path.insert(0, "")\n' + script], capture_output=True,
            text=True, timeout=120, env={'PATH': '/usr/bin:/bin',
                                         'LC_ALL': 'C'})
    result = run('for name in %r: __import__(name)' % modules)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run('import runpy\nsys.argv = ["vmha_guest", "--help"]\n'
                 'runpy.run_module("vmha_guest", run_name="__main__")')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'usage' in result.stdout.lower()
    assert not list(root.glob('usr/lib/python3.11/**/*.py'))  # .pyc only


def test_heartbeat_guest_registers_answers_and_votes(vm_factory,
                                                     realvm_measure):
    guest = vm_factory(heartbeat=True, wait_for_agent=False)
    started = guest.domains.started_at[guest.name]
    with heartbeat_peer.HeartbeatPeer(guest.heartbeat_path()).connect() \
            as peer:
        init = peer.register(timeout=HEARTBEAT_START_TIMEOUT)
        assert heartbeat_peer.protocol_errors(init) == []
        assert (init['heartbeat_interval_ms'], init['corrective_action']) \
            == (1000, 'reboot')  # the test image's heartbeat.conf
        response = None
        while response is None:
            response, _ = peer.challenge(timeout=1)
            assert time.monotonic() - started < HEARTBEAT_START_TIMEOUT
        realvm_measure('heartbeat: start -> first challenge answered',
                       time.monotonic() - started)
        assert heartbeat_peer.protocol_errors(response) == []
        assert response['health'] == 'healthy'

        # Every challenge answered with its own nonce, in order.
        for _ in range(10):
            response, _ = peer.challenge(timeout=2)
            assert response is not None, peer.received_types()
            assert heartbeat_peer.protocol_errors(response) == []
        seqs = [m['seq'] for _, d, m in peer.log if d == 'received']
        assert seqs == sorted(set(seqs))

        # The health check's flag file, with its reason, and back.
        guest.set_healthy(False, reason='disk full on /data')
        response = wait_for_health(peer, 'unhealthy')
        assert 'disk full on /data' in response['reason']
        guest.set_healthy(True)
        wait_for_health(peer, 'healthy')

        # The event handler votes: a stop rejected with its reason, then
        # accepted; a notice is accepted.
        guest.set_stop_vote(accept=False, reason='database resync running')
        answer = peer.notify('stop', 'revocable')
        assert heartbeat_peer.protocol_errors(answer) == []
        assert (answer['result'], answer['reason']) == (
            'reject', 'database resync running')
        assert (answer['event'], answer['notification'], answer['phase']) \
            == ('stop', 'revocable', 'pre')
        guest.set_stop_vote(accept=True)
        assert peer.notify('stop', 'revocable')['result'] == 'accept'
        assert peer.notify('reboot', 'irrevocable', 'post')['result'] == \
            'accept'
        events = guest.heartbeat_events()
        assert [e[:2] for e in events] == [
            ['revocable', 'stop'], ['revocable', 'stop'],
            ['irrevocable', 'reboot']], events
        # Still answering after all that.
        assert peer.challenge(timeout=2)[0]['health'] == 'healthy'
    assert 'org.vmha.heartbeat.0' in guest.console_text()


def test_heartbeat_daemon_off_killed_stopped_and_back(vm_factory):
    guest = vm_factory(heartbeat=True, heartbeat_off=True,
                       wait_for_agent=False,
                       heartbeat_conf={'HB_INTERVAL': 500,
                                       'CORRECTIVE_ACTION': 'stop'})
    with heartbeat_peer.HeartbeatPeer(guest.heartbeat_path()).connect() \
            as peer:
        # vmha.heartbeat=off: nothing registers until hb-start.
        guest.wait_for_console(']: ready', timeout=60)
        assert peer.receive(timeout=3) is None
        assert 'starting vmha-guest' not in guest.console_text()
        guest.heartbeat_command('hb-start')
        init = peer.register(timeout=30)
        assert (init['heartbeat_interval_ms'], init['corrective_action']) \
            == (500, 'stop')  # vmha.hb.KEY=VALUE on the command line
        assert answered(peer)

        # SIGTERM: the daemon says exit, then stays down.
        guest.heartbeat_command('hb-stop')
        peer.wait_for('exit', timeout=10)
        guest.heartbeat_command('hb-start')
        peer.register(timeout=30)
        assert answered(peer)

        # SIGKILL: no exit message, no answers.
        guest.heartbeat_command('hb-kill')
        assert peer.challenge(timeout=2) == (None, None)
        assert 'exit' not in peer.received_types()[-3:]
        guest.heartbeat_command('hb-start')
        peer.register(timeout=30)
        assert answered(peer)

        # The host goes away and comes back (an agent restart): the guest
        # registers again on the new connection.
        peer.reconnect()
        peer.register(timeout=30)
        assert answered(peer)


def wait_for_health(peer, health, timeout=15):
    """Challenge every 0.5 s until an answer says ``health``; return it.
    (The health check runs every second in the test image.)"""
    deadline = time.monotonic() + timeout
    while True:
        response, _ = peer.challenge(timeout=2)
        if response is not None and response['health'] == health:
            return response
        assert time.monotonic() < deadline, (
            'no %s answer within %ss: %s' % (health, timeout,
                                              peer.log[-6:]))
        time.sleep(0.5)


def answered(peer, count=3):
    """Whether ``count`` challenges in a row get their answers."""
    return all(peer.challenge(timeout=2)[0] is not None
               for _ in range(count))
