"""The whole recovery loop on the real test bed, for tests and bench/.

Plain Python, like :mod:`services` and :mod:`pipeline`:

    real libvirtd + QEMU guest
      -> vmha-agent (the real console script, ``qemu:///system``,
         messaging sink) -> RabbitMQ -> vmha-masakari-bridge
      -> masakari-api 22 -> RPC -> masakari-engine 22
      -> Keystone/Nova stand-in (tests/fixtures/nova_standin.py)
      -> libvirt: the domain is stopped and started again.

:class:`Recovery` holds the Masakari side (API, engine, stand-in);
:class:`VmhaAgent` runs vmha-agent with a configuration file of its own;
:class:`Loop` puts them together with a bridge on a topic of its own and
has the waits a test or a benchmark needs.
"""

import contextlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

from tests.fixtures import nova_standin
from tests.integration import pipeline
from tests.integration import services
from tests.integration import testbed

REPO_ROOT = services.REPO_ROOT
#: Masakari's end states for a notification.
DONE = ('finished', 'ignored', 'failed')


class Recovery:
    """masakari-api (duplicate window 0) + masakari-engine + the nova
    stand-in acting on ``uri``, for compute host ``host``.

    The duplicate window is 0 so that a second crash of one VM, a new
    failure episode with its own ``generated_time``, is a second
    notification (doc: README, "Masakari's duplicate window").
    """

    def __init__(self, base_dir, transport_url, host, uri=testbed.URI):
        self.base_dir = pathlib.Path(base_dir)
        self.host = host
        self.api = services.MasakariAPI(self.base_dir / 'masakari',
                                        transport_url=transport_url,
                                        duplicate_interval=0)
        self.nova = nova_standin.NovaStandin(uri, host)
        self.engine = services.MasakariEngine(self.api, self.nova.auth_url)

    def start(self):
        self.api.ensure_installed()
        self.api.start()
        self.api.add_host(self.host)
        self.nova.start()
        self.engine.start()
        return self

    def stop(self):
        self.engine.stop()
        self.api.stop()
        self.nova.stop()

    def rows(self, instance_uuid):
        """Masakari's notifications for one instance, oldest first."""
        return [row for row in self.api.notifications(self.host)
                if row['payload'].get('instance_uuid') == instance_uuid]

    def workflow(self, notification_uuid):
        """``GET /v1/notifications/{id}`` at microversion 1.1: status and
        ``recovery_workflow_details`` (each task's progress messages)."""
        request = urllib.request.Request(
            '%s/notifications/%s' % (self.api.url, notification_uuid),
            headers={'Accept': 'application/json',
                     'OpenStack-API-Version': 'instance-ha 1.1'})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())['notification']

    def log_tail(self):
        return '%s\n%s' % (self.api.log_tail(), self.engine.log_tail())


