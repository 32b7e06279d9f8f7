"""What the durable outbox costs: vmha's notification path vs a bare Notifier.

On a real RabbitMQ (``tests/integration/services.py``: reused when one
answers on 127.0.0.1:``--port`` (5672), else started for the run and
stopped after; a port other than 5672 gets a node name of its own, out of
reach of the integration tests' broker outages),
``--count`` ``instance.failure`` notifications, the payload vmha sends
(``failure_notification(...).to_message().payload``, one instance uuid
per message), go to a fresh topic ``bench_<uuid>`` two ways:

(a) bare: an oslo.messaging ``Notifier`` (``messagingv2`` driver) calls
    ``.info({}, 'instance.failure', payload)`` flat out;
(b) vmha: a writer commits each one to a ``Journal`` (a new SQLite file
    in WAL mode with ``synchronous=FULL``) with ``Outbox.add``, one
    transaction per notification as the agent writes one decision at a
    time, flat out, while the ``OutboxSender`` (threading backend) sends
    them with the ``messaging`` sink (``load_sink``) and marks each one
    delivered.

Each is received by an ``oslo_messaging`` notification listener
(threading executor) in a process of its own, as a consumer would be.
A rate is notifications received / (first send or write -> last
received); latency is listener receive time - the time just before
``Notifier.info`` (a) or before the row's transaction began (b), both
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process).
Both are saturated: the writer outruns the sender, so most of (b)'s
latency is the wait behind the rows written before.
The ratio is rate(b) / rate(a).  (b) also gives the outbox's
time-to-empty (first write -> last row marked delivered) and where the
sender's time goes (sink.send, mark_delivered, reading the batch).

Every phase runs in a worker process of its own (this command with
``--worker PHASE``), threading backend, after a warm-up of ``--count``/10
messages that is checked but not timed.  The machine is noisy, so the
ratio is the median over ``--rounds`` rounds, the phase order alternating.
The target (ratio >= 0.8) only prints PASS/MISS; the exit status is 1 if a
worker crashed or hung, or a notification was lost, duplicated, or came
with another message id than the one vmha stored.  From the repository
root::

    python bench/notify_throughput.py [--count 10000] [--rounds 5] [--json]
                                      [--port 5672] [--journal-dir DIR]
"""

import argparse
import collections
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import workers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ('bare', 'vmha')
TARGET_RATIO = 0.8
HOST = 'bench-compute'
PUBLISHER_ID = 'vmha-agent:bench'
EVENT_TYPE = 'instance.failure'
# The listener gives up this long after the last notification it got.
LISTENER_IDLE = 10.0
# ...and waits this long after the last expected one, to see duplicates.
LISTENER_GRACE = 1.0


def summarize(latencies):
    """p50/p99/max in milliseconds (nearest rank; nan without data)."""
    ordered = sorted(latencies) or [float('nan')]
    return {'p50_ms': ordered[len(ordered) // 2] * 1e3,
            'p99_ms': ordered[int(len(ordered) * 0.99)] * 1e3,
            'max_ms': ordered[-1] * 1e3}


def make_conf():
    """A parsed ConfigOpts with vmha's options and no config file."""
    from oslo_config import cfg

    import vmha.conf
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha-bench', default_config_files=[],
         default_config_dirs=[])
    return conf


# --- the listener process ----------------------------------------------------

def listener_main(args):
    """Receive on ``args.listen`` until the worker closes stdin and
    ``--expect`` notifications came (or none for LISTENER_IDLE s); print
    one JSON line: [receive time, instance uuid, message id] each."""
    from vmha import cmd
    cmd.select_backend('threading')
    import oslo_messaging

    records = []
    done = threading.Event()

    class Endpoint:
        def _record(self, ctxt, publisher_id, event_type, payload,
                    metadata):
            now = time.monotonic()
            data = payload.get('vmha_object.data') or {}
            records.append((now, data.get('uuid'),
                            metadata.get('message_id')))

        audit = debug = info = warn = error = critical = sample = _record

    conf = make_conf()
    transport = oslo_messaging.get_notification_transport(conf,
                                                          url=args.url)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=args.listen)], [Endpoint()],
        executor='threading')
    listener.start()
    print('ready', flush=True)

    def wait_for_stdin_eof():
        sys.stdin.read()
        done.set()
    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    done.wait()
    seen, idle_since = -1, time.monotonic()
    while (len(records) < args.expect
           and time.monotonic() - idle_since < LISTENER_IDLE):
        if len(records) != seen:
            seen, idle_since = len(records), time.monotonic()
        time.sleep(0.01)
    time.sleep(LISTENER_GRACE)
    listener.stop()
    listener.wait()
    transport.cleanup()
    print(json.dumps({'records': list(records)}), flush=True)
    return 0


