"""How long the power-state audit takes, and the agent's RSS, per host size.

For each ``--sizes`` entry N, a worker process of its own (this command
with ``--worker N``; RSS is per process, so per size) runs on libvirt's
in-process ``test:///default`` driver, threading backend:

1. defines and starts N persistent domains (plus the driver's own
   running ``test`` domain: N + 1 are listed), with libvirt directly;
2. builds the agent as ``vmha-agent`` does: a ``ConfigOpts`` with
   vmha's options (``[database] path`` in a new temporary directory,
   ``[notifications] sinks = log``, ``[events] stopped_delay = 0``),
   ``LibvirtDriver.from_conf``, ``Journal``, ``Outbox``, the
   ``OutboxSender`` (started) and ``vmha.agent.build`` (its
   ``Reporter``, ``StateStore``, ``Selector`` and ``PowerStateAudit``),
   then ``driver.init_host()``.  The ``FailureMonitor`` is *not*
   registered, so the event path never sees what the bench does; the
   only listener counts events, to wait until they are dispatched;
3. times ``audit.run_once()``, called directly, in four phases:

   first      empty journal: every domain is new and recorded;
   steady     nothing changed: the periodic audit of a quiet host;
   destroyed  10 % of the domains destroyed behind the agent's back:
              recorded as SHUTOFF_DESTROYED, an operator action, not a
              failure (the test driver cannot make a domain fail);
   vanished   10 % of the running domains destroyed and undefined:
              each is reported once as LIFECYCLE/UNDEFINED_UNSEEN (for
              the record; Masakari ignores it), so this phase measures
              the failure-reporting path; the sender drains meanwhile.

After each audit: wall time, journal transactions the audit opened (each
commit fsyncs: WAL, ``synchronous=FULL``) and the time spent committing,
rows recorded and forgotten, failures reported, and the process RSS
(``VmRSS`` now; peak: the larger of ``VmHWM`` and ``ru_maxrss``).
MB = 10**6 bytes.  The RSS includes the test driver's own domain
objects, which live in libvirtd on a real host; ``dom`` (RSS after
defining the domains - before) estimates them.

Targets at 1,000 domains (every audit < 2 s; peak RSS <= 100 MB, the
test driver included) only print PASS/MISS; the exit status is 1 if a
worker crashed or hung, or an audit decided other than expected.
``--profile`` runs each audit under cProfile (slower) and prints where
the time went.

``--startup`` measures instead the first audit as ``vmha-agent`` runs
it when it starts, with every monitor on: for each size and each
``--backends`` entry, a worker of its own defines and starts the
domains, builds the agent as above (but ``concurrency_backend`` as
given, ``[guest_agent]`` and ``[heartbeat]`` enabled, the audit's own
interval) and calls ``AgentService.start()``: the audit runs on its own
task while the guest-agent and heartbeat monitors discover the same
domains.  Printed: the first audit's own duration (``last_duration``),
and the time from ``start()`` until it was done.  Target: <= 1 s at
5,000 domains in both backends.  From the repository root::

    python bench/audit.py [--sizes 1000,5000] [--profile] [--json]
    python bench/audit.py --startup [--sizes 5000]
        [--backends eventlet,threading]
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

import workers

URI = 'test:///default'
PHASES = ('first', 'steady', 'destroyed', 'vanished')
TARGET_SIZE = 1000
TARGET_SECONDS = 2.0
TARGET_RSS_MB = 100.0
STARTUP_SIZE = 5000
STARTUP_SECONDS = 1.0
XML = ("<domain type='test'><name>%s</name><memory>131072</memory>"
       "<os><type>hvm</type></os></domain>")
NAME = 'bench-audit-%05d'


def rss_mb():
    """(current, peak) RSS of this process in MB: ``VmRSS``, and the
    largest of ``VmHWM`` and ``ru_maxrss`` (the kernel updates its RSS
    counters lazily, so the two peaks and the current value can differ
    by a few pages)."""
    import resource
    fields = {}
    with open('/proc/self/status') as status:
        for line in status:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                fields[key] = int(value.split()[0])  # kB
    peak = max(fields['VmHWM'], fields['VmRSS'],
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB
    return fields['VmRSS'] * 1024 / 1e6, peak * 1024 / 1e6


class TxMeter:
    """Counts the journal transactions one thread opens, and the time
    their commits take (``__exit__``: COMMIT, fsync, after-commit
    hooks).  Installed on the Journal instance; vmha is not changed."""

    def __init__(self, journal, thread_id):
        self._real = journal.transaction
        self._thread_id = thread_id
        self.reset()

    def reset(self):
        self.count = 0
        self.commit_s = 0.0

    def __call__(self):
        import threading
        scope = self._real()
        if threading.get_ident() != self._thread_id:
            return scope  # the sender's mark_delivered, say
        return _MeteredScope(scope, self)


class _MeteredScope:
    def __init__(self, scope, meter):
        self._scope = scope
        self._meter = meter

    def __enter__(self):
        return self._scope.__enter__()

    def __exit__(self, *exc_info):
        started = time.perf_counter()
        try:
            return self._scope.__exit__(*exc_info)
        finally:
            self._meter.commit_s += time.perf_counter() - started
            self._meter.count += 1


def build_agent(size, workdir, settings):
    """(AgentService, Journal, Outbox) as ``vmha-agent`` builds them for
    ``size`` domains on URI, with ``settings`` ((name, value, group)
    overrides) besides the bench's own."""
    from oslo_config import cfg

    from vmha import agent as agent_lib
    from vmha import objects
    import vmha.conf
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.notify import sinks
    from vmha.virt.libvirt import driver as libvirt_driver

    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[],
         default_config_dirs=[])
    for name, value, group in (
            ('host', 'bench-compute', None),
            ('connection_uri', URI, 'libvirt'),
            ('queue_size', max(10000, 4 * size), 'events'),
            ('path', os.path.join(workdir, 'vmha.sqlite'), 'database'),
            ('sinks', ['log'], 'notifications'),
            ('port', 0, 'health')) + tuple(settings):
        conf.set_override(name, value, group)
    vmha.conf.validate(conf)
    objects.register_all()
    driver = libvirt_driver.LibvirtDriver.from_conf(conf)
    journal = db.Journal.from_conf(conf)
    outbox = outbox_lib.Outbox(journal)
    sender = sender_lib.OutboxSender.from_conf(conf, outbox,
                                               sinks.load_sink(conf))
    return agent_lib.build(conf, driver, journal, outbox, sender), \
        journal, outbox


