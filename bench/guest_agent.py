"""Ping cycle wall time: vmha's guest-agent monitor against a one-at-a-time
loop (masakari-monitors' design), in the same run.

1,000 domains on the project's fake libvirt (``tests/fixtures``), each
with a guest-agent channel whose agent answers after ``--latency``
seconds (default 5 ms).  Hung agents behave as libvirt shows them on a
real host: the first ping times out after the timeout, later ones are
held 5 s until the guest answers again.

vmha: the monitor as ``vmha-agent`` builds it (``NativePool``, agent
connections of their own, journal), interval 5 s, timeout 2 s, threshold
2, for each pool size in ``--pools`` (32 is the default
``max_concurrent_pings``).  After one round with every guest healthy,
``N`` of them hang; the cycle wall time of a round is from its first ping
until every guest of the round has an outcome (an answer, libvirt's
error, or - for a guest already failing - the timeout passed).  The
worst of the next three rounds is printed: they contain the first
timeouts, the held pings and the verdicts.

One-at-a-time: the same pings, one after another, timeout 2 s, over the
same guests right after they hung (their first, cheapest round: later
rounds cost 5 s per hung guest).

Target: vmha's cycle <= timeout + 1 s (3 s) in every case.

``--realvm N`` then measures, on the real-VM test bed (libvirtd, QEMU
under TCG, qemu-ga), the time from SIGSTOP of a guest's QEMU to the
failure notification, N times each for vmha (default settings) and for
masakari-monitors' introspective monitor (its defaults), by running
their integration tests; prints each trial and the medians.  From the
repository root::

    python bench/guest_agent.py [--hung 0,10,100] [--pools 32,128]
        [--backend threading|eventlet] [--latency 0.005] [--realvm 5]
        [--suspects 128] [--no-serial]

``--suspects`` is ``max_suspect_pings`` (0: one shared budget, as
before the option; a tree from before it runs with 0 only).
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

TIMEOUT = 2.0
INTERVAL = 5.0
DOMAINS = 1000
PING = {'execute': 'guest-ping'}
SUSPECTS = 128  # [guest_agent] max_suspect_pings' default


def build(args, hung, pool_size, tmp):
    os.environ['VMHA_CONCURRENCY_BACKEND'] = args.backend
    from tests.fixtures import virt
    from vmha import concurrency
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.manager import failure_monitor
    from vmha.manager import guest_monitor
    from vmha.manager import selection
    from vmha.manager import state
    suspects = args.suspects
    driver = virt.make_driver(agent_calls=pool_size + suspects)
    driver.init_host()
    doms = []
    for index in range(DOMAINS):
        dom = driver.fake.add_domain('vm-%04d' % index)
        dom.has_agent_channel = True
        dom.agent_delay = args.latency
        doms.append(dom)
    journal = db.Journal(os.path.join(tmp, 'vmha-%d-%d.sqlite'
                                      % (hung, pool_size)))
    reporter = failure_monitor.Reporter(
        outbox_lib.Outbox(journal), state.StateStore(journal), 'bench')
    backend = concurrency.get(args.backend)
    monitor = guest_monitor.GuestAgentMonitor(
        driver, journal, reporter, selection.Selector(driver),
        concurrency.NativePool(backend, pool_size + suspects), backend,
        guest_monitor.Settings(interval=INTERVAL, timeout=TIMEOUT,
                               failure_threshold=2),
        # 0: one shared budget (and a tree from before the option runs)
        **({'suspect_pings': suspects} if suspects else {}))
    return driver, doms, monitor, journal


def wait_round(monitor, after, timeout=30):
    """(start, wall time) of the first round that starts after ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = monitor.status()
        starts = [s['last_ping_at'] for s in status
                  if s['last_ping_at'] is not None]
        if len(starts) == DOMAINS and min(starts) > after:
            start = min(starts)
            done = [s['last_outcome_at'] for s in status
                    if s['last_outcome_at'] is not None
                    and s['last_outcome_at'] >= start]
            if len(done) == DOMAINS:
                return start, max(done) - start
        time.sleep(0.01)
    raise RuntimeError('no complete round within %ss' % timeout)


