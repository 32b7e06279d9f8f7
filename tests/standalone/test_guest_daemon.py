"""vmha-guest as a real process against a simulated host.

The test plays QEMU and the vmha agent at once: it listens on a unix
socket that the daemon's DEVICE points at (the daemon connects to a
socket where a guest would open its virtio-serial port) and speaks
doc/heartbeat-protocol.md to it.  Applications use the real client
module over the real API socket.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUEST = ROOT / 'guest'
sys.path.insert(0, str(GUEST))

import vmha_guest_client  # noqa: E402

pytestmark = pytest.mark.functional

INTERVAL_MS = 300
#: The interpreter that runs the daemon: a guest's may be as old as 3.8.
GUEST_PYTHON = os.environ.get('VMHA_GUEST_PYTHON', sys.executable)
NONCE_DIGITS = '0123456789abcdef'


class SimulatedHost:
    """The host end of the channel: accepts the daemon, speaks v1."""

    def __init__(self, path):
        self.path = path
        self.listener = None
        self.conn = None
        self.buffer = b''
        self.seq = 0
        self.received = []

    def listen(self):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        return self

    def accept(self, timeout=10):
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.buffer = b''
        return self

    def drop(self):
        """The host goes away (agent restart, migration switch-over)."""
        self.conn.close()
        self.conn = None

    def close(self):
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()

    def send_raw(self, data):
        self.conn.sendall(data)

    def send(self, mtype, **fields):
        self.seq += 1
        message = dict(fields, version=1, type=mtype, seq=self.seq)
        self.send_raw((json.dumps(message) + '\n').encode())
        return message

    def recv(self, timeout=5):
        """The next message from the guest, or None at timeout."""
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b'\n', 1)
        message = json.loads(line)
        self.received.append(message)
        return message

    def expect(self, mtype, timeout=5):
        """Skip other messages until one of ``mtype`` (inits repeat)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message is None:
                raise AssertionError('no %s from the guest within %s s; got '
                                     '%r' % (mtype, timeout,
                                             self.received[-5:]))
            if message['type'] == mtype:
                return message

    def register(self, interval_ms=INTERVAL_MS, action='reboot'):
        init = self.expect('init', timeout=10)
        self.send('init_ack', init_seq=init['seq'],
                  heartbeat_interval_ms=interval_ms,
                  corrective_action=action, vote_secs=8,
                  shutdown_notice_secs=8, suspend_notice_secs=8,
                  resume_notice_secs=13, restart_secs=300)
        return init

    def challenge(self, timeout=2):
        nonce = os.urandom(16).hex()
        sent = time.monotonic()
        self.send('challenge', nonce=nonce)
        response = self.expect('challenge_response', timeout)
        assert response['nonce'] == nonce
        return response, time.monotonic() - sent

    def challenge_until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response, _ = self.challenge()
            if predicate(response):
                return response
            time.sleep(INTERVAL_MS / 1000.0)
        raise AssertionError('no matching answer within %s s: %r'
                             % (timeout, self.received[-3:]))

    def notify(self, event, notification='revocable', phase='pre',
               timeout_secs=4):
        action_id = os.urandom(16).hex()
        self.send('action_notify', action_id=action_id, event=event,
                  notification=notification, phase=phase,
                  timeout_secs=timeout_secs)
        sent = time.monotonic()
        response = self.expect('action_response', timeout_secs + 1)
        assert response['action_id'] == action_id
        assert (response['event'], response['notification'],
                response['phase']) == (event, notification, phase)
        return response, time.monotonic() - sent


@pytest.fixture
def workdir():
    # A short path: unix socket paths are limited to 107 bytes.
    path = tempfile.mkdtemp(prefix='vmhag-')
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host(workdir):
    host = SimulatedHost(str(workdir / 'hb.sock'))
    yield host
    host.close()


def script(workdir, name, body):
    path = workdir / name
    path.write_text('#!/bin/sh\n' + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture
def start_daemon(workdir, host):
    procs = []

    def start(env=None, **settings):
        settings.setdefault('HB_INTERVAL', INTERVAL_MS)
        settings.setdefault('DEVICE', host.path)
        settings.setdefault('API_SOCKET', str(workdir / 'api.sock'))
        conf = workdir / 'heartbeat.conf'
        conf.write_text(''.join('%s=%s\n' % item
                                for item in settings.items()))
        log = open(workdir / 'daemon.log', 'w')
        proc = subprocess.Popen(
            [GUEST_PYTHON, str(GUEST / 'vmha_guest.py'), '--config',
             str(conf), '--foreground'],
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})))
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    log = workdir / 'daemon.log'
    if log.exists():
        sys.stdout.write(log.read_text())


