"""The channel hub on real unix sockets: socketpairs and a listening
socket in tmp_path, the hub's own native thread, the backend under test
(``VMHA_CONCURRENCY_BACKEND``).  What a monitor relies on: bytes arrive
intact and in order whatever the read boundaries, every connection ends
in exactly one event, a guest that floods or never reads costs bounded
memory and never holds up another guest, and nothing the caller does
blocks."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import BACKEND
from vmha import concurrency
from vmha.virt.libvirt import channel

ROOT = str(pathlib.Path(__file__).resolve().parents[2])


class Harness:
    """A started hub whose wake() ends a NativePool wait, as the
    monitor's loop does, and the events collected so far."""

    def __init__(self, **kwargs):
        self.backend = concurrency.get(BACKEND)
        self.pool = concurrency.NativePool(self.backend, 1)
        self.wakes = 0

        def wake():
            self.wakes += 1
            self.pool.wake()
        self.hub = channel.ChannelHub(wake, backend=self.backend, **kwargs)
        self.hub.start()
        self.events = []
        self.peers = []

    def collect(self):
        self.events.extend(self.hub.collect())
        return self.events

    def until(self, predicate, timeout=5.0, what='events'):
        deadline = time.monotonic() + timeout
        while True:
            self.collect()
            if predicate():
                return self.events
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail('timed out waiting for %s; got %r'
                            % (what, self.events[-10:]))
            self.pool.wait(min(left, 0.2))

    def kinds(self, key):
        return [e.kind for e in self.events if e.key == key]

    def data(self, key):
        return b''.join(e.data for e in self.events
                        if e.key == key and e.kind == channel.DATA)

    def pair(self, key):
        """An adopted socketpair: the returned end is the 'guest'."""
        ours, guest = socket.socketpair()
        self.peers.append(guest)
        self.hub.adopt(key, ours)
        return guest

    def close(self):
        self.hub.stop()
        self.pool.close()
        for peer in self.peers:
            peer.close()


@pytest.fixture
def harness():
    made = []

    def make(**kwargs):
        made.append(Harness(**kwargs))
        return made[-1]
    yield make
    for item in made:
        item.close()


