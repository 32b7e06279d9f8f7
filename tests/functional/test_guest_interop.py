"""vmha-guest against the host's own heartbeat engine.

The other end of the channel is vmha's ``heartbeat_session.Session``
(the host side of doc/heartbeat-protocol.md), driven over a unix socket
the daemon connects to as it would open its virtio-serial port: both
ends' reading of the contract are checked against each other.
"""

import os
import pathlib
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

session_module = pytest.importorskip('vmha.manager.heartbeat_session')
from vmha.manager import heartbeat_protocol  # noqa: E402

pytestmark = pytest.mark.functional

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUEST = ROOT / 'guest'
GUEST_PYTHON = os.environ.get('VMHA_GUEST_PYTHON', sys.executable)
BOUNDS = heartbeat_protocol.Bounds(
    min_interval=0.2, max_interval=60, default_interval=1,
    miss_threshold=2, max_action='reboot', max_notice=300,
    max_messages_per_second=20, max_bad_in_a_row=10)


class Host:
    """A host loop around one Session: reads, ticks, writes."""

    def __init__(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.conn = None
        self.session = None
        self.outputs = []

    def accept(self, timeout=10):
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.setblocking(False)
        self.session = session_module.Session(BOUNDS, time.monotonic(),
                                              name='interop')

    def apply(self, outputs):
        for output in outputs:
            if type(output) is session_module.Send:
                self.conn.sendall(output.data)
            else:
                self.outputs.append(output)

    def run(self, seconds, until=None):
        """Serve for ``seconds`` or until ``until(output)`` is true."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            due = self.session.next_due()
            now = time.monotonic()
            wait = min(deadline, due if due is not None else deadline) - now
            ready, _, _ = select.select([self.conn], [], [],
                                        max(0.0, min(wait, 0.05)))
            if ready:
                data = self.conn.recv(65536)
                if not data:
                    self.apply(self.session.close(time.monotonic()))
                    return None
                self.apply(self.session.feed(data, time.monotonic()))
            due = self.session.next_due()
            if due is not None and time.monotonic() >= due:
                self.apply(self.session.tick(time.monotonic()))
            if until is not None:
                for output in self.outputs:
                    if until(output):
                        return output
        return None

    def close(self):
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix='vmhai-')
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host(workdir):
    host = Host(str(workdir / 'hb.sock'))
    yield host
    host.close()


@pytest.fixture
def daemon(workdir, host):
    procs = []

    def start(**settings):
        settings.setdefault('HB_INTERVAL', 300)
        settings.setdefault('DEVICE', str(workdir / 'hb.sock'))
        settings.setdefault('API_SOCKET', str(workdir / 'api.sock'))
        conf = workdir / 'heartbeat.conf'
        conf.write_text(''.join('%s=%s\n' % kv for kv in settings.items()))
        proc = subprocess.Popen([GUEST_PYTHON, str(GUEST / 'vmha_guest.py'),
                                 '--config', str(conf)])
        procs.append(proc)
        host.accept()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def kinds(outputs):
    return [type(output).__name__ for output in outputs]


def test_a_healthy_guest_is_enabled_and_stays_so(host, daemon):
    daemon()
    host.run(4)
    assert host.session.state == 'enabled'
    assert host.session.granted['heartbeat_interval_ms'] == 300
    assert 'Failure' not in kinds(host.outputs)
    assert 'CutOff' not in kinds(host.outputs)
    assert host.session.counters.get('replays', 0) == 0


def test_a_failing_health_script_is_one_failure_with_its_reason(
        workdir, host, daemon):
    check = workdir / 'check'
    check.write_text('#!/bin/sh\necho "disk /data full"\nexit 1\n')
    check.chmod(0o755)
    daemon(HEALTH_CHECK_SCRIPT=check, HEALTH_CHECK_INTERVAL=1,
           CORRECTIVE_ACTION='stop')
    failure = host.run(5, lambda o: type(o) is session_module.Failure)
    assert failure is not None, host.outputs
    assert failure.cause == 'guest_unhealthy'
    assert 'disk /data full' in failure.reason
    assert failure.action == 'reboot'          # capped by max_action
    host.run(2)
    assert kinds(host.outputs).count('Failure') == 1


def test_a_rejected_stop_vote_returns_the_guests_reason(
        workdir, host, daemon):
    handler = workdir / 'events'
    handler.write_text(textwrap.dedent('''\
        #!/bin/sh
        [ "$1" = revocable ] && [ "$2" = stop ] && { echo "not now"; exit 1; }
        exit 0
        '''))
    handler.chmod(0o755)
    daemon(EVENT_HANDLING_SCRIPT=handler)
    host.run(2)
    assert host.session.state == 'enabled'
    host.apply(host.session.ask('ab' * 16, 'stop', 'revocable', 'pre', 4,
                                time.monotonic()))
    answer = host.run(5, lambda o: type(o) is session_module.Answer)
    assert (answer.result, answer.reason) == ('reject', 'not now')
    host.outputs.clear()
    host.apply(host.session.ask('cd' * 16, 'reboot', 'revocable', 'pre', 4,
                                time.monotonic()))
    answer = host.run(5, lambda o: type(o) is session_module.Answer)
    assert answer.result == 'accept'


def test_sigterm_is_an_exit_not_a_failure(host, daemon):
    proc = daemon()
    host.run(2)
    proc.send_signal(signal.SIGTERM)
    exited = host.run(3, lambda o: type(o) is session_module.Exited)
    assert exited is not None
    assert 'Failure' not in kinds(host.outputs)
    assert proc.wait(5) == 0


def test_a_frozen_guest_fails_once_and_recovers_without_a_false_replay(
        host, daemon):
    proc = daemon()
    host.run(2)
    proc.send_signal(signal.SIGSTOP)
    try:
        failure = host.run(3, lambda o: type(o) is session_module.Failure)
        assert failure is not None and failure.cause == 'heartbeat_lost'
    finally:
        proc.send_signal(signal.SIGCONT)
    recovered = host.run(4, lambda o: type(o) is session_module.Recovered)
    assert recovered is not None
    assert kinds(host.outputs).count('Failure') == 1
    assert 'CutOff' not in kinds(host.outputs)
