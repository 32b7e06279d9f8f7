"""How fast, and how late, lifecycle events get through vmha's pipeline.

On libvirt's in-process ``test:///default`` driver, creating a transient
domain gives a STARTED lifecycle event and destroying it a STOPPED one.  A
native thread creates and destroys uniquely named domains through vmha's
connection wrapper while a worker subprocess per backend (eventlet,
threading) measures:

(a) raw: events/s libvirt delivers to a bare Python callback on its
    default event loop, ``--pairs`` create/destroy pairs flat out;
(b) saturated: the same load through ``LibvirtDriver`` (event thread ->
    queue -> dispatcher -> listener): events/s at the listener, the ratio
    (b)/(a), callback-to-listener latency;
(c) paced, first round only: ``--paced-rate`` events/s for
    ``--paced-seconds`` through the same driver: latency.

A rate is events received / (first create -> last event received).  (a)
runs in the worker right before (b) with the same generator.  The
machine is noisy, so each ratio is a median over ``--rounds``
interleaved workers per backend, and process CPU time per event,
steadier, is shown too.  ``stopped_delay=0``:
STOPPED is not held back.  Targets (ratio >= 0.9, paced p99 < 2 ms) only
print PASS/MISS; the exit status is 1 if a worker crashed or hung or an
event was lost.  From the repository root::

    python bench/event_pipeline.py [--pairs 5000] [--rounds 5] [--json]
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time

import workers

URI = 'test:///default'
MODES = ('eventlet', 'threading')
XML = ("<domain type='test'><name>%s</name><memory>131072</memory>"
       "<os><type>hvm</type></os></domain>")


def summarize(latencies):
    """p50/p99/max in milliseconds (nearest rank; nan without data)."""
    ordered = sorted(latencies) or [float('nan')]
    return {'p50_ms': ordered[len(ordered) // 2] * 1e3,
            'p99_ms': ordered[int(len(ordered) * 0.99)] * 1e3,
            'max_ms': ordered[-1] * 1e3}


class Recorder:
    """Counts one phase's events and keeps their latencies."""

    def __init__(self, handler=None):
        self.handler = handler
        self.reset('-')

    def reset(self, prefix):
        self.prefix = prefix
        self.count = 0
        self.last = 0.0
        self.latencies = []
        self.max_depth = 0

    def raw_callback(self, conn, dom, event, detail, opaque):
        # (a): as little as a callback can do.
        self.count += 1
        self.last = time.monotonic()

    def __call__(self, event):
        # (b), (c): the vmha listener, on the dispatcher.  A queue-full
        # ResyncRequiredEvent is not counted, so drops show up as lost.
        now = time.monotonic()
        if getattr(event, 'name', '').startswith(self.prefix):
            self.count += 1
            self.last = now
            self.latencies.append(now - event.monotonic)
            self.max_depth = max(self.max_depth, self.handler.queue_depth())