class Worker:
    """One size's measurements; runs in its own process."""

    def __init__(self, size, args, emit, workdir):
        self.size = size
        self.args = args
        self.emit = emit
        self.workdir = workdir
        self.events = 0

    def count_event(self, event):
        self.events += 1

    def wait_events(self, expected, timeout=30.0):
        """Until ``expected`` events were dispatched since the last reset
        (to nobody but the counter), so that the audit runs alone."""
        deadline = time.monotonic() + timeout
        while self.events < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.events < expected:
            raise RuntimeError('only %d of %d events dispatched in %.0f s'
                               % (self.events, expected, timeout))

    def define(self, conn):
        started = time.perf_counter()
        domains = [conn.defineXML(XML % (NAME % i))
                   for i in range(self.size)]
        for domain in domains:
            domain.create()
        return domains, time.perf_counter() - started

    def build(self, workdir):
        """The agent's pieces, wired as vmha-agent wires them."""
        import threading
        agent, journal, outbox = build_agent(self.size, workdir, (
            ('concurrency_backend', 'threading', None),
            ('stopped_delay', 0.0, 'events'),
            ('interval', 0, 'audit')))
        meter = TxMeter(journal, threading.get_ident())
        journal.transaction = meter
        return agent, journal, outbox, meter

    def audit(self, phase, agent, journal, meter, expected):
        """One timed ``run_once`` and what it decided."""
        def count(sql, params=()):
            return journal.query(sql, params)[0][0]
        outbox_before = count('SELECT count(*) FROM outbox')
        known_before = {row[0] for row in
                        journal.query('SELECT uuid FROM domain_state')}
        listed = len(agent.driver.list_instances())
        meter.reset()
        profile = None
        if self.args.profile:
            import cProfile
            profile = cProfile.Profile()
        wall_started = time.time()
        started = time.perf_counter()
        if profile:
            reported = profile.runcall(agent.audit.run_once)
        else:
            reported = agent.audit.run_once()
        seconds = time.perf_counter() - started
        current, peak = rss_mb()
        states = {'%s/%s' % (power, reason): n for power, reason, n in
                  journal.query('SELECT power_state, state_reason, '
                                'count(*) FROM domain_state GROUP BY 1, 2 '
                                'ORDER BY 3 DESC')}
        result = {
            'phase': phase, 'listed': listed, 'seconds': seconds,
            'per_domain_us': seconds / max(1, listed) * 1e6,
            'transactions': meter.count, 'commit_seconds': meter.commit_s,
            'recorded': count('SELECT count(*) FROM domain_state WHERE '
                              'updated_at >= ?', (wall_started,)),
            'forgotten': len(known_before - {
                row[0] for row in
                journal.query('SELECT uuid FROM domain_state')}),
            'failures': reported,
            'notifications': count('SELECT count(*) FROM outbox')
            - outbox_before,
            'rss_mb': current, 'maxrss_mb': peak, 'states': states,
            'expected': expected}
        result['problems'] = [
            '%s: %s %r, expected %r' % (phase, key, result[key], want)
            for key, want in expected.items() if result[key] != want]
        if profile:
            import io
            import pstats
            text = io.StringIO()
            stats = pstats.Stats(profile, stream=text)
            stats.sort_stats('tottime').print_stats(self.args.profile_lines)
            result['profile'] = text.getvalue()
        return result

    def run(self):
        import libvirt

        libvirt.registerErrorHandler(lambda context, error: None, None)
        current, peak = rss_mb()
        self.emit({'phase': 'start', 'rss_mb': current, 'maxrss_mb': peak})
        conn = libvirt.open(URI)
        domains, define_s = self.define(conn)
        current, peak = rss_mb()
        self.emit({'phase': 'defined', 'domains': len(domains),
                   'seconds': define_s, 'rss_mb': current,
                   'maxrss_mb': peak})
        agent, journal, outbox, meter = self.build(self.workdir)
        agent.sender.start()
        agent.driver.register_event_listener(self.count_event)
        agent.driver.init_host()
        try:
            current, peak = rss_mb()
            self.emit({'phase': 'built', 'rss_mb': current,
                       'maxrss_mb': peak, 'journal': journal.path})
            listed = len(domains) + 1  # and test:///default's own 'test'
            self.emit(self.audit('first', agent, journal, meter, {
                'listed': listed, 'recorded': listed, 'failures': 0}))
            # Nothing changed: nothing written, not even an empty commit.
            self.emit(self.audit('steady', agent, journal, meter, {
                'recorded': 0, 'failures': 0, 'transactions': 0}))

            destroyed = domains[::10]
            self.events = 0
            for domain in destroyed:
                domain.destroy()  # a STOPPED no listener records
            self.wait_events(len(destroyed))
            self.emit(self.audit('destroyed', agent, journal, meter, {
                'recorded': len(destroyed), 'failures': 0}))

            vanished = domains[5::10]
            self.events = 0
            for domain in vanished:
                domain.destroy()
                domain.undefine()  # STOPPED, UNDEFINED
            self.wait_events(2 * len(vanished))
            result = self.audit('vanished', agent, journal, meter, {
                'listed': listed - len(vanished),
                'failures': len(vanished), 'forgotten': len(vanished),
                'notifications': len(vanished)})
            started = time.perf_counter()
            deadline = started + 60
            while outbox.depth() and time.perf_counter() < deadline:
                time.sleep(0.01)
            result['drain_seconds'] = time.perf_counter() - started
            result['undelivered'] = outbox.depth()
            if result['undelivered']:
                result['problems'].append(
                    'vanished: %d notification(s) still undelivered after '
                    '60 s' % result['undelivered'])
            self.emit(result)
        finally:
            agent.stop()
            journal.close()
        return 0


