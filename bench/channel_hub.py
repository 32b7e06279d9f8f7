"""The channel hub's cost and latency with many guests: hub CPU per
message and send -> echo -> collect latency.

``--guests`` (default 500) socketpairs stand in for heartbeat channels.
The "guests" run in a child process (one epoll loop echoing every byte
it reads, so their CPU is not the agent's); the agent side is one
``ChannelHub`` and a caller loop shaped like the heartbeat monitor's:
it sends a challenge-sized line per guest, waits on a ``NativePool``
that the hub wakes, collects, and splits echoes on newlines.

Two runs:

* **compressed**: ``--rounds`` rounds as fast as possible (each round
  one line to every guest, then wait for every echo): hub CPU per
  message, the caller's CPU per message, messages per second;
* **paced**: ``--seconds`` of real time at ``--interval`` (default 1 s,
  the heartbeat default), each guest's line sent at its own offset in
  the interval as the monitor's schedule spreads them (``--tick``: what
  is due within that many seconds goes together, as a monitor timer
  of that granularity would): latency percentiles as a guest sees them,
  and the agent's CPU as % of a core.

Latency is from ``send()`` to the ``collect()`` that returned the whole
echoed line (what the monitor can act on); "read" is from ``send()`` to
the hub's read of its last byte (``ChannelEvent.at``).  From the
repository root::

    python bench/channel_hub.py [--guests 500] [--rounds 200]
        [--seconds 5] [--backend eventlet|threading]
"""

import argparse
import heapq
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

LINE = (b'{"version":1,"type":"challenge","seq":%08d,'
        b'"nonce":"9f0c2d5e8a7b41c3b6d2e0f1a4c5b6d7","key":%05d}\n')


SEQ_AT = LINE.index(b'%08d')


