"""What the operator surface costs: endpoint latency and dispatch overhead.

One process, threading backend, libvirt's in-process ``test:///default``
driver holding ``--domains`` running domains (plus its own ``test``):

1. the agent is built as ``vmha-agent`` builds it (``vmha.agent.build``,
   ``[notifications] sinks = log``, a temporary journal, the HTTP endpoint
   on a free loopback port, the guest-agent monitor off: the test driver
   has no agents), and the start-up audit has run;
2. ``GET /healthz``, ``/status`` and ``/metrics`` are timed over HTTP,
   ``--requests`` times each, one at a time (median and worst);
3. the metrics listener, which sits on the dispatch path, is timed on
   100,000 lifecycle events against a listener that does nothing, and
   compared with the time the whole dispatcher spends per event.

Targets (at 1,000 domains): /healthz median < 5 ms; /status and /metrics
median < 250 ms (a scrape every 15 s costs < 2 % of a core); the metrics
listener < 10 us per event.  From the repository root::

    python bench/operator_surface.py [--domains 1000] [--requests 20]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

XML = ("<domain type='test'><name>%s</name><uuid>%s</uuid>"
       "<memory>65536</memory><os><type>hvm</type></os></domain>")


def build_agent(tmp):
    from oslo_config import cfg

    from vmha import cmd
    cmd.select_backend('threading')
    from vmha import agent as agent_lib
    from vmha import objects
    import vmha.conf
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.notify import sinks
    from vmha.virt.libvirt import driver as libvirt_driver

    objects.register_all()
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[])
    for name, value, group in (
            ('concurrency_backend', 'threading', None),
            ('connection_uri', 'test:///default', 'libvirt'),
            ('path', os.path.join(tmp, 'vmha.sqlite'), 'database'),
            ('sinks', ['log'], 'notifications'),
            ('enabled', False, 'guest_agent'),
            ('port', 0, 'health')):
        conf.set_override(name, value, group)
    driver = libvirt_driver.LibvirtDriver.from_conf(conf)
    journal = db.Journal.from_conf(conf)
    outbox = outbox_lib.Outbox(journal)
    sender = sender_lib.OutboxSender.from_conf(conf, outbox,
                                               sinks.load_sink(conf))
    agent = agent_lib.build(conf, driver, journal, outbox, sender)
    from vmha import concurrency
    from vmha.api import http as http_api
    endpoint = http_api.HttpEndpoint(agent, concurrency.get('threading'),
                                     '127.0.0.1', 0)
    agent.surfaces.append(endpoint)
    return agent, endpoint


def timed_get(url, count):
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def listener_cost(metrics, count=100000):
    from vmha.virt import event as ev
    # libvirt's STARTED (2), BOOTED (0)
    events = [ev.LifecycleEvent(str(uuid.uuid4()), 'vm-%d' % i, 2, 0,
                                ev.EVENT_LIFECYCLE_STARTED)
              for i in range(100)]

    def run(listener):
        started = time.perf_counter()
        for i in range(count):
            listener(events[i % 100])
        return (time.perf_counter() - started) / count

    def nothing(event):
        return None
    return run(metrics.listener), run(nothing)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--domains', type=int, default=1000)
    parser.add_argument('--requests', type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='vmha-bench-') as tmp:
        agent, endpoint = build_agent(tmp)
        agent.start()
        try:
            conn = agent.driver.host.get_connection()
            for i in range(args.domains):
                conn.create_domain(XML % ('bench-%05d' % i, uuid.uuid4()))
            deadline = time.monotonic() + 120
            while agent.driver.dispatch_stats().dispatched < args.domains:
                if time.monotonic() > deadline:
                    sys.exit('events did not arrive')
                time.sleep(0.05)
            agent.audit.request()
            runs = agent.audit.runs
            while agent.audit.runs == runs:
                time.sleep(0.05)
            stats = agent.driver.dispatch_stats()
            print('vmha operator surface, %d domains, threading backend'
                  % (args.domains + 1))
            results = {}
            for path in ('/healthz', '/status', '/metrics'):
                median, worst = timed_get(endpoint.url + path, args.requests)
                results[path] = median
                print('  GET %-9s median %7.1f ms  worst %7.1f ms'
                      % (path, median * 1000, worst * 1000))
            with_metrics, bare = listener_cost(agent.metrics)
            print('  metrics listener: %.2f us/event (a no-op listener: '
                  '%.2f us/event; ratio %.1fx); %d events dispatched'
                  % (with_metrics * 1e6, bare * 1e6, with_metrics / bare,
                     stats.dispatched))
        finally:
            agent.stop()
    target = args.domains >= 1000
    verdicts = [('/healthz < 5 ms', results['/healthz'] < 0.005),
                ('/status < 250 ms', results['/status'] < 0.25),
                ('/metrics < 250 ms', results['/metrics'] < 0.25),
                ('listener < 10 us', with_metrics < 10e-6)]
    if target:
        print('  targets: ' + ', '.join('%s %s' % (name, 'PASS' if ok
                                                   else 'MISS')
                                        for name, ok in verdicts))


if __name__ == '__main__':
    main()
