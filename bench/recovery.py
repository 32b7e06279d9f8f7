"""Mean time to recovery on the real test bed: from a fault to the guest
answering again, through vmha, Masakari and the nova stand-in.

The loop is the one ``tests/integration/test_recovery_loop.py`` checks
(``tests/integration/recovery.py``): real libvirtd + QEMU (TCG here) with
qemu-ga, vmha-agent and vmha-masakari-bridge as installed, RabbitMQ,
masakari-api 22 and masakari-engine 22 (waits shortened only as upper
bounds: the engine moves on as soon as a state is reached, polling every
``verify_interval`` = 1 s, its minimum), and the Keystone/Nova stand-in,
which stops (destroys) and starts the domain on the same libvirtd.

Faults, each ``--trials`` times on one guest of its own:

* ``crash``: kill -9 of the guest's QEMU;
* ``hang``: SIGSTOP of the QEMU (the whole VM freezes; vmha's guest-agent
  monitor judges it, default interval 5 s, timeout 2 s, threshold 2).
  The stand-in does what nova does, ``virDomainDestroy``: libvirt sends
  SIGTERM, waits about 10 s, then SIGKILL, which a stopped process
  cannot ignore; nobody SIGCONTs it.  That wait is Masakari's share;
* ``panic``: a kernel panic in the guest (pvpanic, ``on_crash=destroy``).

Each trial is split into, in wall-clock time lined up across processes:

* detection: fault -> vmha wrote the failure (agent's outbox row);
* delivery: -> Masakari answered 202 (the bridge's "Masakari accepted"
  log line, millisecond stamps);
* masakari: -> the engine's ``os-start`` call reached the stand-in (its
  show, stop, wait for ``stopped``, show);
* boot: -> the guest's first guest-ping answer (polled every 0.1 s).

Prints every trial and a table of median and worst.  Needs root (it
starts libvirtd, or reuses a running one, and waits for the test bed's
session lock like the tests).  From the repository root::

    python bench/recovery.py [--trials 5] [--faults crash,hang,panic]
        [--backend eventlet|threading]
"""

import argparse
import datetime
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

FAULTS = ('crash', 'hang', 'panic')
SEGMENTS = ('detection', 'delivery', 'masakari', 'boot')
#: oslo.log's default line start: local time with milliseconds.
LOG_TIME = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ')


def log_time(line):
    match = LOG_TIME.match(line)
    return datetime.datetime.strptime(
        match.group(1), '%Y-%m-%d %H:%M:%S.%f').timestamp()


def inject(guest, fault):
    """Cause ``fault``; return its wall-clock time."""
    at = time.time()
    if fault == 'crash':
        guest.kill9_qemu()
    elif fault == 'hang':
        guest.stop_qemu()
    else:
        guest.panic()
    return at


#: The test-bed guest's init prints this when it starts qemu-ga.
QGA_STARTED = 'starting qemu-ga'


def wait_for_boot(guest, boots, agent_timeout=60):
    """Wall time of the first guest-ping answer after the recovery, and
    a note.

    Seen after a hung guest's recovery: libvirtd answered every ping of
    the new boot with "QEMU guest agent is not available due to an
    error".  The guest did boot; its init's console line says when
    qemu-ga started (seen by the same polling), which then ends "boot",
    flagged in the note.
    """
    console_at = None
    deadline = time.monotonic() + agent_timeout
    while time.monotonic() < deadline:
        if console_at is None and \
                guest.console_text().count(QGA_STARTED) > boots:
            console_at = time.time()
        if guest.is_running() and guest.ping(timeout=1):
            return time.time(), ''
        time.sleep(0.1)
    if console_at is None:
        raise SystemExit('%s did not boot again\n%s'
                         % (guest.name, guest.log_tail()))
    return console_at, ('no guest-ping answer in %gs (libvirt: agent in '
                        'error); boot = qemu-ga started (console)'
                        % agent_timeout)