class Worker:
    """One backend's measurements; runs in its own process."""

    def __init__(self, mode, args):
        self.mode = mode
        self.args = args
        if mode == 'eventlet':
            # The generator blocks in libvirt calls, so it needs a real OS
            # thread; the main greenthread waits with (monkey-patched)
            # time.sleep so that the dispatcher greenthread gets the hub.
            from eventlet import patcher
            self.thread_class = patcher.original('threading').Thread
            self.native_sleep = patcher.original('time').sleep
        else:
            import threading
            self.thread_class = threading.Thread
            self.native_sleep = time.sleep

    def generate(self, conn, prefix, pairs, interval, out):
        """Create and destroy ``pairs`` domains on a native thread, one
        call every ``interval`` seconds (0: flat out)."""
        xmls = [XML % ('%s%d' % (prefix, i)) for i in range(pairs)]

        def sleep_until(due):
            delay = due - time.monotonic()
            if delay > 0:
                self.native_sleep(delay)

        def run():
            start = out['start'] = time.monotonic()
            try:
                for i, xml in enumerate(xmls):
                    if interval:
                        sleep_until(start + 2 * i * interval)
                    domain = conn.create_domain(xml)
                    if interval:
                        sleep_until(start + (2 * i + 1) * interval)
                    domain.destroy()
            except Exception as error:  # reported as a crash
                out['error'] = repr(error)
            out['end'] = time.monotonic()
        thread = self.thread_class(target=run, daemon=True)
        thread.start()
        return thread

    def measure(self, conn, rec, phase, pairs, interval=0.0):
        prefix = 'bench-%d-%s-' % (os.getpid(), phase)
        rec.reset(prefix)
        out = {}
        cpu = time.process_time()
        thread = self.generate(conn, prefix, pairs, interval, out)
        while thread.is_alive():
            time.sleep(0.02)
        expected = 2 * pairs
        seen, idle_since = -1, time.monotonic()
        while rec.count < expected and time.monotonic() - idle_since < 5:
            if rec.count != seen:
                seen, idle_since = rec.count, time.monotonic()
            time.sleep(0.02)
        cpu = time.process_time() - cpu
        leftovers = [d for d in conn.list_domains()
                     if d.name.startswith(prefix)]
        for domain in leftovers:
            domain.destroy()
        if 'error' in out:
            raise RuntimeError('%s generator: %s' % (phase, out['error']))
        result = {'sent': expected, 'received': rec.count,
                  'lost': expected - rec.count, 'leftovers': len(leftovers),
                  'rate': rec.count / (max(rec.last, out['end'])
                                       - out['start']),
                  'generator_rate': expected / (out['end'] - out['start']),
                  'cpu_us_per_event': cpu / max(1, rec.count) * 1e6,
                  'max_queue_depth': rec.max_depth}
        result.update(summarize(rec.latencies))
        return result

    def raw(self):
        """(a) on a default event loop thread of our own, stopped after so
        that vmha's event thread is the only one left for (b)."""
        import libvirt

        from vmha.virt.libvirt import api
        libvirt.registerErrorHandler(lambda context, error: None, None)
        libvirt.virEventRegisterDefaultImpl()
        stop = []

        def loop():
            while not stop:
                libvirt.virEventRunDefaultImpl()
        thread = self.thread_class(target=loop, daemon=True)
        thread.start()
        rec = Recorder()
        raw_conn = libvirt.open(URI)
        handle = raw_conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, rec.raw_callback,
            None)
        try:
            # vmha's wrapper only drives the load, exactly as in (b).
            conn = api.Connection(api.LibvirtAPI(), raw_conn)
            warm = self.measure(conn, rec, 'warmraw',
                                self.args.pairs // 10 + 1)
            return dict(self.measure(conn, rec, 'raw', self.args.pairs),
                        warmup_lost=warm['lost'] + warm['leftovers'])
        finally:
            raw_conn.domainEventDeregisterAny(handle)
            raw_conn.close()
            stop.append(True)
            # A timer that fires at once wakes the loop so it sees `stop`.
            libvirt.virEventAddTimeout(
                0, lambda timer, opaque: libvirt.virEventRemoveTimeout(timer),
                None)
            thread.join(5)

    def pipeline(self, emit):
        """(b), then (c), through one LibvirtDriver."""
        from vmha.virt.libvirt import driver as libvirt_driver
        args = self.args
        paced_pairs = int(args.paced_rate * args.paced_seconds / 2)
        driver = libvirt_driver.LibvirtDriver(
            URI, backend=self.mode, stopped_delay=0,
            queue_size=max(10000, 4 * max(args.pairs, paced_pairs)))
        rec = Recorder()
        driver.register_event_listener(rec)
        driver.init_host()
        try:
            rec.handler = driver.host.handler
            conn = driver.host.get_connection()
            warm = self.measure(conn, rec, 'warm', args.pairs // 10 + 1)
            emit('saturated', dict(
                self.measure(conn, rec, 'sat', args.pairs),
                warmup_lost=warm['lost'] + warm['leftovers']))
            if paced_pairs:
                emit('paced', self.measure(conn, rec, 'paced', paced_pairs,
                                           interval=1.0 / args.paced_rate))
        finally:
            driver.cleanup()


def worker_main(args):
    import warnings
    warnings.filterwarnings('ignore', message='(?s).*Eventlet is deprecated')
    from vmha import cmd
    cmd.select_backend(args.worker)  # first: eventlet must patch early

    def emit(phase, result):
        # A line per phase, at once: data survives a later hang.
        print(json.dumps(dict(result, phase=phase)), flush=True)
    worker = Worker(args.worker, args)
    emit('raw', worker.raw())
    worker.pipeline(emit)
    return 0


def run_worker(mode, args, paced):
    """The worker's phases by name, and what went wrong (or None)."""
    command = [sys.executable, os.path.abspath(__file__), '--worker', mode,
               '--pairs', str(args.pairs), '--paced-rate',
               str(args.paced_rate), '--paced-seconds',
               str(args.paced_seconds if paced else 0)]
    timeout = 120 + 0.02 * args.pairs + 3 * args.paced_seconds
    results, problem, err = workers.run(command, timeout)
    phases = {'mode': mode, **workers.by_phase(results)}
    if not problem and not ('saturated' in phases
                            and ('paced' in phases or not paced)):
        problem = 'ended early'
    if problem:
        problem = '%s worker %s after %s:\n%s' % (
            mode, problem, sorted(phases), err.strip()[-3000:])
    return phases, problem


def aggregate(runs):
    """One backend's rounds: medians, the ratio's spread, worst cases."""
    done = [r for r in runs if 'saturated' in r]
    if not done:
        return None
    raw = [r['raw'] for r in done]
    sat = [r['saturated'] for r in done]
    ratios = [r['saturated']['rate'] / max(r['raw']['rate'], 1e-9)
              for r in done]

    def med(rows, key):
        return statistics.median(row[key] for row in rows)
    return {'rounds': len(done), 'ratio': statistics.median(ratios),
            'ratio_min': min(ratios), 'ratio_max': max(ratios),
            'raw_rate': med(raw, 'rate'), 'rate': med(sat, 'rate'),
            'raw_cpu_us': med(raw, 'cpu_us_per_event'),
            'cpu_us': med(sat, 'cpu_us_per_event'),
            'p50_ms': med(sat, 'p50_ms'), 'p99_ms': med(sat, 'p99_ms'),
            'max_ms': max(s['max_ms'] for s in sat),
            'paced': next((r['paced'] for r in done if 'paced' in r), None)}


def report(command, args, summary, failures):
    def verdict(ok):
        return 'PASS' if ok else 'MISS'
    lines = ['vmha event pipeline on %s, stopped_delay=0 (STOPPED not held '
             'back)' % URI, 'command: ' + command,
             'per round and backend one worker (this command + --worker '
             'MODE): (a) raw, then (b)', '',
             'saturated: %d pairs = %d events flat out, median of %d '
             'rounds; target ratio >= 0.9;' % (args.pairs, 2 * args.pairs,
                                               args.rounds),
             'cpu us/ev = process CPU time per event, raw/vmha',
             '%-9s %8s %8s %5s %4s %9s %9s %6s %6s %6s' % (
                 '', 'raw ev/s', 'vmha', 'ratio', '', 'min-max',
                 'cpu us/ev', 'p50 ms', 'p99 ms', 'max ms')]
    for mode, s in summary.items():
        if s:
            lines.append('%-9s %8.0f %8.0f %5.3f %4s %9s %9s %6.2f %6.2f '
                         '%6.2f' % (
                             mode, s['raw_rate'], s['rate'], s['ratio'],
                             verdict(s['ratio'] >= 0.9),
                             '%.2f-%.2f' % (s['ratio_min'], s['ratio_max']),
                             '%.1f/%.1f' % (s['raw_cpu_us'], s['cpu_us']),
                             s['p50_ms'], s['p99_ms'], s['max_ms']))
    lines += ['', 'paced: %.0f events/s for %.1f s, first round; target '
              'p99 < 2 ms' % (args.paced_rate, args.paced_seconds),
              '%-9s %8s %6s %6s %4s %6s %6s' % (
                  '', 'sent/s', 'p50 ms', 'p99 ms', '', 'max ms', 'depth')]
    for mode, s in summary.items():
        p = s and s['paced']
        if p:
            lines.append('%-9s %8.0f %6.2f %6.2f %4s %6.2f %6d' % (
                mode, p['generator_rate'], p['p50_ms'], p['p99_ms'],
                verdict(p['p99_ms'] < 2), p['max_ms'], p['max_queue_depth']))
    return '\n'.join(lines + failures)


def parent_main(args, argv):
    command = shlex.join([sys.executable, sys.argv[0], *argv])
    runs, failures = [], []
    for round_no in range(args.rounds):
        # Rotate the order so neither backend always runs first.
        shift = round_no % len(args.modes)
        for mode in args.modes[shift:] + args.modes[:shift]:
            result, problem = run_worker(mode, args, paced=round_no == 0)
            runs.append(result)
            failures += [problem] if problem else []
    lost = sum(r[phase]['lost'] + r[phase]['leftovers']
               + r[phase].get('warmup_lost', 0) for r in runs
               for phase in ('raw', 'saturated', 'paced') if phase in r)
    if lost:
        failures.append('LOST events or left-behind domains: %d' % lost)
    summary = {mode: aggregate([r for r in runs if r['mode'] == mode])
               for mode in args.modes}
    print(json.dumps({'command': command, 'uri': URI, 'stopped_delay': 0,
                      'summary': summary, 'runs': runs,
                      'failures': failures}, indent=1) if args.json
          else report(command, args, summary, failures))
    return 1 if failures else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', type=int, default=5000,
                        help='create/destroy pairs when saturated')
    parser.add_argument('--rounds', type=int, default=5,
                        help='workers per backend (the ratio is a median)')
    parser.add_argument('--paced-rate', type=float, default=1000.0,
                        help='events/s in the paced phase')
    parser.add_argument('--paced-seconds', type=float, default=5.0)
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        default=list(MODES))
    parser.add_argument('--json', action='store_true',
                        help='machine-readable output')
    parser.add_argument('--worker', choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    return parent_main(args, argv)


if __name__ == '__main__':
    sys.exit(main())
