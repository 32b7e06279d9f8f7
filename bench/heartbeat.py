"""The heartbeat monitor at scale: simulated guests, no QEMU (issue 17's
benchmark part (b)).

``--guests`` (default 500) domains on the project's fake libvirt
(``tests/fixtures``), each with a heartbeat channel whose unix socket a
child process listens on, as QEMU would; the child plays every guest: it
registers (interval 1 s) and answers each challenge as soon as it reads
it.  The agent is the one ``vmha.agent.build`` wires (the heartbeat
monitor with its ChannelHub and pool, the guest-agent monitor pinging the
same domains every 5 s, journal, outbox), in this process; the guests'
CPU is the child's and is not counted.

After every guest is enabled, ``--seconds`` (default 30) are measured:

* the agent's CPU time (this process, every thread) as % of one core;
* the challenge-to-response latency the monitor records
  (``vmha_heartbeat_response_latency_seconds``: challenge written to
  answer handled), p50 and p99;
* failures decided (must be 0: every guest answers).

Targets (issue 17): CPU < 5 % of a core, p99 < 10 ms.  Real-VM parts (a)
and (c) need the test bed and are not here.  From the repository root::

    python bench/heartbeat.py [--guests 500] [--seconds 30]
        [--backend eventlet|threading] [--spread 1.0]

``--spread`` (default 1 s): guests register at random moments within it,
so their challenges are spread over the interval as those of guests that
booted at different times; ``--spread 0`` registers them all at once
(every challenge of the host in one burst: the worst case).
"""

import argparse
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

CHANNEL = 'org.vmha.heartbeat.0'


def guests_main(directory, count, spread):
    """The child: listen on ``count`` sockets, be every guest; each
    registers ``spread`` seconds at most after the agent connects (a
    random phase, as guests whose timers run on their own)."""
    import random
    selector = selectors.DefaultSelector()
    waiting = []  # (when, conn): inits not yet sent
    for index in range(count):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(directory, '%d.sock' % index))
        listener.listen(2)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, None)
    print('ready', flush=True)
    state = {}
    while True:
        now = time.monotonic()
        for when, conn in [w for w in waiting if w[0] <= now]:
            waiting.remove((when, conn))
            conn.send(_line('init', 1, heartbeat_interval_ms=1000,
                            corrective_action='log'))
        for key, _ in selector.select(0.01 if waiting else 1.0):
            if key.data is None:
                conn, _ = key.fileobj.accept()
                conn.setblocking(False)
                guest = {'seq': 1, 'buffer': b''}
                state[conn] = guest
                selector.register(conn, selectors.EVENT_READ, guest)
                waiting.append((time.monotonic() + random.random() * spread,
                                conn))
                continue
            conn, guest = key.fileobj, key.data
            try:
                data = conn.recv(65536)
            except OSError:
                data = b''
            if not data:
                selector.unregister(conn)
                conn.close()
                continue
            guest['buffer'] += data
            *lines, guest['buffer'] = guest['buffer'].split(b'\n')
            for line in lines:
                message = json.loads(line)
                if message['type'] == 'challenge':
                    guest['seq'] += 1
                    conn.send(_line('challenge_response', guest['seq'],
                                    nonce=message['nonce'],
                                    health='healthy'))


def _line(kind, seq, **fields):
    return json.dumps(dict(version=1, type=kind, seq=seq, **fields),
                      separators=(',', ':')).encode() + b'\n'


def measure(args):
    os.environ['VMHA_CONCURRENCY_BACKEND'] = args.backend
    from oslo_service import backend as service_backend
    service_backend.init_backend(service_backend.BackendType(args.backend))
    from oslo_config import cfg

    from tests.fixtures import virt
    from vmha import agent as agent_lib
    from vmha import concurrency
    import vmha.conf
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib

    # The main task must yield to the backend's loops (eventlet's hub).
    sleep = concurrency.get(args.backend).sleep
    directory = tempfile.mkdtemp(prefix='hbb-')
    child = subprocess.Popen(
        [sys.executable, __file__, '--child', directory,
         '--guests', str(args.guests), '--spread', str(args.spread)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == 'ready'
        conf = cfg.ConfigOpts()
        vmha.conf.register_opts(conf)
        conf([], project='vmha', default_config_files=[])
        conf.set_override('host', 'bench')
        conf.set_override('concurrency_backend', args.backend)
        conf.set_override('port', 0, group='health')
        conf.set_override('max_action', 'log', group='heartbeat')
        driver = virt.make_driver(clock=time.monotonic)
        for index in range(args.guests):
            dom = driver.fake.add_domain('vm-%04d' % index)
            dom.has_agent_channel = True
            dom.add_channel(CHANNEL, os.path.join(directory,
                                                  '%d.sock' % index))
        journal = db.Journal(os.path.join(directory, 'vmha.sqlite'))
        outbox = outbox_lib.Outbox(journal)
        service = agent_lib.build(conf, driver, journal, outbox, None)
        beats = service.heartbeat_monitor
        latencies = []
        beats.observe_latency = latencies.append
        service.start()
        deadline = time.monotonic() + 60
        while sum(1 for s in beats.status() if s['state'] == 'enabled') \
                < args.guests:
            if time.monotonic() > deadline:
                raise SystemExit('not every guest enabled within 60 s')
            sleep(0.2)
        sleep(2)
        del latencies[:]
        cpu, wall = time.process_time(), time.monotonic()
        sleep(args.seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        samples = sorted(latencies)
        failures = sum(beats.failures_total.values())
        states = {}
        for row in beats.status():
            states[row['state']] = states.get(row['state'], 0) + 1
        service.stop()
        journal.close()
    finally:
        child.kill()
        child.wait()
        shutil.rmtree(directory, ignore_errors=True)

    def quantile(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))]
    print('backend %s, %d guests at 1 s registered within %g s, '
          'guest-agent monitor on, %.0f s'
          % (args.backend, args.guests, args.spread, wall))
    print('  agent CPU: %.1f %% of a core (target < 5 %%)'
          % (100 * cpu / wall))
    print('  answers handled: %d (%.0f/s)' % (len(samples),
                                              len(samples) / wall))
    print('  challenge -> answer handled: p50 %.2f ms, p99 %.2f ms '
          '(target p99 < 10 ms)' % (1000 * quantile(0.5),
                                    1000 * quantile(0.99)))
    print('  failures: %d; states at the end: %s' % (failures, states))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--guests', type=int, default=500)
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--backend', default='eventlet',
                        choices=('eventlet', 'threading'))
    parser.add_argument('--spread', type=float, default=1.0,
                        help='seconds over which the guests register '
                             '(0: all at once, the worst case)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        guests_main(args.child, args.guests, args.spread)
    else:
        measure(args)


if __name__ == '__main__':
    main()