class VmhaAgent:
    """``vmha-agent --config-file BASE/agent.conf`` on ``uri``, sending
    over the messaging sink on ``topic`` (the bridge's topic)."""

    def __init__(self, base_dir, transport_url, topic, host, backend,
                 uri=testbed.URI, options=''):
        self.base_dir = pathlib.Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.base_dir / 'agent.conf'
        self.log_file = self.base_dir / 'agent.log'
        self.stderr_file = self.base_dir / 'agent.err'
        self.config_file.write_text(
            pipeline.bus_options(transport_url, topic) +
            '[DEFAULT]\n'
            'host = %(host)s\n'
            'concurrency_backend = %(backend)s\n'
            'transport_url = %(url)s\n'
            'log_file = %(log)s\n'
            'debug = false\n'
            '[libvirt]\n'
            'connection_uri = %(uri)s\n'
            '[database]\n'
            'path = %(db)s\n'
            '[notifications]\n'
            'sinks = messaging\n'
            'topics = %(topic)s\n'
            '[outbox]\n'
            'retry_max_interval = 2\n'
            '[health]\n'
            'port = 0\n'
            '%(options)s'
            % dict(host=host, backend=backend, url=transport_url,
                   log=self.log_file, uri=uri, db=self.base_dir /
                   'vmha.sqlite', topic=topic, options=options))
        self._process = None

    def running(self):
        return self._process is not None and self._process.poll() is None

    def log_text(self):
        try:
            return self.log_file.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def log_tail(self, lines=40):
        return services.log_tail([self.stderr_file, self.log_file], lines)

    def start(self, timeout=60):
        with open(self.stderr_file, 'a') as err:
            self._process = subprocess.Popen(
                [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
                 str(self.config_file)],
                stdout=err, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT),
                start_new_session=True,
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
        if not services.wait_until(
                lambda: 'Power-state audit' in self.log_text()
                or not self.running(),
                timeout):
            self.stop()
            raise services.ServiceError('vmha-agent did not start within '
                                        '%ss\n%s' % (timeout,
                                                     self.log_tail()))
        if not self.running():
            raise services.ServiceError('vmha-agent exited with %s\n%s' % (
                self._process.returncode, self.log_tail()))
        return self

    def status_json(self):
        """``vmha-status --rpc --json`` of this agent, parsed."""
        result = subprocess.run(
            [sys.executable, '-m', 'vmha.cmd.status', '--config-file',
             str(self.config_file), '--rpc', '--json'],
            capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
        if result.returncode not in (0, 3):
            raise AssertionError('vmha-status exited %s: %s%s' % (
                result.returncode, result.stdout, result.stderr))
        return json.loads(result.stdout)

    def outbox(self, event_type='instance.failure'):
        """The agent's outbox rows of ``event_type`` (read-only), each a
        dict with the payload's ``vmha_object.data`` as ``data``."""
        database = self.base_dir / 'vmha.sqlite'
        if not database.exists():
            return []
        uri = 'file:%s?mode=ro' % database
        with contextlib.closing(sqlite3.connect(uri, uri=True,
                                                timeout=30)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute('SELECT * FROM outbox WHERE event_type = ? '
                              'ORDER BY seq', (event_type,)).fetchall()
        return [dict(row, data=json.loads(row['payload'])[
            'vmha_object.data']) for row in rows]

    def stop(self, timeout=30):
        if self._process is None:
            return None
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
                return None
        return process.returncode


class Loop:
    """Agent + bridge + :class:`Recovery` on one topic of their own."""

    def __init__(self, base_dir, transport_url, recovery, backend,
                 agent_options=''):
        self.base_dir = pathlib.Path(base_dir)
        self.transport_url = transport_url
        self.recovery = recovery
        self.topic = pipeline.unique_topic('vmha_loop')
        self.bridge = pipeline.Bridge(self.base_dir / 'bridge',
                                      transport_url, recovery.api.url,
                                      self.topic, tell_agents='true')
        # The bridge casts each recovery change to the agent over RPC
        # ([DEFAULT] transport_url; oslo.config merges a second
        # [DEFAULT] section), which the agent serves ([rpc] enabled).
        with open(self.bridge.config_file, 'a') as config:
            config.write('[DEFAULT]\ntransport_url = %s\n' % transport_url)
        self.agent = VmhaAgent(self.base_dir / 'agent', transport_url,
                               self.topic, recovery.host, backend,
                               options='[rpc]\nenabled = true\n' +
                               agent_options)

    @property
    def nova(self):
        return self.recovery.nova

    def start(self):
        self.bridge.start()
        self.agent.start()
        return self

    def stop(self):
        statuses = (self.agent.stop(), self.bridge.stop())
        with contextlib.suppress(Exception):
            pipeline.delete_topic(self.transport_url, self.topic)
        with contextlib.suppress(Exception):
            pipeline.delete_rpc_queues(self.transport_url,
                                       self.recovery.host)
        return statuses

    def log_tail(self):
        return '\n'.join([self.agent.log_tail(), self.bridge.log_tail(),
                          self.recovery.log_tail()])

    def wait_for_row(self, instance_uuid, count=1, status=DONE,
                     timeout=90):
        """The ``count``-th Masakari row of the instance once its status
        is in ``status``; fails with every log if it does not come."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.recovery.rows(instance_uuid)
            if len(rows) >= count and rows[count - 1]['status'] in status:
                return rows[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    'no Masakari notification #%d of %s in %s within %ss '
                    '(rows: %s)\n%s' % (count, instance_uuid, status,
                                        timeout, [r['status'] for r in rows],
                                        self.log_tail()))
            time.sleep(0.1)


def wait_for_ping(guest, timeout=120):
    """Seconds until the guest's agent answers (the domain may be off at
    first: the recovery has not started it yet)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if guest.is_running() and guest.ping(timeout=1):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError('%s did not answer guest-ping within %ss '
                                 '(%s)\n%s' % (guest.name, timeout,
                                               guest.state(),
                                               guest.log_tail()))
        time.sleep(0.1)