def listener(tmp_path, name='hb.sock', backlog=256):
    path = str(tmp_path / name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(backlog)
    return server, path


def recv_exactly(sock, count, timeout=5.0):
    sock.settimeout(timeout)
    data = b''
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def closed_by_hub(sock):
    """The hub closed its end: EOF, or a reset when it left bytes unread."""
    try:
        return recv_exactly(sock, 1) == b''
    except ConnectionResetError:
        return True


def drain_wait(seconds):
    """Let the hub thread run (it is native: a plain sleep is enough,
    but under eventlet let the hub of greenthreads run too)."""
    concurrency.get(BACKEND).sleep(seconds)


# --- connecting --------------------------------------------------------------

def test_open_connects_and_bytes_flow_both_ways(harness, tmp_path):
    h = harness()
    server, path = listener(tmp_path)
    h.hub.open('vm-1', path)
    h.until(lambda: h.kinds('vm-1') == ['connected'])
    guest, _ = server.accept()
    guest.sendall(b'{"type":"init"}\n')
    h.until(lambda: h.data('vm-1') == b'{"type":"init"}\n')
    assert h.hub.send('vm-1', b'{"type":"init_ack"}\n') is True
    assert recv_exactly(guest, 20) == b'{"type":"init_ack"}\n'
    assert h.wakes >= 2  # the hub woke the caller for each news
    guest.close()
    server.close()


def test_bytes_sent_before_the_connect_completes_are_written(harness,
                                                            tmp_path):
    h = harness()
    server, path = listener(tmp_path)
    h.hub.open('vm-1', path)
    assert h.hub.send('vm-1', b'early\n')
    guest, _ = server.accept()
    assert recv_exactly(guest, 6) == b'early\n'
    guest.close()
    server.close()


def test_a_missing_socket_fails_with_enoent(harness, tmp_path):
    h = harness()
    h.hub.open('vm-1', str(tmp_path / 'nothing-here'))
    h.until(lambda: h.kinds('vm-1') == ['failed'])
    assert h.events[0].data.startswith('ENOENT')
    assert h.hub.send('vm-1', b'x') is False  # forgotten
    assert len(h.hub) == 0


def test_a_socket_nobody_listens_on_fails_with_econnrefused(harness,
                                                           tmp_path):
    h = harness()
    server, path = listener(tmp_path)
    server.close()  # the file stays, as after QEMU died
    h.hub.open('vm-1', path)
    h.until(lambda: h.kinds('vm-1') == ['failed'])
    assert h.events[0].data.startswith('ECONNREFUSED')


def test_a_path_too_long_for_a_unix_socket_fails_clearly(harness):
    h = harness()
    h.hub.open('vm-1', '/' + 'x' * 200)
    h.until(lambda: h.kinds('vm-1') == ['failed'])
    assert 'too long' in h.events[0].data


def test_open_again_replaces_the_old_connection(harness, tmp_path):
    h = harness()
    server, path = listener(tmp_path)
    h.hub.open('vm-1', path)
    h.until(lambda: h.kinds('vm-1') == ['connected'])
    first, _ = server.accept()
    first.sendall(b'old\n')
    h.until(lambda: h.data('vm-1') == b'old\n')
    first.sendall(b'stale\n')
    h.hub.open('vm-1', path)  # the monitor reconnects
    second, _ = server.accept()
    assert closed_by_hub(first)  # the old one was closed
    h.events.clear()
    second.sendall(b'new\n')
    h.until(lambda: h.data('vm-1') == b'new\n')
    assert b'stale' not in h.data('vm-1')
    assert h.kinds('vm-1') == ['connected', 'data']
    first.close()
    second.close()
    server.close()


# --- data ------------------------------------------------------------------

def test_several_messages_in_one_read_arrive_intact(harness):
    h = harness()
    guest = h.pair('vm-1')
    h.until(lambda: h.kinds('vm-1') == ['connected'])
    lines = b'{"seq":1}\n{"seq":2}\n{"seq":3}\n'
    guest.sendall(lines)
    h.until(lambda: h.data('vm-1') == lines)


def test_one_message_split_over_reads_arrives_intact(harness):
    h = harness(read_size=7)
    guest = h.pair('vm-1')
    line = b'{"type":"challenge_response","nonce":"' + b'a' * 32 + b'"}\n'
    guest.sendall(line[:10])
    h.until(lambda: h.data('vm-1') == line[:10])
    guest.sendall(line[10:])
    h.until(lambda: h.data('vm-1') == line)
    reads = [e.data for e in h.events if e.kind == channel.DATA]
    assert len(reads) >= len(line) // 7
    assert all(len(chunk) <= 7 for chunk in reads)


def test_data_stays_in_order_and_is_stamped_when_read(harness):
    h = harness(read_size=64)
    guest = h.pair('vm-1')
    expected = b''.join(b'%06d\n' % n for n in range(5000))
    before = time.monotonic()
    guest.sendall(expected)
    h.until(lambda: len(h.data('vm-1')) == len(expected))
    assert h.data('vm-1') == expected
    stamps = [e.at for e in h.events]
    assert stamps == sorted(stamps)
    assert before <= stamps[-1] <= time.monotonic()


# --- ends ------------------------------------------------------------------

def test_eof_is_one_closed_event(harness):
    h = harness()
    guest = h.pair('vm-1')
    guest.sendall(b'bye\n')
    guest.close()
    h.until(lambda: 'closed' in h.kinds('vm-1'))
    drain_wait(0.05)
    h.collect()
    assert h.kinds('vm-1') == ['connected', 'data', 'closed']
    assert h.events[-1].data == 'EOF'
    assert h.data('vm-1') == b'bye\n'
    assert h.hub.send('vm-1', b'x') is False
    assert h.hub.pending_out('vm-1') == 0
    h.hub.close('vm-1')  # idempotent after the hub closed it


def test_a_reset_is_one_closed_event(harness):
    h = harness()
    guest = h.pair('vm-1')
    h.until(lambda: h.kinds('vm-1') == ['connected'])
    assert h.hub.send('vm-1', b'unread by the guest\n')
    guest.sendall(b'x')
    drain_wait(0.05)
    # A unix socket closed with bytes it never read resets the peer.
    guest.close()
    h.until(lambda: 'closed' in h.kinds('vm-1'))
    drain_wait(0.05)
    h.collect()
    assert h.kinds('vm-1').count('closed') == 1
    why = [e.data for e in h.events if e.kind == 'closed'][0]
    assert why.startswith(('ECONNRESET', 'EPIPE', 'EOF'))


def test_close_is_idempotent_drops_pending_events_and_closes_the_socket(
        harness):
    h = harness()
    guest = h.pair('vm-1')
    guest.sendall(b'something\n')
    drain_wait(0.1)
    h.hub.close('vm-1')
    h.hub.close('vm-1')
    h.hub.close('never-opened')
    assert closed_by_hub(guest)
    assert h.collect() == []
    assert h.hub.send('vm-1', b'x') is False


# --- bounds ----------------------------------------------------------------

def fill(hub, key, chunk=b'x' * 1024, settle=0.05, rounds=2000):
    """Send until the hub refuses and its buffer no longer drains (the
    kernel's socket buffer is full too)."""
    for _ in range(rounds):
        if hub.send(key, chunk):
            continue
        before = hub.pending_out(key)
        drain_wait(settle)
        if hub.pending_out(key) == before and not hub.send(key, chunk):
            return
    pytest.fail('the hub never refused a send')


def test_send_refuses_past_out_limit_and_other_guests_go_on(harness):
    h = harness(out_limit=8192)
    deaf = h.pair('deaf')  # never reads
    other = h.pair('other')
    h.until(lambda: 'connected' in h.kinds('other'))
    fill(h.hub, 'deaf')
    waiting = h.hub.pending_out('deaf')
    assert 8192 - 1024 < waiting <= 8192
    assert h.hub.send('deaf', b'y' * 8192) is False
    assert h.hub.pending_out('deaf') == waiting  # nothing queued
    # The hub thread still serves everyone else, both ways.
    other.sendall(b'ping\n')
    h.until(lambda: h.data('other') == b'ping\n')
    assert h.hub.send('other', b'pong\n')
    assert recv_exactly(other, 5) == b'pong\n'
    # Once the deaf guest reads, its queue drains.
    deaf.setblocking(False)
    got = 0
    deadline = time.monotonic() + 5
    while h.hub.pending_out('deaf') and time.monotonic() < deadline:
        try:
            got += len(deaf.recv(65536))
        except BlockingIOError:
            drain_wait(0.01)
    assert h.hub.pending_out('deaf') == 0
    assert h.hub.send('deaf', b'z')


def test_one_send_larger_than_out_limit_is_refused_whole(harness):
    h = harness(out_limit=100)
    guest = h.pair('vm-1')
    assert h.hub.send('vm-1', b'x' * 101) is False
    assert h.hub.send('vm-1', b'x' * 100) is True
    assert recv_exactly(guest, 100) == b'x' * 100


def settled_reads(hub, quiet=0.2, timeout=5.0):
    """hub.reads once it stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = -1
    while hub.reads != last and time.monotonic() < deadline:
        last = hub.reads
        drain_wait(quiet)
    return last


def test_backpressure_stops_reading_past_in_limit_until_collect(harness):
    h = harness(in_limit=1000, read_size=100)
    guest = h.pair('vm-1')
    guest.sendall(b'f' * 5000)  # the socket buffer holds it all
    received = b''
    batches = []
    while len(received) < 5000 and len(batches) < 20:
        settled_reads(h.hub, quiet=0.1)
        held = b''.join(e.data for e in h.hub.collect() if e.kind == 'data')
        batches.append(len(held))
        received += held
    assert received == b'f' * 5000
    # Reading stopped each time 1000 bytes waited (a read may straddle the
    # limit), and went on after each collect.
    assert all(1000 <= size < 1100 for size in batches[:-1]), batches
    assert len(batches) >= 5


def test_a_flood_on_one_socket_never_delays_another(harness):
    h = harness(in_limit=1 << 20, read_size=4096)
    flood = h.pair('flood')
    quiet = h.pair('quiet')
    h.until(lambda: 'connected' in h.kinds('quiet'))
    flood.setblocking(False)
    blob = b'g' * 65536
    for _ in range(8):
        try:
            flood.send(blob)
        except BlockingIOError:
            break
    sent = time.monotonic()
    quiet.sendall(b'answer\n')
    h.until(lambda: h.data('quiet') == b'answer\n')
    got = [e for e in h.events if e.key == 'quiet' and e.kind == 'data']
    flood_reads_before = sum(
        1 for e in h.events[:h.events.index(got[0])]
        if e.key == 'flood' and e.at >= sent)
    assert flood_reads_before <= 2  # one read each per readiness


def test_two_hundred_connections_at_once(harness, tmp_path):
    h = harness()
    server, path = listener(tmp_path, backlog=512)
    keys = ['vm-%03d' % n for n in range(200)]
    for key in keys:
        h.hub.open(key, path)
    h.until(lambda: sum(1 for e in h.events if e.kind == 'connected') == 200,
            timeout=10, what='200 connections')
    guests = [server.accept()[0] for _ in keys]
    for n, guest in enumerate(guests):
        guest.sendall(b'guest %d\n' % n)
    received = {}
    h.until(lambda: len({e.key for e in h.events if e.kind == 'data'}) == 200
            and sum(len(e.data) for e in h.events if e.kind == 'data')
            == sum(len(b'guest %d\n' % n) for n in range(200)),
            timeout=10, what='200 greetings')
    for event in h.events:
        if event.kind == 'data':
            received[event.key] = received.get(event.key, b'') + event.data
    assert sorted(received.values()) == sorted(b'guest %d\n' % n
                                               for n in range(200))
    for key in keys:
        assert h.hub.send(key, b'ack\n')
    for guest in guests:
        assert recv_exactly(guest, 4) == b'ack\n'
    assert len(h.hub) == 200
    for guest in guests:
        guest.close()
    server.close()
    h.until(lambda: sum(1 for e in h.events if e.kind == 'closed') == 200,
            timeout=10, what='200 EOFs')
    assert len(h.hub) == 0


# --- stop --------------------------------------------------------------------

def test_stop_closes_every_socket_and_joins_the_thread(harness):
    h = harness()
    guests = [h.pair('vm-%d' % n) for n in range(5)]
    h.until(lambda: len(h.events) == 5)
    thread = h.hub._thread
    assert h.hub.running and h.hub.turnover_age() < 2
    h.hub.stop()
    assert not thread.is_alive() and not h.hub.running
    for guest in guests:
        assert recv_exactly(guest, 1) == b''
    assert h.hub.send('vm-0', b'x') is False
    h.hub.open('vm-9', '/nowhere')  # ignored, never raises
    h.hub.close('vm-0')
    assert len(h.hub) == 0


def test_callers_on_many_threads_never_break_the_hub(harness, tmp_path):
    """open, adopt, send and close racing from four threads on twenty
    keys, peers hanging up: no caller raises, the hub thread lives on,
    and stop leaves no descriptor of the hub's open."""
    import random
    import threading
    before = set(os.listdir('/proc/self/fd'))
    h = harness(out_limit=4096)
    server, path = listener(tmp_path, backlog=1024)
    server.setblocking(False)
    peers, errors = [], []

    def caller(seed):
        chance = random.Random(seed)
        try:
            for _ in range(1500):
                key, roll = chance.randrange(20), chance.random()
                if roll < 0.05:
                    h.hub.open(key, path)
                elif roll < 0.08:
                    h.hub.close(key)
                elif roll < 0.10:
                    ours, theirs = socket.socketpair()
                    peers.append(theirs)
                    h.hub.adopt(key, ours)
                elif roll < 0.12 and peers:
                    peers.pop(0).close()
                else:
                    h.hub.send(key, b'x' * chance.randrange(1, 300))
        except Exception as error:  # what the test is about
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        h.hub.collect()
        try:
            peers.append(server.accept()[0])
        except BlockingIOError:
            drain_wait(0.001)
    assert errors == []
    assert h.hub._thread.is_alive()
    h.hub.stop()
    for peer in peers:
        peer.close()
    server.close()
    h.pool.close()
    h.peers = []
    leaked = set(os.listdir('/proc/self/fd')) - before
    # The pool's wakeup pipe is the harness's (2 descriptors), not the hub's.
    assert len(leaked) <= 2, leaked


def test_a_hub_thread_that_dies_says_so_and_closes_everything(harness,
                                                              caplog):
    h = harness()
    guest = h.pair('vm-1')
    h.until(lambda: h.kinds('vm-1') == ['connected'])

    def broken():
        raise RuntimeError('a bug')
    h.hub._run_commands = broken
    h.hub.open('other', '/nowhere')  # wakes the hub thread
    deadline = time.monotonic() + 5
    while h.hub.running and time.monotonic() < deadline:
        drain_wait(0.01)
    assert not h.hub.running  # what a health check reads
    assert 'a bug' in caplog.text
    assert closed_by_hub(guest)
    assert h.hub.send('vm-1', b'x') is False


def test_stop_without_start(harness):
    hub = channel.ChannelHub(lambda: None)
    assert not hub.running
    hub.stop()
    hub.stop()


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        channel.ChannelHub(lambda: None, in_limit=0)


def test_the_hub_works_in_a_monkey_patched_process(tmp_path):
    """vmha-agent monkey patches under eventlet: the hub thread must still
    be native and its sockets unpatched, whatever the caller hands it."""
    script = tmp_path / 'patched.py'
    script.write_text('''
import eventlet
eventlet.monkey_patch()
import socket, sys, time
sys.path.insert(0, %r)
from vmha import concurrency
from vmha.virt.libvirt import channel
backend = concurrency.get('eventlet')
pool = concurrency.NativePool(backend, 1)
hub = channel.ChannelHub(pool.wake, backend=backend)
hub.start()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(%r)
server.listen(4)
hub.open('listened', %r)
ours, guest = socket.socketpair()   # green sockets
hub.adopt('paired', ours)
accepted, _ = server.accept()
accepted.sendall(b'one\\n')
guest.sendall(b'two\\n')
events = []
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    pool.wait(0.2)
    events += hub.collect()
    got = {e.key: e.data for e in events if e.kind == 'data'}
    if got == {'listened': b'one\\n', 'paired': b'two\\n'}:
        break
else:
    sys.exit('no data: %%r' %% events)
assert hub.send('paired', b'three\\n')
assert guest.recv(6) == b'three\\n'
import threading
assert not isinstance(hub._thread, threading.Thread), 'a greenthread'
assert hub._socket.socket is not socket.socket  # unpatched sockets
hub.stop()
print('ok')
''' % (ROOT, str(tmp_path / 's'), str(tmp_path / 's')))
    result = subprocess.run([sys.executable, str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