def wait_for(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_registers_and_answers_each_challenge_with_its_nonce(
        host, start_daemon):
    host.listen()
    start_daemon(CORRECTIVE_ACTION='stop', VOTE=5)
    host.accept()
    init = host.register()
    assert init['heartbeat_interval_ms'] == INTERVAL_MS
    assert init['corrective_action'] == 'stop'
    assert init['vote_secs'] == 5
    assert init['restart_secs'] == 300
    seqs = [init['seq']]
    for _ in range(5):
        response, latency = host.challenge()
        assert response['health'] == 'healthy'
        assert latency < 0.5
        seqs.append(response['seq'])
        time.sleep(INTERVAL_MS / 1000.0)
    assert seqs == sorted(set(seqs)), 'seq must grow with every message'


def test_healthy_guest_with_a_slow_health_script_stays_healthy_and_prompt(
        workdir, host, start_daemon):
    """No false failure: a passing script that takes seconds neither
    delays an answer nor counts as ill health while it runs."""
    check = script(workdir, 'check', 'sleep 2\nexit 0\n')
    host.listen()
    start_daemon(HEALTH_CHECK_SCRIPT=check, HEALTH_CHECK_INTERVAL=3)
    host.accept()
    host.register()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response, latency = host.challenge()
        assert response['health'] == 'healthy', response
        assert latency < 0.5
        time.sleep(INTERVAL_MS / 1000.0)


def test_failing_health_script_makes_the_guest_unhealthy_with_its_reason(
        workdir, host, start_daemon):
    flag = workdir / 'broken'
    check = script(workdir, 'check', '''\
        if [ -e %s ]; then echo "disk /data full"; exit 3; fi
        exit 0
        ''' % flag)
    host.listen()
    start_daemon(HEALTH_CHECK_SCRIPT=check, HEALTH_CHECK_INTERVAL=1)
    host.accept()
    host.register()
    assert host.challenge()[0]['health'] == 'healthy'
    flag.touch()
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy')
    assert 'disk /data full' in response['reason']
    assert 'exited 3' in response['reason']
    assert response['corrective_action'] == 'reboot'
    flag.unlink()
    host.challenge_until(lambda r: r['health'] == 'healthy')


def test_wished_action_is_capped_by_what_the_host_granted(
        workdir, host, start_daemon):
    check = script(workdir, 'check', 'echo bad; exit 1\n')
    host.listen()
    start_daemon(HEALTH_CHECK_SCRIPT=check, HEALTH_CHECK_INTERVAL=1,
                 CORRECTIVE_ACTION='stop')
    host.accept()
    host.register(action='log')
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy')
    assert response['corrective_action'] == 'log'


def test_vote_script_rejects_stop_with_its_first_stdout_line(
        workdir, host, start_daemon):
    record = workdir / 'seen-events'
    handler = script(workdir, 'events', '''\
        echo "$1 $2 $VMHA_PHASE" >> %s
        if [ "$1" = revocable ] && [ "$2" = stop ]; then
            echo "database resync in progress"
            echo "second line is not the reason"
            exit 1
        fi
        exit 0
        ''' % record)
    host.listen()
    start_daemon(EVENT_HANDLING_SCRIPT=handler)
    host.accept()
    host.register()
    response, _ = host.notify('stop')
    assert response['result'] == 'reject'
    assert response['reason'] == 'database resync in progress'
    response, _ = host.notify('reboot')
    assert response['result'] == 'accept'
    response, _ = host.notify('unpause', notification='irrevocable',
                              phase='post')
    assert response['result'] == 'accept'
    assert record.read_text().splitlines() == [
        'revocable stop pre', 'revocable reboot pre',
        'irrevocable unpause post']
    # Answering votes did not stop the heartbeat.
    assert host.challenge()[0]['health'] == 'healthy'


def test_vote_script_that_hangs_counts_as_accept_before_the_timeout(
        workdir, host, start_daemon):
    handler = script(workdir, 'events', 'echo no; sleep 30; exit 1\n')
    host.listen()
    start_daemon(EVENT_HANDLING_SCRIPT=handler)
    host.accept()
    host.register()
    response, took = host.notify('stop', timeout_secs=2)
    assert response['result'] == 'accept'
    assert took < 2.0, 'the answer must reach the host before it gives up'
    assert host.challenge()[0]['health'] == 'healthy'


def test_application_that_stops_heartbeating_makes_the_guest_unhealthy(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register(action='stop')
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    assert oct(os.stat(api).st_mode & 0o777) == '0o660'
    client = vmha_guest_client.HeartbeatClient(
        'billing', interval_ms=200, corrective_action='stop',
        socket_path=api).start()
    assert client.granted_action == 'stop'
    # No false failure: a heartbeating application keeps it healthy.
    for _ in range(6):
        assert host.challenge()[0]['health'] == 'healthy'
        time.sleep(INTERVAL_MS / 1000.0)
    client.stop(unregister=False)      # as if it had died
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy',
                                    timeout=3)
    assert 'billing' in response['reason']
    assert response['corrective_action'] == 'stop'


def test_application_that_unregisters_leaves_without_a_failure(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    client = vmha_guest_client.HeartbeatClient(
        'batch', interval_ms=200, socket_path=api).start()
    client.set_health(False, 'queue stuck')
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy',
                                    timeout=3)
    assert 'batch' in response['reason'] and 'queue stuck' in \
        response['reason']
    client.stop()
    # The daemon hears of the unregistration in its own time (a busy
    # host: longer than a second); once healthy, it stays healthy.
    host.challenge_until(lambda r: r['health'] == 'healthy', timeout=10)
    for _ in range(3):
        assert host.challenge()[0]['health'] == 'healthy'
        time.sleep(INTERVAL_MS / 1000.0)


def test_application_vote_rejects_and_silent_application_accepts(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    seen = []

    def on_action(event, notification, phase):
        seen.append((event, notification, phase))
        if event == 'live_migrate_begin':
            return False, 'standby not in sync'
        return True, ''

    voter = vmha_guest_client.HeartbeatClient(
        'db', interval_ms=200, on_action=on_action, socket_path=api).start()
    silent = vmha_guest_client.HeartbeatClient(
        'mute', interval_ms=200, socket_path=api,
        on_action=lambda *args: time.sleep(10)).start()
    try:
        response, took = host.notify('live_migrate_begin', timeout_secs=2)
        assert response['result'] == 'reject'
        assert response['reason'] == 'standby not in sync'
        response, took = host.notify('pause', timeout_secs=2)
        assert response['result'] == 'accept'
        assert took < 2.0
        assert seen == [('live_migrate_begin', 'revocable', 'pre'),
                        ('pause', 'revocable', 'pre')]
    finally:
        voter.stop()
        silent.stop()


def test_sigterm_sends_exit(host, start_daemon):
    host.listen()
    proc = start_daemon()
    host.accept()
    host.register()
    host.challenge()
    proc.send_signal(signal.SIGTERM)
    message = host.expect('exit')
    assert message['reason']
    assert proc.wait(5) == 0


def test_host_absent_then_present_registers(host, start_daemon):
    start_daemon()
    time.sleep(1.0)                   # no host: the daemon waits
    host.listen()
    host.accept()
    host.register()
    assert host.challenge()[0]['health'] == 'healthy'


def test_host_reconnecting_gets_a_new_registration(host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    host.challenge()
    host.drop()
    host.accept()
    host.register()
    assert host.challenge()[0]['health'] == 'healthy'


def test_silent_host_and_not_registered_nack_bring_a_new_init(
        host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    host.challenge()
    started = time.monotonic()
    host.expect('init', timeout=3)        # 3 intervals without challenge
    assert time.monotonic() - started >= 2 * INTERVAL_MS / 1000.0
    host.register()
    host.challenge()
    host.send('nack', nack_seq=None, reason='not_registered')
    host.expect('init', timeout=1)


def test_garbage_split_and_coalesced_messages_from_the_host(
        host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    host.send_raw(b'\xff\xfe\n' + b'x' * 10000 + b'\n[1]\n'
                  + b'{"version":2,"type":"challenge","seq":1,'
                  b'"nonce":"aa"}\n{"version":1,"type":"new","seq":7}\n')
    reasons = [host.expect('nack')['reason'] for _ in range(5)]
    assert reasons == ['not_utf8', 'too_long', 'invalid', 'version',
                       'unknown_type']
    # One challenge split over three writes, then two in one write.
    line = b'{"version":1,"type":"challenge","seq":50,"nonce":"%s"}\n'
    first = line % b'1'
    host.send_raw(first[:10])
    time.sleep(0.05)
    host.send_raw(first[10:30])
    time.sleep(0.05)
    host.send_raw(first[30:])
    assert host.expect('challenge_response')['nonce'] == '1'
    host.send_raw(line % b'2' + line % b'3')
    assert host.expect('challenge_response')['nonce'] == '2'
    assert host.expect('challenge_response')['nonce'] == '3'


def test_host_that_never_reads_does_not_block_the_daemon(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    # Thousands of challenges the host never reads the answers to: the
    # socket buffer fills and the daemon must go on serving the API.
    batch = b''.join(
        b'{"version":1,"type":"challenge","seq":%d,"nonce":"%032x"}\n'
        % (n, n) for n in range(100, 8100))
    host.conn.setblocking(True)
    host.send_raw(batch)
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    client = vmha_guest_client.HeartbeatClient(
        'probe', interval_ms=200, socket_path=api)
    assert client.register(timeout=3)['type'] == 'register_ack'
    client.stop()


def test_bad_configuration_exits_2_with_one_readable_line(workdir):
    conf = workdir / 'heartbeat.conf'
    conf.write_text('HB_INTERVAL=1000\nCORRECTIVE_ACTION=explode\n')
    proc = subprocess.run(
        [GUEST_PYTHON, str(GUEST / 'vmha_guest.py'), '--config',
         str(conf)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert 'heartbeat.conf:2' in lines[0]
    assert 'CORRECTIVE_ACTION' in lines[0] and 'log|reboot|stop' in lines[0]


def test_sample_event_handler_rejects_stop_while_on_hold(
        workdir, host, start_daemon):
    hold = workdir / 'hold'
    host.listen()
    start_daemon(EVENT_HANDLING_SCRIPT=GUEST / 'dist' / 'event-handler',
                 env={'VMHA_HOLD_FILE': str(hold)})
    host.accept()
    host.register()
    assert host.notify('stop')[0]['result'] == 'accept'
    hold.write_text('nightly backup running\n')
    response, _ = host.notify('stop')
    assert (response['result'], response['reason']) == (
        'reject', 'nightly backup running')
    assert host.notify('pause')[0]['result'] == 'accept'


def test_sample_app_killed_makes_the_guest_unhealthy_naming_it(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    app = subprocess.Popen(
        [GUEST_PYTHON, str(GUEST / 'examples' / 'sample_app.py'),
         '--name', 'sample', '--interval-ms', '300', '--socket', api,
         '--unhealthy-flag', str(workdir / 'sick'),
         '--busy-flag', str(workdir / 'busy')],
        stdout=subprocess.PIPE, text=True)
    try:
        assert 'sample registered' in app.stdout.readline()
        for _ in range(4):
            assert host.challenge()[0]['health'] == 'healthy'
            time.sleep(INTERVAL_MS / 1000.0)
        (workdir / 'busy').write_text('settling accounts\n')
        response, _ = host.notify('reboot')
        assert (response['result'], response['reason']) == (
            'reject', 'settling accounts')
        app.kill()
        response = host.challenge_until(
            lambda r: r['health'] == 'unhealthy', timeout=3)
        assert 'application sample missed its heartbeat' in \
            response['reason']
    finally:
        app.kill()
        app.wait(5)
        app.stdout.close()


def api_exchange(path, *lines):
    """Send raw lines to the API; return the replies, one per line."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3)
    sock.connect(path)
    replies = []
    with sock, sock.makefile('rb') as replies_file:
        for line in lines:
            sock.sendall(line)
            replies.append(json.loads(replies_file.readline()))
    return replies


def test_bad_api_requests_are_refused_one_by_one_and_change_nothing(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    replies = api_exchange(
        api, b'not json\n', b'x' * 5000 + b'\n',
        b'{"type":"heartbeat"}\n',
        b'{"type":"register","name":""}\n',
        b'{"type":"register","name":"a\\u0007b"}\n',
        b'{"type":"register","name":"ok","interval_ms":5}\n',
        b'{"type":"register","name":"ok","corrective_action":"nuke"}\n',
        b'{"type":"register","name":"ok","interval_ms":200}\n',
        b'{"type":"dance"}\n')
    assert [r['type'] for r in replies] == ['error'] * 7 + [
        'register_ack', 'error']
    assert replies[0]['reason'] == 'not_json'
    assert replies[1]['reason'] == 'too_long'
    assert replies[2]['reason'] == 'not registered'
    assert 'interval_ms' in replies[5]['reason']
    assert 'corrective_action' in replies[6]['reason']
    # None of that made the guest unhealthy, except the application
    # that registered and then went silent.
    assert host.challenge()[0]['health'] == 'healthy'
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy',
                                    timeout=3)
    assert 'application ok' in response['reason']


def test_a_restarted_application_takes_over_its_registration(
        workdir, host, start_daemon):
    host.listen()
    start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    first = vmha_guest_client.HeartbeatClient(
        'worker', interval_ms=200, socket_path=api).start()
    first.stop(unregister=False)           # crashed
    host.challenge_until(lambda r: r['health'] == 'unhealthy', timeout=3)
    second = vmha_guest_client.HeartbeatClient(
        'worker', interval_ms=200, socket_path=api).start()
    try:
        host.challenge_until(lambda r: r['health'] == 'healthy', timeout=3)
    finally:
        second.stop()


def test_a_port_with_no_host_reads_eof_and_is_polled_not_spun(
        workdir, start_daemon):
    """A virtio-serial port without a host connected reads end-of-file
    at once: the daemon must wait and look again, not spin a core."""
    proc = start_daemon(DEVICE='/dev/null')
    time.sleep(2.0)
    assert proc.poll() is None
    with open('/proc/%d/stat' % proc.pid) as stat_file:
        fields = stat_file.read().rsplit(')', 1)[1].split()
    cpu_secs = (int(fields[11]) + int(fields[12])) / os.sysconf(
        'SC_CLK_TCK')
    assert cpu_secs < 1.0, 'a spinning loop uses the whole 2 s'
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


def test_an_application_registers_again_with_a_restarted_daemon(
        workdir, host, start_daemon):
    host.listen()
    first = start_daemon()
    host.accept()
    host.register()
    api = str(workdir / 'api.sock')
    assert wait_for(lambda: os.path.exists(api))
    client = vmha_guest_client.HeartbeatClient(
        'cache', interval_ms=200, socket_path=api).start()
    try:
        first.send_signal(signal.SIGTERM)
        host.expect('exit')
        assert first.wait(5) == 0
        start_daemon()
        host.accept()
        host.register()
        assert wait_for(lambda: os.path.exists(api))
        time.sleep(1.0)                   # the client finds it again
        for _ in range(3):
            assert host.challenge()[0]['health'] == 'healthy'
            time.sleep(INTERVAL_MS / 1000.0)
    finally:
        client.stop(unregister=False)
    # The new daemon knows it: its silence now is a failure.
    response = host.challenge_until(lambda r: r['health'] == 'unhealthy',
                                    timeout=3)
    assert 'application cache' in response['reason']


SHELLS = [['sh']] + ([['busybox', 'sh']] if shutil.which('busybox') else [])


@pytest.mark.parametrize('shell', SHELLS, ids=lambda s: ' '.join(s))
def test_the_init_script_starts_stops_and_reports_status(
        workdir, host, shell):
    wrapper = workdir / 'vmha-guest'
    conf = workdir / 'heartbeat.conf'
    conf.write_text('HB_INTERVAL=%d\nDEVICE=%s\nAPI_SOCKET=%s\n' % (
        INTERVAL_MS, host.path, workdir / 'api.sock'))
    wrapper.write_text('#!/bin/sh\nexec %s %s --config %s "$@"\n' % (
        GUEST_PYTHON, GUEST / 'vmha_guest.py', conf))
    wrapper.chmod(0o755)
    env = dict(os.environ, DAEMON=str(wrapper),
               PIDFILE=str(workdir / 'vmha-guest.pid'))

    def init(action):
        return subprocess.run(
            shell + [str(GUEST / 'dist' / 'vmha-guest.init'), action],
            env=env, capture_output=True, text=True, timeout=20)

    host.listen()
    assert init('status').returncode == 3
    assert init('start').returncode == 0
    host.accept()
    host.register()
    assert host.challenge()[0]['health'] == 'healthy'
    assert init('status').returncode == 0
    assert init('stop').returncode == 0
    assert host.expect('exit')
    assert init('status').returncode == 3
    assert not (workdir / 'vmha-guest.pid').exists()


def test_the_init_script_refuses_a_bad_configuration(workdir):
    wrapper = workdir / 'vmha-guest'
    conf = workdir / 'heartbeat.conf'
    conf.write_text('VOTE=soon\n')
    wrapper.write_text('#!/bin/sh\nexec %s %s --config %s "$@"\n' % (
        GUEST_PYTHON, GUEST / 'vmha_guest.py', conf))
    wrapper.chmod(0o755)
    proc = subprocess.run(
        ['sh', str(GUEST / 'dist' / 'vmha-guest.init'), 'start'],
        env=dict(os.environ, DAEMON=str(wrapper),
                 PIDFILE=str(workdir / 'vmha-guest.pid')),
        capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert 'VOTE' in proc.stderr
    assert not (workdir / 'vmha-guest.pid').exists()


@pytest.mark.skipif(not shutil.which('systemd-analyze'),
                    reason='needs systemd-analyze')
def test_the_systemd_unit_is_valid(workdir):
    unit = workdir / 'vmha-guest.service'
    shutil.copy(GUEST / 'dist' / 'vmha-guest.service', unit)
    proc = subprocess.run(['systemd-analyze', 'verify', str(unit)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == '', proc.stderr