class ListenerProcess:
    """The listener process of one phase, ready once constructed."""

    def __init__(self, url, topic, expect, timeout=60.0):
        self.topic = topic
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--listen', topic,
             '--url', url, '--expect', str(expect)],
            # stderr: the worker's own, read by the parent as it comes
            # (a pipe nobody reads until the end could fill and block).
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        watchdog = threading.Timer(timeout, self.proc.kill)
        watchdog.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            watchdog.cancel()
        if line.strip() != 'ready':
            self.proc.kill()
            self.proc.communicate()
            raise RuntimeError('the listener did not start (its errors '
                               'are above)')

    def records(self, timeout=120.0):
        """Close its stdin (the phase is over) and return what it got."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith('{')]
        if self.proc.returncode or not lines:
            raise RuntimeError('the listener failed (exit %s; its errors '
                               'are above)' % self.proc.returncode)
        return json.loads(lines[-1])['records']


def delete_queues(url, topic):
    """Remove the queues the listener and the publisher declared (the
    listener's are not auto-deleted), so that a reused broker keeps no
    litter."""
    import kombu
    from oslo_messaging.notify import dispatcher
    try:
        with kombu.Connection(url.replace('rabbit://', 'amqp://', 1),
                              connect_timeout=5) as connection:
            channel = connection.channel()
            for priority in dispatcher.PRIORITIES:
                channel.queue_delete('%s.%s' % (topic, priority))
    except Exception as error:  # litter only, not a result
        sys.stderr.write('cannot delete queues of %s: %r\n' % (topic, error))


# --- the worker process ------------------------------------------------------

def failure_messages(count):
    """``count`` instance.failure Messages as vmha writes them, each for
    another instance (its uuid is the key the listener reports)."""
    import datetime

    from vmha.objects import fields
    from vmha.objects import instance
    detected = datetime.datetime.now(datetime.UTC)
    return [instance.failure_notification(
        HOST, str(uuid.uuid4()), 'bench-vm-%d' % i, 'LIFECYCLE',
        'STOPPED_FAILED', fields.FailureCause.QEMU_DIED, detected,
        evidence='qemu-kvm process exited with status 9 (SIGKILL)'
    ).to_message() for i in range(count)]


class Stopwatch:
    """Wraps a callable; adds up calls and the time spent in them."""

    def __init__(self, function):
        self.function = function
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def reset(self):
        self.calls, self.seconds = 0, 0.0

    def us_per_call(self):
        return self.seconds / max(1, self.calls) * 1e6


class TimedSink:
    """The sink under a Stopwatch; the sender sees the same name."""

    def __init__(self, sink):
        self.sink = sink
        self.name = sink.name
        self.send = Stopwatch(sink.send)

    def close(self):
        self.sink.close()


def wait_until(predicate, timeout, interval=0.002):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def run_bare(args, transport, topic, warm, measured):
    """(a): Notifier.info flat out; returns send times by key."""
    import oslo_messaging
    notifier = oslo_messaging.Notifier(
        transport, publisher_id=PUBLISHER_ID, driver='messagingv2',
        topics=[topic])
    for message in warm:
        notifier.info({}, EVENT_TYPE, message.payload)
    time.sleep(0.5)  # the listener drains the warm-up
    pairs = [(m.payload['vmha_object.data']['uuid'], m.payload)
             for m in measured]
    sent = {}
    cpu = time.process_time()
    for key, payload in pairs:
        sent[key] = time.monotonic()
        notifier.info({}, EVENT_TYPE, payload)
    end = time.monotonic()
    cpu = time.process_time() - cpu
    return sent, {'send_end': end, 'cpu': cpu}


def run_vmha(args, transport, topic, warm, measured):
    """(b): one transaction per row, flat out, while the OutboxSender
    sends; returns write times by key once the outbox is empty."""
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.notify import sinks

    conf = make_conf()
    conf.set_override('concurrency_backend', 'threading')
    conf.set_override('topics', [topic], group='notifications')
    directory = tempfile.mkdtemp(prefix='vmha-bench-', dir=args.journal_dir)
    path = os.path.join(directory, 'vmha.sqlite')
    journal = db.Journal(path)
    mode = journal.query('PRAGMA journal_mode')[0][0]
    synchronous = {0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA'}[
        journal.query('PRAGMA synchronous')[0][0]]
    outbox = outbox_lib.Outbox(journal)
    sink = TimedSink(sinks.load_sink(conf, transport=transport))
    sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
    timers = {'send': sink.send,
              'mark': Stopwatch(outbox.mark_delivered),
              'read': Stopwatch(outbox.pending)}
    outbox.mark_delivered = timers['mark']
    outbox.pending = timers['read']
    sender.start()
    try:
        def write(message):
            with journal.transaction() as tx:
                outbox.add(tx, message)

        for message in warm:
            write(message)
        if not wait_until(lambda: sender.sent_total == len(warm), 60):
            raise RuntimeError('warm-up: outbox not empty after 60 s (%s)'
                               % sender.last_error)
        time.sleep(0.5)  # the listener drains the warm-up
        for timer in timers.values():
            timer.reset()
        expected = len(warm) + len(measured)
        written = {}
        cpu = time.process_time()
        for message in measured:
            written[message.payload['vmha_object.data']['uuid']] = \
                time.monotonic()
            write(message)
        end = time.monotonic()
        emptied = wait_until(lambda: sender.sent_total >= expected,
                             30 + len(measured) * 0.01)
        empty_at = time.monotonic()
        cpu = time.process_time() - cpu
        depth = outbox.depth()
    finally:
        sender.stop()
        sink.close()
        journal.close()
        shutil.rmtree(directory, ignore_errors=True)
    if not emptied:
        raise RuntimeError('outbox not empty: %d rows waiting (%s)'
                           % (depth, sender.last_error))
    first = min(written.values())
    count = len(measured)
    return written, {
        'send_end': end, 'cpu': cpu, 'journal_mode': mode,
        'synchronous': synchronous, 'journal_dir': os.path.dirname(directory),
        'ids': {m.payload['vmha_object.data']['uuid']: m.message_id
                for m in warm + measured},
        'time_to_empty_s': empty_at - first,
        'drain_after_writes_s': empty_at - end,
        'depth_after': depth, 'failed_total': sender.failed_total,
        'sender_rate': count / (empty_at - first),
        'send_us': timers['send'].us_per_call(),
        'mark_us': timers['mark'].us_per_call(),
        'read_us_per_msg': timers['read'].seconds / count * 1e6,
        'sender_busy': sum(t.seconds for t in timers.values())
        / (empty_at - first)}


def evaluate(warm, measured, sent, extra, records):
    """Counts, rates and latencies of one phase from what the listener
    got; ``extra['ids']`` (vmha) maps each key to the id vmha stored."""
    keys = [m.payload['vmha_object.data']['uuid'] for m in measured]
    all_keys = set(keys) | {m.payload['vmha_object.data']['uuid']
                            for m in warm}
    ids = extra.pop('ids', None)
    by_key = collections.Counter(key for _, key, _ in records)
    by_id = collections.Counter(mid for _, _, mid in records)
    first_seen = {}
    for when, key, _ in sorted(records):
        first_seen.setdefault(key, when)
    wrong_id = sum(1 for _, key, mid in records
                   if ids is not None and ids.get(key) != mid)
    got = [key for key in keys if key in first_seen]
    start = min(sent.values())
    last = max((first_seen[key] for key in got), default=start)
    result = {
        'count': len(keys), 'received': len(got),
        'lost': len(all_keys - set(by_key)),
        'duplicated': max(sum(c - 1 for c in by_key.values()),
                          sum(c - 1 for c in by_id.values())),
        'foreign': sum(c for key, c in by_key.items()
                       if key not in all_keys),
        'wrong_id': wrong_id,
        'rate': len(got) / max(last - start, 1e-9),
        'send_rate': len(keys) / max(extra.pop('send_end') - start, 1e-9),
        'cpu_us_per_msg': extra.pop('cpu') / max(1, len(keys)) * 1e6}
    result.update(summarize([first_seen[key] - sent[key] for key in got]))
    result.update(extra)
    return result


def worker_main(args):
    import warnings
    warnings.filterwarnings('ignore', message='(?s).*Eventlet is deprecated')
    from vmha import cmd
    cmd.select_backend('threading')  # before anything imports oslo_messaging
    import oslo_messaging

    from vmha import objects
    objects.register_all()
    warm = failure_messages(args.count // 10 + 1)
    measured = failure_messages(args.count)
    topic = 'bench_%s' % uuid.uuid4().hex
    listener = ListenerProcess(args.url, topic, len(warm) + len(measured))
    try:
        transport = oslo_messaging.get_notification_transport(
            make_conf(), url=args.url)
        try:
            run = run_bare if args.worker == 'bare' else run_vmha
            sent, extra = run(args, transport, topic, warm, measured)
        finally:
            transport.cleanup()
        records = listener.records()
    finally:
        if listener.proc.poll() is None:
            listener.proc.kill()
            listener.proc.communicate()
        delete_queues(args.url, topic)
    result = evaluate(warm, measured, sent, extra, records)
    print(json.dumps(dict(result, phase=args.worker, topic=topic)),
          flush=True)
    return 0


# --- the parent --------------------------------------------------------------

def run_worker(phase, args, url):
    """The phase's result, and what went wrong (or None)."""
    command = [sys.executable, os.path.abspath(__file__), '--worker', phase,
               '--count', str(args.count), '--url', url]
    if args.journal_dir:
        command += ['--journal-dir', args.journal_dir]
    timeout = 180 + 0.05 * args.count
    results, problem, err = workers.run(command, timeout)
    result = results[-1] if results else None
    if not problem and result is None:
        problem = 'ended without a result'
    if problem:
        problem = '%s worker %s:\n%s' % (phase, problem,
                                         err.strip()[-3000:])
    return result, problem


def aggregate(rounds):
    """Medians over the rounds where both phases finished."""
    done = [r for r in rounds if r.get('bare') and r.get('vmha')]
    if not done:
        return None
    ratios = [r['vmha']['rate'] / max(r['bare']['rate'], 1e-9)
              for r in done]

    def med(phase, key):
        return statistics.median(r[phase][key] for r in done)
    summary = {'rounds': len(done), 'ratio': statistics.median(ratios),
               'ratio_min': min(ratios), 'ratio_max': max(ratios),
               'per_round': [[r['bare']['rate'], r['vmha']['rate']]
                             for r in done],
               'sink_failures': sum(r['vmha']['failed_total']
                                    for r in done)}
    for phase in PHASES:
        summary[phase] = {key: med(phase, key) for key in (
            'rate', 'send_rate', 'cpu_us_per_msg', 'p50_ms', 'p99_ms')}
        summary[phase]['max_ms'] = max(r[phase]['max_ms'] for r in done)
    for key in ('time_to_empty_s', 'drain_after_writes_s', 'sender_rate',
                'send_us', 'mark_us', 'read_us_per_msg', 'sender_busy'):
        summary['vmha'][key] = med('vmha', key)
    last = done[-1]['vmha']
    summary['vmha'].update(journal_mode=last['journal_mode'],
                           synchronous=last['synchronous'],
                           journal_dir=last['journal_dir'])
    return summary


def report(command, args, broker, summary, failures):
    lines = ['vmha notifications: outbox + messaging sink vs bare '
             'Notifier.info, RabbitMQ %s (%s)' % (
                 broker.transport_url,
                 'reused a running broker' if broker.reused
                 else 'started for this run'),
             'command: ' + command,
             'per round one worker per phase (this command + --worker '
             'PHASE), order alternating; threading backend;',
             'listener: oslo.messaging notification listener, threading '
             'executor, in a process of its own', '']
    if summary:
        vmha = summary['vmha']
        lines += [
            '%d instance.failure notifications per phase after %d warm-up, '
            'median of %d rounds; target ratio >= %.1f'
            % (args.count, args.count // 10 + 1, summary['rounds'],
               TARGET_RATIO),
            'rate = received / (first send -> last received); send/s = the '
            'Notifier calls (a) or the commits (b) alone',
            '%-5s %7s %7s %6s %4s %9s %6s %6s %7s %7s' % (
                '', 'msg/s', 'send/s', 'ratio', '', 'min-max', 'p50 ms',
                'p99 ms', 'max ms', 'cpu us')]
        for phase in PHASES:
            s = summary[phase]
            ratio = (('%6.3f %4s %9s' % (
                summary['ratio'],
                'PASS' if summary['ratio'] >= TARGET_RATIO else 'MISS',
                '%.2f-%.2f' % (summary['ratio_min'], summary['ratio_max'])))
                if phase == 'vmha' else '%6s %4s %9s' % ('', '', ''))
            lines.append('%-5s %7.0f %7.0f %s %6.1f %6.1f %7.1f %7.0f' % (
                phase, s['rate'], s['send_rate'], ratio, s['p50_ms'],
                s['p99_ms'], s['max_ms'], s['cpu_us_per_msg']))
        lines.append('per round, bare/vmha msg/s: ' + '  '.join(
            '%.0f/%.0f' % tuple(pair) for pair in summary['per_round']))
        if summary['sink_failures']:
            lines.append('the sink failed %d time(s) (broker trouble?): '
                         'those rounds are not comparable'
                         % summary['sink_failures'])
        lines += [
            '', 'journal: journal_mode=%s synchronous=%s, in %s; one '
            'transaction per notification' % (
                vmha['journal_mode'], vmha['synchronous'],
                vmha['journal_dir']),
            'outbox: empty %.2f s after the first write (%.2f s after the '
            'last commit); sender %.0f msg/s, busy %.0f%%' % (
                vmha['time_to_empty_s'], vmha['drain_after_writes_s'],
                vmha['sender_rate'], 100 * vmha['sender_busy']),
            'sender per message: sink.send %.0f us, mark_delivered %.0f us '
            '(one transaction, one fsync), reading batches %.0f us' % (
                vmha['send_us'], vmha['mark_us'], vmha['read_us_per_msg'])]
    return '\n'.join(lines + failures)


def parent_main(args, argv):
    from tests.integration import services

    command = shlex.join([sys.executable, sys.argv[0], *argv])
    base_dir = args.rabbitmq_dir or tempfile.mkdtemp(
        prefix='vmha-bench-rabbitmq-')
    if args.port == 5672:
        broker = services.RabbitMQ(base_dir)
    else:
        # A node name of its own: rabbitmqctl commands for the default
        # node (the integration tests' outages) must not reach it.
        broker = services.RabbitMQ(base_dir, port=args.port,
                                   node='vmha-bench-%d@localhost' % args.port)
    try:
        broker.ensure_installed()
        broker.start()
    except services.ServiceError as error:
        sys.stderr.write('cannot start RabbitMQ (state and logs in %s): '
                         '%s\n' % (base_dir, error))
        return 1
    rounds, failures = [], []
    try:
        for round_no in range(args.rounds):
            # Rotate the order so neither phase always runs first.
            order = PHASES if round_no % 2 == 0 else PHASES[::-1]
            results = {}
            for phase in order:
                result, problem = run_worker(phase, args,
                                             broker.transport_url)
                results[phase] = result
                failures += [problem] if problem else []
            rounds.append(results)
    finally:
        broker.stop()
        if not args.rabbitmq_dir:
            shutil.rmtree(base_dir, ignore_errors=True)
    for round_no, results in enumerate(rounds):
        for phase, r in results.items():
            bad = {key: r[key] for key in ('lost', 'duplicated', 'foreign',
                                           'wrong_id') if r and r[key]}
            if bad:
                failures.append('round %d %s: %s' % (
                    round_no + 1, phase, ', '.join(
                        '%s %d' % item for item in bad.items())))
    summary = aggregate(rounds)
    if summary is None and not failures:
        failures.append('no round finished')
    if args.json:
        print(json.dumps({'command': command,
                          'transport_url': broker.transport_url,
                          'broker_reused': broker.reused,
                          'target_ratio': TARGET_RATIO, 'summary': summary,
                          'rounds': rounds, 'failures': failures},
                         indent=1))
    else:
        print(report(command, args, broker, summary, failures))
    return 1 if failures else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=10000,
                        help='notifications per phase')
    parser.add_argument('--rounds', type=int, default=5,
                        help='rounds of both phases (the ratio is a median)')
    parser.add_argument('--journal-dir', default=None,
                        help='where the journal file goes (default: the '
                        'temporary directory)')
    parser.add_argument('--port', type=int, default=5672,
                        help='RabbitMQ port: a broker answering there is '
                        'reused, else one is started there for the run')
    parser.add_argument('--rabbitmq-dir', default=None,
                        help="state and logs of a broker this run starts "
                        "(default: a new temporary directory)")
    parser.add_argument('--json', action='store_true',
                        help='machine-readable output')
    parser.add_argument('--worker', choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument('--listen', metavar='TOPIC', help=argparse.SUPPRESS)
    parser.add_argument('--url', help=argparse.SUPPRESS)
    parser.add_argument('--expect', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if REPO_ROOT not in sys.path:
        # For tests.integration.services, and for this checkout's vmha.
        sys.path.insert(0, REPO_ROOT)
    if args.listen:
        return listener_main(args)
    if args.worker:
        return worker_main(args)
    return parent_main(args, argv)


if __name__ == '__main__':
    sys.exit(main())
