"""vmha's own processes for the end-to-end tests: agent side and bridge.

Plain Python, like :mod:`tests.integration.services`; the fixtures in
``conftest.py`` build these.

* :class:`Bridge` runs the real ``vmha-masakari-bridge`` console script
  with a configuration file of its own and its log in a file.
* :class:`Agent` runs :mod:`tests.integration.outbox_agent` (the agent's
  journal, outbox, sender and messaging sink) and reads its journal.
* :func:`listen` consumes the bus with a real oslo.messaging
  NotificationListener, as any other consumer of vmha's notifications
  would.

Every test gets its own topic, listener pool and exchange
(:func:`unique_topic`): durable queues outlive a test, and nothing one
test left in the broker may reach another test's bridge.  The exchange is
not oslo.messaging's default ``openstack`` because any other user of the
broker may have declared that one first, and not durable: RabbitMQ then
refuses a durable declaration, oslo.messaging's consumers silently fall
back to non-durable queues, and its notification publisher cannot send at
all (it declares the exchange again, through the default queue, and fails
with PRECONDITION_FAILED on every retry).
"""

import contextlib
import functools
import json
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
import uuid

from prometheus_client import parser

from tests.integration import services

REPO_ROOT = services.REPO_ROOT

#: What vmha-masakari-bridge logs once it consumes.
BRIDGE_READY = 'vmha-masakari-bridge forwarding failures from'
#: oslo.messaging's notification priorities (queue name suffixes).
PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical',
              'sample')


def unique_topic(prefix='vmha_it'):
    """A topic name no other test (or earlier run) has used."""
    return '%s_%s' % (prefix, uuid.uuid4().hex[:10])


def delete_topic(transport_url, topic):
    """Delete what the test on ``topic`` left in the broker.

    oslo.messaging's notification publisher declares a queue named
    ``<topic>.<priority>`` that nobody here reads and that keeps every
    notification; durable queues and the exchange outlive the test.  A
    broker started by the session goes with it, but a reused one (see
    ``services.RabbitMQ``) would keep all of it.
    """
    import kombu

    names = ['%s.%s' % (topic, priority) for priority in PRIORITIES]
    names += ['%s_bridge' % topic, '%s_observer' % topic]
    url = transport_url.replace('rabbit://', 'amqp://')
    with kombu.Connection(url, connect_timeout=5) as connection:
        for name in names:
            # A failed delete closes its channel: one channel each.
            with contextlib.suppress(Exception), \
                    connection.channel() as channel:
                channel.queue_delete(name)
        with contextlib.suppress(Exception), \
                connection.channel() as channel:
            channel.exchange_delete(topic)


def delete_rpc_queues(transport_url, host, if_unused=True):
    """Delete the agent RPC server's queues for ``host``.

    Queue names do not depend on the exchange: every agent on a broker
    shares the topic queue ``vmha-agent`` (``[rpc] enabled`` is on by
    default, so any agent given ``[DEFAULT] transport_url`` declares it).
    One left durable by a test with ``amqp_durable_queues = true`` makes
    RabbitMQ refuse the next agent that declares it otherwise (406
    PRECONDITION_FAILED), and that agent's RPC server never starts.
    With ``if_unused`` a queue something still consumes from is kept.
    """
    import kombu

    from vmha import rpcapi

    url = transport_url.replace('rabbit://', 'amqp://')
    with kombu.Connection(url, connect_timeout=5) as connection:
        for name in ('%s.%s' % (rpcapi.TOPIC, host), rpcapi.TOPIC):
            with contextlib.suppress(Exception), \
                    connection.channel() as channel:
                channel.queue_delete(name, if_unused=if_unused)


def failure_row_payload(instance_uuid):
    """The payload Masakari must store for a QEMU process that died."""
    return {'event': 'LIFECYCLE', 'instance_uuid': instance_uuid,
            'vir_domain_event': 'STOPPED_FAILED'}


def bus_options(transport_url, exchange, durable=True):
    """The bus options vmha's processes and the tests' listeners share,
    as configuration file text that starts a ``[DEFAULT]`` section.

    Durable queues on both sides (see the broker-outage test): a
    notification waiting in a queue that is not durable is gone when
    RabbitMQ restarts.
    """
    return ('[DEFAULT]\n'
            'control_exchange = %s\n'
            '[oslo_messaging_notifications]\n'
            'transport_url = %s\n'
            '[oslo_messaging_rabbit]\n'
            'amqp_durable_queues = %s\n'
            % (exchange, transport_url, 'true' if durable else 'false'))


def _console_script(name):
    """The console script beside this interpreter (the dev virtualenv)."""
    path = pathlib.Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise services.ServiceError('%s is not installed in %s'
                                    % (name, path.parent))
    return found