def trial(loop, guest, fault, agent_timeout):
    """One fault to a guest answering again: ``{segment: seconds}``."""
    rows = len(loop.recovery.rows(guest.uuid))
    failures = len(loop.agent.outbox())
    boots = guest.console_text().count(QGA_STARTED)
    fault_at = inject(guest, fault)
    row = loop.wait_for_row(guest.uuid, count=rows + 1, timeout=300)
    if row['status'] != 'finished':
        raise SystemExit('Masakari says %s for %s\n%s'
                         % (row['status'], guest.name, loop.log_tail()))
    if fault == 'hang':
        guest.domains._qemu_stopped.discard(guest.name)  # a new QEMU now
    answered_at, note = wait_for_boot(guest, boots, agent_timeout)

    [written] = [r for r in loop.agent.outbox()[failures:]
                 if r['data']['uuid'] == guest.uuid]
    accepted = [log_time(line) for line in loop.bridge.log_lines(
        'Masakari accepted the failure of instance %s' % guest.uuid)]
    accepted_at = [t for t in accepted if t >= written['created_at'] - 0.01]
    started = [c.wall for c in loop.nova.calls_for(guest.uuid)
               if c.action == 'os-start' and c.wall > fault_at]
    return {
        'detection': written['created_at'] - fault_at,
        'delivery': accepted_at[0] - written['created_at'],
        'masakari': started[0] - accepted_at[0],
        'boot': answered_at - started[0],
        'total': answered_at - fault_at,
        'note': note,
    }


def run(args, base):
    from tests.integration import recovery
    from tests.integration import services
    from tests.integration import testbed

    broker = services.RabbitMQ(base / 'rabbitmq')
    broker.start()
    daemon = testbed.Libvirtd(base / 'libvirtd')
    results = {}
    with testbed.exclusive_session(daemon.timings):
        daemon.ensure_installed()
        daemon.start()
        domains = testbed.Domains(daemon, testbed.GuestImage().build(),
                                  base / 'domains')
        services_ = recovery.Recovery(base / 'recovery',
                                      broker.transport_url,
                                      'compute-bench').start()
        loop = recovery.Loop(base / 'loop', broker.transport_url,
                             services_, args.backend).start()
        try:
            for fault in args.faults:
                results[fault] = []
                guest = None
                for number in range(args.trials):
                    # A hung guest's recovery leaves libvirt's agent of
                    # that domain in error (see wait_for_boot): vmha
                    # cannot ping it, so it could not see the next hang.
                    # Each hang trial gets a fresh guest.
                    if guest is None or fault == 'hang':
                        if guest is not None:
                            domains.remove(guest.name)
                        guest = domains.create('bench-%s' % fault)
                        loop.nova.set_metadata(guest.uuid,
                                               HA_Enabled='True')
                        recovery.wait_for_ping(guest)
                        time.sleep(2)  # vmha has seen it boot and run
                    figures = trial(loop, guest, fault, args.agent_timeout)
                    results[fault].append(figures)
                    print('%-5s #%d  %s  %s' % (fault, number + 1, '  '.join(
                        '%s %.2fs' % (name, figures[name])
                        for name in SEGMENTS + ('total',)),
                        figures['note']), flush=True)
                    # vmha closes the episode once the guest runs again;
                    # leave it a moment as a real VM would have.
                    time.sleep(args.pause)
        finally:
            loop.stop()
            services_.stop()
            errors = domains.cleanup()
            daemon.stop()
            broker.stop()
        if errors:
            print('cleanup: %s' % errors, file=sys.stderr)
    return results


def table(results):
    lines = ['| fault | n | %s | total |' % ' | '.join(SEGMENTS),
             '|---|---|%s---|' % ('---|' * len(SEGMENTS))]
    for fault, trials in results.items():
        cells = []
        for name in SEGMENTS + ('total',):
            values = [t[name] for t in trials]
            cells.append('%.2f / %.2f' % (statistics.median(values),
                                          max(values)))
        lines.append('| %s | %d | %s |' % (fault, len(trials),
                                           ' | '.join(cells)))
    return '\n'.join(lines) + '\n(median / worst, seconds)'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--trials', type=int, default=5)
    parser.add_argument('--faults', default=','.join(FAULTS),
                        type=lambda text: [f for f in text.split(',')
                                           if f])
    parser.add_argument('--backend', default='eventlet',
                        choices=('eventlet', 'threading'))
    parser.add_argument('--pause', type=float, default=3.0,
                        help='seconds between trials')
    parser.add_argument('--agent-timeout', type=float, default=20.0,
                        help='seconds to wait for the first guest-ping '
                             'answer after a recovery before taking '
                             'the console\'s qemu-ga line instead')
    args = parser.parse_args(argv)
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error('unknown fault(s): %s' % ', '.join(sorted(unknown)))
    base = pathlib.Path(tempfile.mkdtemp(prefix='vmha-bench-recovery-'))
    print('logs in %s; load: %s' % (base, os.getloadavg()), flush=True)
    results = run(args, base)
    print(table(results))
    print('load after: %s' % (os.getloadavg(),))
    return 0


if __name__ == '__main__':
    sys.exit(main())