def startup_worker(size, backend, emit, workdir):
    """The first audit of ``size`` domains as ``vmha-agent`` starts."""
    import libvirt

    libvirt.registerErrorHandler(lambda context, error: None, None)
    conn = libvirt.open(URI)
    domains = [conn.defineXML(XML % (NAME % i)) for i in range(size)]
    for domain in domains:
        domain.create()
    service, journal, _ = build_agent(size, workdir, (
        ('concurrency_backend', backend, None),
        ('enabled', True, 'guest_agent'),
        ('enabled', True, 'heartbeat')))
    from vmha import concurrency
    sleep = concurrency.get(backend).sleep
    started = time.perf_counter()
    service.start()
    try:
        deadline = started + 60
        while service.audit.runs < 1 and time.perf_counter() < deadline:
            sleep(0.005)
        done = time.perf_counter() - started
        recorded = journal.query('SELECT count(*) FROM domain_state')[0][0]
        emit({'phase': 'startup', 'backend': backend, 'listed': size + 1,
              'runs': service.audit.runs,
              'seconds': service.audit.last_duration,
              'since_start': done, 'recorded': recorded})
    finally:
        service.stop()
        journal.close()
    return 0


def worker_main(args):
    from vmha import cmd
    # first: before oslo_messaging
    cmd.select_backend(args.backend if args.startup else 'threading')
    import logging
    import shutil
    workdir = tempfile.mkdtemp(prefix='vmha-bench-audit-', dir=args.db_dir)
    # INFO to a file, as an agent logs (the log sink writes a line per
    # notification, the Reporter one per failure).
    logging.basicConfig(filename=os.path.join(workdir, 'agent.log'),
                        level=logging.INFO)

    def emit(result):
        # A line per phase, at once: data survives a later crash or hang.
        print(json.dumps(result), flush=True)
    try:
        if args.startup:
            return startup_worker(args.worker, args.backend, emit, workdir)
        return Worker(args.worker, args, emit, workdir).run()
    finally:
        logging.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


