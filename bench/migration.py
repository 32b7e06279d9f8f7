"""Agent CPU while the migration monitor watches 50 concurrent live
migrations on the project's fake libvirt (``tests/fixtures``).

The part of issue 13's benchmark that needs no second host: the
migration time, downtime and hand-over figures need the two-libvirtd
test bed (a later session).

``--migrations`` domains (default 50) each have an outgoing migration
under way (job statistics scripted on the fake: the data remaining
shrinks a little at each read, so the policy's stall detection has
work).  The monitor runs as ``vmha-agent`` builds it: its own loop, a
``NativePool`` of 8 threads, job statistics read through the driver's
agent connections, a real journal for its notifications.  For each
``--intervals`` value (``[migration] progress_interval``; 5 s is the
default, 0.5 s the minimum) it runs ``--seconds`` and prints the
process's CPU time as a share of one core, the reads done, and the CPU
per read (the whole process: pool threads, loop, journal).  From the
repository root::

    python bench/migration.py [--migrations 50] [--intervals 5,0.5]
        [--seconds 20] [--backend threading|eventlet]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

GIB = 2 ** 30


def run(backend_name, migrations, interval, seconds):
    from tests.fixtures import fakelibvirt
    from vmha import concurrency
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.manager import failure_monitor
    from vmha.manager import migration_monitor
    from vmha.manager import state
    from vmha.virt.libvirt import api as libvirt_api
    from vmha.virt.libvirt import driver as libvirt_driver

    backend = concurrency.get(backend_name)
    fake = fakelibvirt.FakeLibvirt()
    domains = []
    for index in range(migrations):
        dom = fake.add_domain('mig-%03d' % index)
        dom.start_migration(total=4 * GIB, remaining=4 * GIB)
        domains.append(dom)

    # Each read shrinks the data remaining a little: a converging
    # migration, as the policy sees most of them.
    def shrinking(dom, read=fakelibvirt.FakeDomain.jobStats):
        def job_stats(flags=0):
            remaining = max(0, dom.job['data_remaining'] - 2 ** 20)
            dom.progress(remaining)
            return read(dom, flags)
        return job_stats
    for dom in domains:
        dom.jobStats = shrinking(dom)

    driver = libvirt_driver.LibvirtDriver(
        'qemu:///system', backend=backend_name,
        api=libvirt_api.LibvirtAPI(fake, fake.qemu), agent_calls=32)
    # No event loop in the fake: the monitor finds the migrations by its
    # start-up scan, as after an agent restart.
    fake.event_impl_registered = True
    driver.host.get_connection = lambda: driver.agent_connections.call(
        lambda conn: conn)
    with tempfile.TemporaryDirectory() as tmp:
        journal = db.Journal(os.path.join(tmp, 'vmha.sqlite'))
        outbox = outbox_lib.Outbox(journal)
        reporter = failure_monitor.Reporter(
            outbox, state.StateStore(journal), 'bench')
        settings = migration_monitor.DEFAULTS._replace(
            progress_interval=interval, progress_timeout=0,
            completion_timeout=0)
        pool = concurrency.NativePool(backend, 8, name='vmha-migration')
        monitor = migration_monitor.MigrationMonitor(
            driver, journal, reporter, pool, backend, settings)
        monitor.start()
        deadline = time.monotonic() + 10
        while len(monitor.status()) < migrations and \
                time.monotonic() < deadline:
            backend.sleep(0.05)
        found = len(monitor.status())
        polls_before = monitor.polls_total
        cpu_before = time.process_time()
        wall_before = time.monotonic()
        backend.sleep(seconds)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        polls = monitor.polls_total - polls_before
        monitor.stop()
        journal.close()
    return found, polls, cpu, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--migrations', type=int, default=50)
    parser.add_argument('--intervals', default='5,0.5')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--backend', default='threading',
                        choices=('threading', 'eventlet'))
    args = parser.parse_args()
    from vmha import cmd
    cmd.select_backend(args.backend)
    print('%d migrations on the fake, backend %s, %gs per run'
          % (args.migrations, args.backend, args.seconds))
    print('%-10s %6s %7s %10s %14s' % ('interval', 'found', 'reads',
                                       'CPU %core', 'CPU per read'))
    for interval in (float(x) for x in args.intervals.split(',')):
        found, polls, cpu, wall = run(args.backend, args.migrations,
                                      interval, args.seconds)
        print('%-10s %6d %7d %9.2f%% %11.0f us' % (
            '%gs' % interval, found, polls, 100.0 * cpu / wall,
            1e6 * cpu / polls if polls else float('nan')))


if __name__ == '__main__':
    main()