def vmha_cycle(args, hung, pool_size, tmp):
    driver, doms, monitor, journal = build(args, hung, pool_size, tmp)
    monitor.start()
    try:
        start, _ = wait_round(monitor, 0)  # everybody healthy
        for dom in doms[::DOMAINS // hung] if hung else ():
            dom.agent_hung = True
        rounds = []
        for _ in range(3):
            start, wall = wait_round(monitor, start + INTERVAL / 2)
            rounds.append(wall)
        reported = sum(1 for s in monitor.status() if s['state'] in
                       ('error', 'reported'))
        return rounds, reported
    finally:
        monitor.stop()
        driver.cleanup()
        journal.close()


def one_at_a_time(args, hung, tmp):
    if args.no_serial:
        return float('nan')
    driver, doms, monitor, journal = build(args, hung, 1, tmp)
    for dom in doms[::DOMAINS // hung] if hung else ():
        dom.agent_hung = True
    from vmha.virt import exception
    started = time.monotonic()
    for dom in doms:
        try:
            driver.guest_agent_command(dom.UUIDString(), PING, TIMEOUT)
        except exception.AgentError:
            pass
    wall = time.monotonic() - started
    driver.cleanup()
    journal.close()
    return wall


REALVM_TESTS = {
    'vmha': ('tests/integration/test_guest_agent_realvm.py::'
             'test_a_hung_guest_is_one_failure_within_15s[stop_qemu]',
             'vmha: guest hung (stop_qemu) -> failure sent'),
    'masakari-monitors': ('tests/integration/test_peer_introspective.py',
                          'masakari-monitors: hung guest -> notification'),
}


def realvm(trials):
    import re
    import subprocess
    print('\nreal VMs: SIGSTOP of QEMU -> failure notification')
    medians = {}
    for who, (test, label) in REALVM_TESTS.items():
        values = []
        for _ in range(trials):
            out = subprocess.run(
                [sys.executable, '-m', 'pytest', '-q', '-p', 'no:warnings',
                 test], capture_output=True, text=True,
                env=dict(os.environ, VMHA_CONCURRENCY_BACKEND='threading'))
            found = re.search(re.escape(label) + r': ([0-9.]+)s', out.stdout)
            if found is None:
                print('%s: trial failed\n%s' % (who, out.stdout[-2000:]))
                continue
            values.append(float(found.group(1)))
            print('%-18s %.2fs' % (who, values[-1]))
            sys.stdout.flush()
        if values:
            medians[who] = sorted(values)[len(values) // 2]
            print('%-18s median %.2fs of %d' % (who, medians[who],
                                                len(values)))
    if len(medians) == 2:
        print('masakari-monitors / vmha: %.1fx' % (
            medians['masakari-monitors'] / medians['vmha']))
    return len(medians) == 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hung', default='0,10,100')
    parser.add_argument('--pools', default='32,128')
    parser.add_argument('--backend', default='threading',
                        choices=('threading', 'eventlet'))
    parser.add_argument('--latency', type=float, default=0.005)
    parser.add_argument('--realvm', type=int, default=0, metavar='N')
    parser.add_argument('--suspects', type=int, default=SUSPECTS,
                        help='max_suspect_pings (default: its default)')
    parser.add_argument('--no-serial', action='store_true',
                        help='skip the one-at-a-time loop (100 hung: '
                             '~200 s)')
    args = parser.parse_args(argv)
    from vmha import cmd
    # Monkey patching under eventlet: the bench's own waits must let the
    # monitor's greenthread run (without it no round ever completed).
    cmd.select_backend(args.backend)
    import logging
    logging.basicConfig(level=logging.ERROR)  # the verdicts are expected
    hung_cases = [int(n) for n in args.hung.split(',')]
    pools = [int(n) for n in args.pools.split(',')]
    print('%d guests, agent latency %.1f ms, interval %.0f s, timeout %.0f s,'
          ' backend %s, max_suspect_pings %d' % (
              DOMAINS, args.latency * 1000, INTERVAL, TIMEOUT, args.backend,
              args.suspects))
    print('%5s %6s %12s %7s %15s %8s' % ('hung', 'pool', 'vmha cycle',
                                         'target', 'one-at-a-time',
                                         'ratio'))
    sys.stdout.flush()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for hung in hung_cases:
            serial = one_at_a_time(args, hung, tmp)
            for pool_size in pools:
                rounds, failing = vmha_cycle(args, hung, pool_size, tmp)
                wall = max(rounds)
                ok = wall <= TIMEOUT + 1
                failed |= failing != hung
                skipped = serial != serial  # nan: --no-serial
                print('%5d %6d %11.2fs %7s %15s %8s  rounds %s%s' % (
                    hung, pool_size, wall, 'PASS' if ok else 'MISS',
                    '-' if skipped else '%.1fs' % serial,
                    '-' if skipped else '%.0fx' % (serial / wall),
                    '/'.join('%.2f' % r for r in rounds),
                    '' if failing == hung else
                    '  (%d failing, expected %d)' % (failing, hung)))
                sys.stdout.flush()
    if args.realvm and not realvm(args.realvm):
        failed = True
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