def run_worker(size, args):
    """The worker's phases by name, and what went wrong (a list)."""
    command = [sys.executable, os.path.abspath(__file__), '--worker',
               str(size), '--profile-lines', str(args.profile_lines)]
    command += ['--profile'] if args.profile else []
    command += ['--db-dir', args.db_dir] if args.db_dir else []
    timeout = 120 + 0.1 * size * (5 if args.profile else 1)
    results, problem, err = workers.run(command, timeout)
    phases = {'size': size, **workers.by_phase(results)}
    if not problem and PHASES[-1] not in phases:
        problem = 'ended early'
    problems = [p for phase in PHASES if phase in phases
                for p in phases[phase]['problems']]
    if problem:
        problems.append('worker for %d domains %s after %s:\n%s' % (
            size, problem, sorted(k for k in phases if k != 'size'),
            err.strip()[-3000:]))
    return phases, problems


def startup_main(args, command):
    lines = ['vmha-agent start-up on %s, every monitor on: the first '
             'audit' % URI, 'command: ' + command,
             'target at %d domains: <= %.1f s in each backend'
             % (STARTUP_SIZE, STARTUP_SECONDS),
             '%7s %10s %14s %18s %9s' % ('domains', 'backend',
                                         'first audit s',
                                         'start()->done s', 'recorded')]
    failures = []
    for size in args.sizes:
        for backend in args.backends.split(','):
            command = [sys.executable, os.path.abspath(__file__),
                       '--worker', str(size), '--startup', '--backend',
                       backend]
            command += ['--db-dir', args.db_dir] if args.db_dir else []
            results, problem, err = workers.run(command, 120 + 0.1 * size)
            run = workers.by_phase(results).get('startup')
            if problem or run is None:
                failures.append('worker %d %s: %s\n%s' % (
                    size, backend, problem or 'no result', err[-3000:]))
                continue
            if run['runs'] < 1:
                failures.append('%d %s: no audit within 60 s'
                                % (size, backend))
            mark = (' ' + ('PASS' if run['seconds'] <= STARTUP_SECONDS
                           else 'MISS')) if size == STARTUP_SIZE else ''
            lines.append('%7d %10s %14.3f %18.3f %9d%s' % (
                size, backend, run['seconds'], run['since_start'],
                run['recorded'], mark))
            sys.stdout.flush()
    print('\n'.join(lines + [''] * bool(failures) + failures))
    return 1 if failures else 0