class Bridge:
    """``vmha-masakari-bridge --config-file BASE/bridge.conf``.

    :param masakari_url: the Masakari v1 endpoint (noauth)
    :param topic: ``[notifications] topics``, and the exchange; the
        listener pool is ``<topic>_bridge``
    :param durable: ``[oslo_messaging_rabbit] amqp_durable_queues``
    :param bridge_options: more ``[bridge]`` options (``stall_timeout``)

    Its HTTP endpoint (``url``) listens on a free port: several bridges,
    and other sessions' bridges, run on one host.
    """

    def __init__(self, base_dir, transport_url, masakari_url, topic,
                 retry_max=2, retry_interval=0.5, durable=True,
                 **bridge_options):
        self.base_dir = pathlib.Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.topic = topic
        self.pool = '%s_bridge' % topic
        self.port = services.free_port()
        bridge_options = dict(bridge_options, pool=self.pool,
                              port=self.port)
        # One state file per bridge (the bridge locks it).
        bridge_options.setdefault('state_file',
                                  self.base_dir / 'bridge-state.sqlite')
        self.config_file = self.base_dir / 'bridge.conf'
        self.log_file = self.base_dir / 'bridge.log'
        self.stderr_file = self.base_dir / 'bridge.err'
        self.config_file.write_text(
            '[DEFAULT]\n'
            'log_file = %(log)s\n'
            'debug = false\n'
            '[notifications]\n'
            'topics = %(topic)s\n'
            '[bridge]\n'
            '%(bridge)s'
            '[masakari]\n'
            'noauth = true\n'
            'endpoint_override = %(url)s\n'
            # Short waits keep an outage test short; the behaviour
            # (retry, then requeue to the broker) is the default one.
            'retry_max = %(retry_max)d\n'
            'retry_interval = %(retry_interval)s\n'
            'timeout = 5\n'
            '%(bus)s'
            % dict(log=self.log_file,
                   bus=bus_options(transport_url, topic, durable),
                   topic=topic, url=masakari_url,
                   bridge=''.join('%s = %s\n' % item
                                  for item in sorted(bridge_options.items())),
                   retry_max=retry_max, retry_interval=retry_interval))
        self._process = None

    @property
    def pid(self):
        return self._process.pid if self._process else None

    @property
    def url(self):
        """The bridge's HTTP endpoint (/healthz, /metrics)."""
        return 'http://127.0.0.1:%d' % self.port

    def get(self, path, timeout=10):
        """(status, body bytes) of ``GET path`` on the HTTP endpoint."""
        try:
            with urllib.request.urlopen(self.url + path,
                                        timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def metrics(self):
        """``{sample name: {labels tuple: value}}`` from /metrics, parsed
        with prometheus-client's text parser."""
        status, body = self.get('/metrics')
        if status != 200:
            raise AssertionError('GET /metrics answered %d: %r'
                                 % (status, body[:200]))
        samples = {}
        for family in parser.text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[
                    tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    def running(self):
        return self._process is not None and self._process.poll() is None

    def start(self, timeout=60, env=None):
        """Start and wait until it consumes (its queue then exists).

        :param env: extra environment variables (NOTIFY_SOCKET, ...)
        """
        with open(self.stderr_file, 'a') as err:
            self._process = subprocess.Popen(
                [_console_script('vmha-masakari-bridge'), '--config-file',
                 str(self.config_file)],
                stdout=err, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT),
                start_new_session=True, env=dict(os.environ, **(env or {})))
        if not services.wait_until(
                lambda: BRIDGE_READY in self.log_text()
                or not self.running(), timeout):
            self.stop()
            raise services.ServiceError(
                'vmha-masakari-bridge did not start consuming within %ss\n'
                '%s' % (timeout, self.log_tail()))
        if not self.running():
            raise services.ServiceError(
                'vmha-masakari-bridge exited with status %s\n%s'
                % (self._process.returncode, self.log_tail()))
        return self

    def stop(self, timeout=30):
        """SIGTERM, as an operator's service manager would; the exit
        status (None if it had to be killed)."""
        if self._process is None:
            return None
        process, self._process = self._process, None
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            return None

    def log_text(self):
        """The bridge's log ('' before it wrote any)."""
        try:
            return self.log_file.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def log_lines(self, pattern):
        """Log lines matching the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.log_text().splitlines()
                if regex.search(line)]

    def wait_for_log(self, pattern, timeout=30, count=1):
        """The matching lines once there are ``count``; raise if not."""
        if not services.wait_until(
                lambda: len(self.log_lines(pattern)) >= count, timeout):
            raise AssertionError('bridge logged %d line(s) matching %r '
                                 'within %ss, not %d\n%s'
                                 % (len(self.log_lines(pattern)), pattern,
                                    timeout, count, self.log_tail()))
        return self.log_lines(pattern)

    def log_tail(self, lines=40):
        return services.log_tail([self.stderr_file, self.log_file], lines)


class Agent:
    """The agent's write-and-send path (:mod:`outbox_agent`), one journal.

    :param topic: ``[notifications] topics``, and the exchange
    :param hostname: ``[DEFAULT] host``, the compute host the failures
        are reported for
    :param backend: ``[DEFAULT] concurrency_backend``
    :param durable: ``[oslo_messaging_rabbit] amqp_durable_queues``
    """

    def __init__(self, base_dir, transport_url, topic, hostname, backend,
                 durable=True):
        self.base_dir = pathlib.Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.hostname = hostname
        self.database = self.base_dir / 'vmha.sqlite'
        self.config_file = self.base_dir / 'agent.conf'
        self.log_file = self.base_dir / 'agent.log'
        self.output_file = self.base_dir / 'agent.out'
        self.config_file.write_text(
            '[DEFAULT]\n'
            'host = %(host)s\n'
            'concurrency_backend = %(backend)s\n'
            'log_file = %(log)s\n'
            'debug = false\n'
            '[database]\n'
            'path = %(db)s\n'
            '[notifications]\n'
            'sinks = messaging\n'
            'topics = %(topic)s\n'
            '[outbox]\n'
            # The default backoff ceiling is 30 s: after a 30 s outage
            # the next try could be that far away.  Behaviour is the
            # same, the test just does not wait for it.
            'retry_max_interval = 2\n'
            '%(bus)s'
            % dict(host=hostname, backend=backend, log=self.log_file,
                   bus=bus_options(transport_url, topic, durable),
                   db=self.database, topic=topic))

    def _command(self, *args):
        return [sys.executable, '-m', 'tests.integration.outbox_agent',
                '--config-file', str(self.config_file), *args]

    def run(self, *args, timeout=120):
        """Run to the end; a CompletedProcess with text output."""
        return subprocess.run(
            self._command(*args), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), timeout=timeout)

    def popen(self, *args):
        """Start it with a pipe on stdin (for ``--stdin``); output goes to
        ``output_file``."""
        with open(self.output_file, 'a') as out:
            return subprocess.Popen(
                self._command(*args), stdin=subprocess.PIPE, stdout=out,
                stderr=subprocess.STDOUT, text=True, cwd=str(REPO_ROOT),
                start_new_session=True)

    def outbox(self):
        """Every outbox row as a dict, in send order (read-only)."""
        if not self.database.exists():
            return []
        uri = 'file:%s?mode=ro' % self.database
        with contextlib.closing(sqlite3.connect(uri, uri=True,
                                                timeout=30)) as db:
            db.row_factory = sqlite3.Row
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type = "
                              "'table' AND name = 'outbox'").fetchone():
                return []  # the agent is still creating its journal
            rows = db.execute('SELECT * FROM outbox ORDER BY seq').fetchall()
        return [dict(row, payload=json.loads(row['payload']))
                for row in rows]

    def delivered(self):
        """How many outbox rows are marked delivered."""
        return sum(1 for row in self.outbox()
                   if row['delivered_at'] is not None)

    def log_text(self):
        return services.log_tail([self.output_file, self.log_file], 200)


def written(output):
    """``{uuid: message_id}`` from outbox_agent's ``written`` lines."""
    pairs = {}
    for line in output.splitlines():
        if line.startswith('written '):
            _, message_id, instance_uuid = line.split()
            pairs[instance_uuid] = message_id
    return pairs


@contextlib.contextmanager
def listen(transport_url, topic, pool, config_dir):
    """A NotificationListener on ``topic`` (all priorities) in ``pool``,
    on the exchange named like the topic (as vmha's processes here).

    Yields the list it appends ``(priority, ctxt, publisher_id,
    event_type, payload, metadata)`` to, one tuple per notification.
    Its queue exists when the block starts: what is sent inside the
    block is caught.
    """
    from oslo_config import cfg
    import oslo_messaging

    config_file = pathlib.Path(config_dir) / ('%s.conf' % pool)
    config_file.write_text(bus_options(transport_url, topic))
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(config_file)], project='vmha-it')
    transport = oslo_messaging.get_notification_transport(conf)
    received = []

    def record(priority, ctxt, publisher_id, event_type, payload, metadata):
        received.append((priority, ctxt, publisher_id, event_type, payload,
                         metadata))

    # The dispatcher looks each priority up on the endpoint by name.
    endpoint = types.SimpleNamespace(**{
        priority: functools.partial(record, priority)
        for priority in PRIORITIES})
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [endpoint],
        executor='threading', pool=pool)
    listener.start()
    try:
        yield received
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def wait_for(predicate, timeout, what):
    """Poll ``predicate``; raise AssertionError naming ``what`` if it
    stays false."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s'
                                 % (timeout, what))
        time.sleep(0.1)