def echo_guests(socks):
    """The child: echo every byte back, until every socket closed."""
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    while by_fd:
        for fd, _ in poller.poll(1.0):
            sock = by_fd[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b''
            if not data:
                poller.unregister(fd)
                del by_fd[fd]
                sock.close()
                continue
            sock.setblocking(True)
            sock.sendall(data)
            sock.setblocking(False)
    os._exit(0)


def thread_cpu(thread):
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float('nan')
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Agent:
    """The hub and a caller loop that matches echoes to sends."""

    def __init__(self, backend_name, guests):
        from vmha import concurrency
        from vmha.virt.libvirt import channel
        self.backend = concurrency.get(backend_name)
        self.pool = concurrency.NativePool(self.backend, 1)
        self.hub = channel.ChannelHub(self.pool.wake, backend=self.backend)
        self.guests = guests
        self.buffers = {}
        self.sent = {}  # (key, seq) -> send time
        self.latencies = []
        self.read_latencies = []
        self.seq = 0

    def start(self):
        """Fork the guests first: the child must hold no hub end (the
        guests would never see EOF) and no hub thread."""
        pairs = [socket.socketpair() for _ in range(self.guests)]
        pid = os.fork()
        if pid == 0:
            for ours, _ in pairs:
                ours.close()
            echo_guests([theirs for _, theirs in pairs])
        self.child = pid
        self.hub.start()
        for key, (ours, theirs) in enumerate(pairs):
            theirs.close()
            self.hub.adopt(key, ours)
        connected = 0
        while connected < self.guests:
            self.pool.wait(0.5)
            connected += sum(1 for e in self.hub.collect()
                             if e.kind == 'connected')

    def send(self, key, now):
        self.seq += 1
        self.sent[(key, self.seq)] = now
        if not self.hub.send(key, LINE % (self.seq, key)):
            raise RuntimeError('send refused for guest %d' % key)

    def receive(self, timeout):
        self.pool.wait(timeout)
        events = self.hub.collect()
        done = time.monotonic()
        count = 0
        for event in events:
            if event.kind != 'data':
                raise RuntimeError('unexpected %r' % (event,))
            buffer = self.buffers.get(event.key, b'') + event.data
            *lines, rest = buffer.split(b'\n')
            self.buffers[event.key] = rest
            for line in lines:
                seq = int(line[SEQ_AT:SEQ_AT + 8])
                started = self.sent.pop((event.key, seq))
                self.latencies.append(done - started)
                self.read_latencies.append(event.at - started)
                count += 1
        return count

    def stop(self):
        self.hub.stop()
        self.pool.close()
        os.waitpid(self.child, 0)


def compressed(agent, rounds):
    guests = agent.guests
    agent.latencies.clear()
    hub_cpu = thread_cpu(agent.hub._thread)
    caller_cpu = time.thread_time()
    started = time.monotonic()
    for _ in range(rounds):
        now = time.monotonic()
        for key in range(guests):
            agent.send(key, now)
        echoed = 0
        while echoed < guests:
            echoed += agent.receive(1.0)
    wall = time.monotonic() - started
    messages = rounds * guests
    return {
        'messages': messages,
        'per_second': messages / wall,
        'hub_us': (thread_cpu(agent.hub._thread) - hub_cpu) / messages * 1e6,
        'caller_us': (time.thread_time() - caller_cpu) / messages * 1e6,
    }


def paced(agent, seconds, interval, tick):
    guests = agent.guests
    agent.latencies.clear()
    agent.read_latencies.clear()
    hub_cpu = thread_cpu(agent.hub._thread)
    caller_cpu = time.thread_time()
    process_cpu = time.process_time()
    started = time.monotonic()
    step = interval / guests
    due = [(started + key * step, key) for key in range(guests)]
    sent = 0
    end = started + seconds
    while time.monotonic() < end or agent.sent:
        now = time.monotonic()
        while due[0][0] <= now + tick and now < end:
            _, key = heapq.heapreplace(due, (due[0][0] + interval, due[0][1]))
            agent.send(key, now)
            sent += 1
        wait = max(tick, due[0][0] - time.monotonic())
        agent.receive(min(wait, 0.05))
    wall = time.monotonic() - started
    return {
        'messages': sent,
        'hub_pct': (thread_cpu(agent.hub._thread) - hub_cpu) / wall * 100,
        'caller_pct': (time.thread_time() - caller_cpu) / wall * 100,
        'process_pct': (time.process_time() - process_cpu) / wall * 100,
        'p50_ms': percentile(agent.latencies, 0.5) * 1e3,
        'p99_ms': percentile(agent.latencies, 0.99) * 1e3,
        'max_ms': max(agent.latencies) * 1e3,
        'read_p50_ms': percentile(agent.read_latencies, 0.5) * 1e3,
        'read_p99_ms': percentile(agent.read_latencies, 0.99) * 1e3,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--guests', type=int, default=500)
    parser.add_argument('--rounds', type=int, default=200)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--interval', type=float, default=1.0)
    parser.add_argument('--tick', type=float, default=0.0,
                        help='paced: send what is due within TICK seconds '
                        'together (a monitor timer\'s granularity); 0: '
                        'each line at its own time')
    parser.add_argument('--backend', default='eventlet',
                        choices=('eventlet', 'threading'))
    args = parser.parse_args()
    os.environ['VMHA_CONCURRENCY_BACKEND'] = args.backend
    agent = Agent(args.backend, args.guests)
    agent.start()
    try:
        result = compressed(agent, args.rounds)
        print('compressed, %d guests x %d rounds (%s): %.0f messages/s; '
              'hub CPU %.1f us/message, caller %.1f us/message '
              '(send + collect + line split)'
              % (args.guests, args.rounds, args.backend,
                 result['per_second'], result['hub_us'],
                 result['caller_us']))
        result = paced(agent, args.seconds, args.interval, args.tick)
        print('paced, tick %g s, %d guests at %.1f s for %.0f s '
              '(%d messages): '
              'send->collect p50 %.2f ms, p99 %.2f ms, max %.2f ms; '
              'send->read p50 %.2f ms, p99 %.2f ms; CPU %% of a core: '
              'hub %.2f, caller %.2f, whole process %.2f'
              % (args.tick, args.guests, args.interval, args.seconds,
                 result['messages'], result['p50_ms'], result['p99_ms'],
                 result['max_ms'], result['read_p50_ms'],
                 result['read_p99_ms'], result['hub_pct'],
                 result['caller_pct'], result['process_pct']))
    finally:
        agent.stop()


if __name__ == '__main__':
    main()