def report(command, args, runs, failures):
    def verdict(ok):
        return 'PASS' if ok else 'MISS'
    lines = ['vmha power-state audit on %s, threading backend, journal '
             'in %s' % (URI, args.db_dir or tempfile.gettempdir()),
             'command: ' + command,
             'one worker per size (this command + --worker N); MB = 10**6 '
             'bytes; tx = journal transactions (one fsync each)%s'
             % (' ; UNDER cProfile (slower)' if args.profile else ''),
             'targets at %d domains: every audit < %.0f s, peak RSS <= '
             '%.0f MB' % (TARGET_SIZE, TARGET_SECONDS, TARGET_RSS_MB)]
    for run in runs:
        size = run['size']
        if 'defined' not in run:
            continue
        start, defined = run['start'], run['defined']
        lines += ['', '%d domains (%d listed): defined+started in %.2f s; '
                  'RSS %.1f MB at start, %.1f MB with the domains (dom '
                  '%+.1f), %.1f MB with the agent built' % (
                      size, size + 1, defined['seconds'], start['rss_mb'],
                      defined['rss_mb'],
                      defined['rss_mb'] - start['rss_mb'],
                      run['built']['rss_mb'] if 'built' in run else 0),
                  '%-9s %8s %6s %5s %8s %6s %4s %5s %6s %6s %s' % (
                      'audit', 'seconds', 'us/dom', 'tx', 'commit s',
                      'rec', 'fail', 'gone', 'RSS', 'peak', 'decided')]
        for phase in PHASES:
            r = run.get(phase)
            if not r:
                continue
            mark = (' ' + verdict(r['seconds'] < TARGET_SECONDS)
                    if size == TARGET_SIZE else '')
            states = ', '.join('%s %d' % item
                               for item in r['states'].items())
            lines.append('%-9s %8.3f %6.0f %5d %8.3f %6d %4d %5d %6.1f '
                         '%6.1f %s%s' % (
                             phase, r['seconds'], r['per_domain_us'],
                             r['transactions'], r['commit_seconds'],
                             r['recorded'], r['failures'], r['forgotten'],
                             r['rss_mb'], r['maxrss_mb'], states, mark))
            if 'drain_seconds' in r:
                lines.append('%-9s sender delivered the %d notification(s) '
                             '(log sink) %.2f s after the audit returned'
                             % ('', r['notifications'], r['drain_seconds']))
        done = [run[p] for p in PHASES if p in run]
        if done:
            slowest = max(r['seconds'] for r in done)
            peak = max(r['maxrss_mb'] for r in done)
            mark = size == TARGET_SIZE
            lines.append('slowest audit %.3f s%s; peak RSS %.1f MB%s '
                         '(%.1f MB without the test driver\'s domains)' % (
                             slowest,
                             ' ' + verdict(slowest < TARGET_SECONDS)
                             if mark else '',
                             peak,
                             ' ' + verdict(peak <= TARGET_RSS_MB)
                             if mark else '',
                             peak - (defined['rss_mb'] - start['rss_mb'])))
        if args.profile:
            for phase in PHASES:
                if run.get(phase, {}).get('profile'):
                    lines += ['', '--- cProfile, %d domains, %s audit '
                              '(by own time) ---' % (size, phase),
                              run[phase]['profile'].strip()]
    return '\n'.join(lines + [''] * bool(failures) + failures)


def parent_main(args, argv):
    command = shlex.join([sys.executable, sys.argv[0], *argv])
    if args.startup:
        return startup_main(args, command)
    runs, failures = [], []
    for size in args.sizes:
        run, problems = run_worker(size, args)
        runs.append(run)
        failures += problems
    print(json.dumps({'command': command, 'uri': URI, 'runs': runs,
                      'targets': {'size': TARGET_SIZE,
                                  'seconds': TARGET_SECONDS,
                                  'rss_mb': TARGET_RSS_MB},
                      'failures': failures}, indent=1) if args.json
          else report(command, args, runs, failures))
    return 1 if failures else 0


def sizes(text):
    values = [int(part) for part in text.split(',') if part.strip()]
    if not values or min(values) < 10:
        raise argparse.ArgumentTypeError('sizes of at least 10, comma '
                                         'separated: 1000,5000')
    return values


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=sizes, default=[1000, 5000],
                        help='domain counts, one worker each '
                             '(default 1000,5000)')
    parser.add_argument('--profile', action='store_true',
                        help='run each audit under cProfile and print the '
                             'top functions')
    parser.add_argument('--profile-lines', type=int, default=20,
                        help=argparse.SUPPRESS)
    parser.add_argument('--db-dir',
                        help='directory for the journal (default: the '
                             'system temporary directory)')
    parser.add_argument('--json', action='store_true',
                        help='machine-readable output')
    parser.add_argument('--startup', action='store_true',
                        help='the first audit as vmha-agent starts, every '
                             'monitor on (default sizes: 5000)')
    parser.add_argument('--backends', default='eventlet,threading',
                        help='with --startup: backends, one worker each')
    parser.add_argument('--backend', default='threading',
                        help=argparse.SUPPRESS)
    parser.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.startup and '--sizes' not in ' '.join(argv):
        args.sizes = [STARTUP_SIZE]
    if args.worker:
        return worker_main(args)
    return parent_main(args, argv)


if __name__ == '__main__':
    sys.exit(main())
