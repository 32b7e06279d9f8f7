"""Real RabbitMQ and a real masakari-api, started and stopped by tests.

Plain Python (no pytest) so that a shell, a benchmark or a debugging session
can drive the same services as the integration fixtures::

    broker = RabbitMQ(base_dir='/tmp/rmq')
    broker.ensure_installed()
    broker.start()
    api = MasakariAPI(base_dir='/tmp/masakari',
                      transport_url=broker.transport_url)
    api.ensure_installed()
    api.start()
    api.add_host('compute-1')
    status, body = api.post_notification('compute-1', {...})
    api.notifications()          # the rows Masakari stored

Both classes install what is missing (``apt-get`` for RabbitMQ, a
virtualenv with masakari from PyPI), run their daemon in the background with
its logs in ``base_dir``, stop it by PID, and put the tail of those logs in
every :class:`ServiceError`.  Each keeps how long its steps took in
``timings`` (seconds; a step that had nothing to do is not there).

Facts these classes rely on (masakari 22.0.0, RabbitMQ 3.10.8, Debian 12):

* masakari-api with ``auth_strategy = noauth2`` treats every request as an
  admin request and needs no header at all: no keystone, no token.
* The API stores the notification row, then casts ``process_notification``
  to masakari-engine over RPC.  With no engine the cast goes to an exchange
  with no queue and is dropped: the API still answers 202.  With the broker
  down the cast retries for ever, so the POST hangs (the row is already
  committed) until the broker is back.
* Without a coordination backend masakari 22 sleeps a random 0 to
  ``notification_delay_max`` (default 5) seconds before each create; the
  config here sets it to 0.
* The host API checks hosts against nova, which is absent here, so hosts go
  into the database directly (:meth:`MasakariAPI.add_host`).
"""

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

RABBITMQ_BIN = pathlib.Path('/usr/lib/rabbitmq/bin')
EPMD_PORT = 4369
MASAKARI_REQUIREMENT = 'masakari==22.*'
MASAKARI_VENV = REPO_ROOT / '.venv-masakari'

# The first bytes of any AMQP 0-9-1 client: the broker answers with a
# Connection.Start method frame (frame type 1).
AMQP_PROTOCOL_HEADER = b'AMQP\x00\x00\x09\x01'


class ServiceError(RuntimeError):
    """A service could not be installed, started, stopped or reached."""


def log_tail(paths, lines=40):
    """The last ``lines`` lines of each existing file, labelled."""
    parts = []
    for path in paths:
        path = pathlib.Path(path)
        if not path.exists():
            continue
        text = path.read_text(errors='replace').splitlines()[-lines:]
        parts.append('--- %s (last %d lines)\n%s'
                     % (path, len(text), '\n'.join(text)))
    return '\n'.join(parts) or '(no log written)'


def free_port(host='127.0.0.1'):
    """A TCP port nobody listens on right now (racy, but good enough)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_answers(host, port, timeout=1.0):
    """Whether anything accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_answers(host, port, timeout=1.0):
    """Whether an AMQP 0-9-1 broker, not just any socket, answers there."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(AMQP_PROTOCOL_HEADER)
            return sock.recv(1) == b'\x01'
    except OSError:
        return False


def wait_until(predicate, timeout, interval=0.1):
    """Poll ``predicate`` until true; return whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def stop_process(process, timeout):
    """SIGTERM ``process``, then SIGKILL its whole session if it lingers.

    The daemons run in their own session (``start_new_session``), so the
    process group id is the PID we started: only our own processes die.
    """
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.contextmanager
def file_lock(path):
    """An exclusive lock so that parallel sessions install only once."""
    with open(path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(command, log_path, timeout, env=None, what=None):
    """Run ``command`` with output appended to ``log_path``; raise on error."""
    with open(log_path, 'a') as log:
        log.write('\n$ %s\n' % ' '.join(map(str, command)))
        log.flush()
        try:
            result = subprocess.run(
                [str(part) for part in command], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError('%s timed out after %ss\n%s'
                               % (what or command[0], timeout,
                                  log_tail([log_path])))
    if result.returncode != 0:
        raise ServiceError('%s failed (exit %d)\n%s'
                           % (what or command[0], result.returncode,
                              log_tail([log_path])))


class RabbitMQ:
    """A RabbitMQ broker on 127.0.0.1, guest/guest, no plugins.

    Runs as root with every RABBITMQ_* path under ``base_dir``, so neither
    /var/lib/rabbitmq nor /etc/rabbitmq is touched, and the Debian wrapper
    (which would su to the rabbitmq user) is bypassed.  If a broker
    already answers on the port, :meth:`start` reuses it and :meth:`stop`
    leaves it running.
    """

    def __init__(self, base_dir, port=5672, node='vmha-it@localhost'):
        self.base_dir = pathlib.Path(base_dir)
        self.host = '127.0.0.1'
        self.port = port
        self.node = node
        self.timings = {}
        self.reused = False
        self._process = None
        self._app_stopped = False
        self._started_epmd = False
        self.log_dir = self.base_dir / 'log'
        self.stdout_log = self.base_dir / 'rabbitmq-server.out'
        self.ctl_log = self.base_dir / 'rabbitmqctl.log'
        self.install_log = self.base_dir / 'apt-get.log'

    @property
    def transport_url(self):
        """The oslo.messaging URL of this broker."""
        return 'rabbit://guest:guest@%s:%d/' % (self.host, self.port)

    @property
    def pid(self):
        """PID of the rabbitmq-server process we started, else None."""
        return self._process.pid if self._process else None

    def answers(self):
        """Whether the broker accepts AMQP connections right now."""
        return amqp_answers(self.host, self.port)

    def log_tail(self, lines=40):
        logs = sorted(self.log_dir.glob('*.log')) if self.log_dir.exists() \
            else []
        return log_tail([self.stdout_log, *logs, self.ctl_log], lines)

    # -- installing --------------------------------------------------------

    def ensure_installed(self):
        """apt-get install rabbitmq-server unless it is there already."""
        if (RABBITMQ_BIN / 'rabbitmq-server').exists():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        command = ['apt-get', 'install', '-y', '--no-install-recommends',
                   '-o', 'DPkg::Lock::Timeout=600', 'rabbitmq-server']
        with self._no_service_start():
            try:
                run(command, self.install_log, 1200, env=env)
            except ServiceError:
                # A fresh machine may have no package lists yet.
                run(['apt-get', 'update', '-o',
                     'DPkg::Lock::Timeout=600'],
                    self.install_log, 600, env=env)
                run(command, self.install_log, 1200, env=env)
        self.timings['install'] = time.monotonic() - started

    @staticmethod
    @contextlib.contextmanager
    def _no_service_start():
        """Stop the package's postinst from starting the system broker.

        Without systemd, invoke-rc.d asks /usr/sbin/policy-rc.d; exit
        status 101 means "do not start".  Container images usually ship
        such a file; if this machine does not, one is put there for the
        install and removed after it.
        """
        policy = pathlib.Path('/usr/sbin/policy-rc.d')
        if policy.exists():
            yield
            return
        policy.write_text('#!/bin/sh\n# vmha integration tests\nexit 101\n')
        policy.chmod(0o755)
        try:
            yield
        finally:
            policy.unlink()

    # -- running -----------------------------------------------------------

    def _env(self):
        env = dict(os.environ)
        # The Erlang cookie lives in $HOME; a stable HOME lets a later
        # session control a broker that an earlier one left running.
        env.setdefault('HOME', str(self.base_dir))
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / 'rabbitmq.conf'),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(
                self.base_dir / 'advanced.config'),
            # An empty env file: ignore /etc/rabbitmq/rabbitmq-env.conf.
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / 'rabbitmq-env.conf'),
            RABBITMQ_MNESIA_BASE=str(self.base_dir / 'mnesia'),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(
                self.base_dir / 'enabled_plugins'),
            RABBITMQ_PID_FILE=str(self.base_dir / 'rabbitmq.pid'),
        )
        return env

    def _write_config(self):
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        (self.base_dir / 'rabbitmq.conf').write_text(
            'listeners.tcp.default = %s:%d\n'
            # guest may log in, from loopback only (the default, stated).
            'loopback_users.guest = true\n' % (self.host, self.port))
        (self.base_dir / 'rabbitmq-env.conf').write_text('')
        (self.base_dir / 'enabled_plugins').write_text('[].\n')

    def start(self, timeout=120):
        """Start the broker (or reuse one that answers) and wait for it."""
        if self._process is not None and self._process.poll() is None:
            return
        if self.answers():
            self.reused = True
            return
        self.ensure_installed()
        self._write_config()
        # The Erlang VM starts epmd (the node name server, port 4369) as a
        # daemon if none runs; then stop() ends it too.
        self._started_epmd = not port_answers(self.host, EPMD_PORT)
        started = time.monotonic()
        with open(self.stdout_log, 'a') as out:
            self._process = subprocess.Popen(
                [str(RABBITMQ_BIN / 'rabbitmq-server')],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(),
                start_new_session=True)
        if not wait_until(lambda: self.answers()
                          or self._process.poll() is not None, timeout):
            self.stop()
            raise ServiceError('RabbitMQ did not answer on %s:%d within '
                               '%ss\n%s' % (self.host, self.port, timeout,
                                            self.log_tail()))
        if not self.answers():
            status = self._process.returncode
            self.stop()
            raise ServiceError('rabbitmq-server exited with status %s\n%s'
                               % (status, self.log_tail()))
        self.timings['start'] = time.monotonic() - started

    def stop(self, timeout=60):
        """Stop the broker this object started (a reused one stays)."""
        if self.reused and self._app_stopped:
            self.start_app()
        if self._process is None:
            return
        # rabbitmq-server's shell wrapper turns SIGTERM into a clean
        # shutdown of the Erlang VM.
        stop_process(self._process, timeout)
        self._process = None
        if self._started_epmd:
            # Refused (harmlessly) while another node still uses epmd.
            subprocess.run(['epmd', '-kill'], capture_output=True,
                           timeout=30)

    def ctl(self, *args, timeout=120):
        """Run ``rabbitmqctl -n NODE ARGS...``; raise with logs on error."""
        run([RABBITMQ_BIN / 'rabbitmqctl', '-n', self.node, *args],
            self.ctl_log, timeout, env=self._env(),
            what='rabbitmqctl %s' % ' '.join(args))

    def stop_app(self):
        """Stop the RabbitMQ application; the Erlang node keeps running.

        Clients see the broker go away (connections closed, port refused)
        as in a broker outage.
        """
        self.ctl('stop_app')
        self._app_stopped = True
        if not wait_until(lambda: not self.answers(), 30):
            raise ServiceError('RabbitMQ still answers after stop_app\n%s'
                               % self.log_tail())

    def start_app(self, timeout=60):
        """Start the application again and wait until it answers."""
        started = time.monotonic()
        self.ctl('start_app')
        if not wait_until(self.answers, timeout):
            raise ServiceError('RabbitMQ does not answer after start_app\n'
                               '%s' % self.log_tail())
        self._app_stopped = False
        self.timings['start_app'] = time.monotonic() - started

    @contextlib.contextmanager
    def outage(self):
        """``with broker.outage(): ...`` runs the block with the broker down.
        """
        self.stop_app()
        try:
            yield self
        finally:
            self.start_app()


class MasakariAPI:
    """masakari-api 22 from PyPI, noauth2, SQLite, RPC over ``transport_url``.

    The virtualenv is shared by every session (``.venv-masakari`` at the
    top of the repository); configuration, databases and logs go to
    ``base_dir``.  No masakari-engine runs (unless a
    :class:`MasakariEngine` is started beside it): notifications stay
    ``new``.

    ``transport_url='fake:/'`` (oslo.messaging's in-process driver) keeps
    the API answering during a broker outage, for tests where only vmha's
    side of the broker should go down.
    """

    def __init__(self, base_dir, transport_url, venv_dir=MASAKARI_VENV,
                 port=None, duplicate_interval=180, rpc_topic=None):
        self.base_dir = pathlib.Path(base_dir)
        self.transport_url = transport_url
        # masakari-api casts each notification to this topic; an engine
        # (MasakariEngine) of this API listens on it.  Other sessions'
        # engines share the broker: a topic of its own per API keeps
        # their casts apart (the default, ha_engine, would hand this
        # API's notifications to whichever engine takes them).
        self.rpc_topic = rpc_topic or 'ha_engine_%s' % uuid.uuid4().hex[:8]
        self.venv_dir = pathlib.Path(venv_dir)
        self.host = '127.0.0.1'
        self.port = port or free_port(self.host)
        self.duplicate_interval = duplicate_interval
        self.timings = {}
        self._process = None
        self._synced = False
        self._segment_uuid = None
        self.config_file = self.base_dir / 'masakari.conf'
        self.database = self.base_dir / 'masakari.db'
        self.log_file = self.base_dir / 'masakari-api.log'
        self.stdout_log = self.base_dir / 'masakari-api.out'
        self.manage_log = self.base_dir / 'masakari-manage.log'
        self.install_log = self.base_dir / 'pip.log'

    @property
    def endpoint(self):
        """Root of the service: ``GET`` it for the version list."""
        return 'http://%s:%d' % (self.host, self.port)

    @property
    def url(self):
        """The v1 API, e.g. ``http://127.0.0.1:PORT/v1``.

        What a client takes as its endpoint; noauth2 needs no header.
        vmha: ``[masakari] noauth = true`` and ``endpoint_override = url``.
        keystoneauth1: ``Adapter(Session(auth=noauth.NoAuth()),
        service_type='instance-ha', endpoint_override=url)``, then
        ``post('/notifications', json=...)`` (its ``X-Auth-Token:
        notused`` is ignored).  Plain HTTP: ``POST url + '/notifications'``.
        """
        return self.endpoint + '/v1'

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def log_tail(self, lines=40):
        return log_tail([self.stdout_log, self.log_file], lines)

    # -- installing --------------------------------------------------------

    def _bin(self, name):
        return self.venv_dir / 'bin' / name

    def ensure_installed(self):
        """Create the virtualenv with masakari unless it is there already."""
        seconds = ensure_venv(self.venv_dir, [MASAKARI_REQUIREMENT],
                              self._bin('masakari-api'), self.install_log)
        if seconds is not None:
            self.timings['install'] = seconds

    def paste_config(self):
        """The api-paste.ini the masakari wheel installs under its prefix."""
        path = self.venv_dir / 'etc' / 'masakari' / 'api-paste.ini'
        if not path.exists():
            raise ServiceError('%s missing: masakari wheel changed?' % path)
        return path

    # -- configuring -------------------------------------------------------

    def _env(self):
        return foreign_env()

    def write_config(self):
        """Write masakari.conf into ``base_dir``."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(f"""\
[DEFAULT]
auth_strategy = noauth2
transport_url = {self.transport_url}
masakari_api_listen = {self.host}
masakari_api_listen_port = {self.port}
# One worker: a launcher process plus one child, both stopped via the PID.
masakari_api_workers = 1
# Masakari 22 sleeps up to this many seconds before each create when no
# coordination backend is set; tests want answers at once.
notification_delay_max = 0
duplicate_notification_detection_interval = {self.duplicate_interval}
masakari_topic = {self.rpc_topic}
log_file = {self.log_file}
debug = false

[wsgi]
api_paste_config = {self.paste_config()}

[database]
connection = sqlite:///{self.database}

[taskflow]
connection = sqlite:///{self.base_dir / 'taskflow.db'}

[oslo_concurrency]
lock_path = {self.base_dir / 'locks'}
""")

    def db_sync(self):
        """``masakari-manage db sync``: create both SQLite schemas."""
        started = time.monotonic()
        run([self._bin('masakari-manage'), '--config-file',
             self.config_file, 'db', 'sync'],
            self.manage_log, 300, env=self._env(), what='masakari-manage')
        self._synced = True
        self.timings['db_sync'] = time.monotonic() - started

    # -- running -----------------------------------------------------------

    def answers(self):
        """Whether ``GET /`` answers 200 right now."""
        try:
            with urllib.request.urlopen(self.endpoint + '/', timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout=90):
        """Configure and sync (first time), start, wait for ``GET /``."""
        if self._process is not None and self._process.poll() is None:
            return
        self.ensure_installed()
        if not self._synced:
            self.write_config()
            self.db_sync()
        started = time.monotonic()
        with open(self.stdout_log, 'a') as out:
            self._process = subprocess.Popen(
                [str(self._bin('masakari-api')), '--config-file',
                 str(self.config_file)],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(),
                start_new_session=True)
        if not wait_until(lambda: self.answers()
                          or self._process.poll() is not None, timeout):
            self.stop()
            raise ServiceError('masakari-api did not answer on %s within '
                               '%ss\n%s' % (self.endpoint, timeout,
                                            self.log_tail()))
        if self._process.poll() is not None:
            status = self._process.returncode
            self.stop()
            raise ServiceError('masakari-api exited with status %s\n%s'
                               % (status, self.log_tail()))
        self.timings['start'] = time.monotonic() - started

    def stop(self, timeout=20):
        """Stop masakari-api (launcher and worker); the database stays."""
        stop_process(self._process, timeout)
        self._process = None

    @contextlib.contextmanager
    def outage(self):
        """``with api.outage(): ...`` runs the block with the API down."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    # -- the REST API ------------------------------------------------------

    def request(self, method, path, body=None, timeout=30):
        """``method url+path`` with a JSON body; returns (status, json).

        Error statuses are returned, not raised: tests assert on them.  A
        body that is not JSON comes back as text.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={'Content-Type': 'application/json',
                     'Accept': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            raise ServiceError('%s %s: %s\n%s' % (method, path, error,
                                                   self.log_tail()))
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors='replace')

    def post_notification(self, hostname, payload, generated_time=None,
                          notification_type='VM', timeout=30):
        """``POST /v1/notifications``; returns (status, json).

        ``generated_time`` defaults to now (UTC, ISO 8601).
        """
        if generated_time is None:
            generated_time = utcnow()
        if isinstance(generated_time, datetime.datetime):
            generated_time = generated_time.isoformat()
        return self.request('POST', '/notifications', {'notification': {
            'type': notification_type, 'hostname': hostname,
            'generated_time': generated_time, 'payload': payload}},
            timeout=timeout)

    def create_segment(self, name, recovery_method='auto',
                       service_type='COMPUTE'):
        """``POST /v1/segments``; returns the segment as the API shows it."""
        status, body = self.request('POST', '/segments', {'segment': {
            'name': name, 'recovery_method': recovery_method,
            'service_type': service_type}})
        if status != 201:
            raise ServiceError('POST /segments: %s %s\n%s'
                               % (status, body, self.log_tail()))
        return body['segment']

    # -- the database ------------------------------------------------------

    def _db(self):
        connection = sqlite3.connect(self.database, timeout=30)
        connection.row_factory = sqlite3.Row
        return connection

    def add_host(self, hostname, segment_uuid=None, on_maintenance=False):
        """Register a compute host, straight into the database.

        Masakari's host API would ask nova whether the host exists.  The
        host joins ``segment_uuid``, or a segment ``vmha-it`` made through
        the API on first use.  Returns the host's uuid.
        """
        if segment_uuid is None:
            if self._segment_uuid is None:
                self._segment_uuid = self.create_segment('vmha-it')['uuid']
            segment_uuid = self._segment_uuid
        host_uuid = str(uuid.uuid4())
        with contextlib.closing(self._db()) as db, db:
            db.execute(
                'INSERT INTO hosts (created_at, deleted, uuid, name, '
                'reserved, type, control_attributes, failover_segment_id, '
                'on_maintenance) VALUES (?, 0, ?, ?, 0, ?, ?, ?, ?)',
                (db_time(), host_uuid, hostname, 'COMPUTE', 'SSH',
                 segment_uuid, int(on_maintenance)))
        return host_uuid

    def set_maintenance(self, hostname, on_maintenance=True):
        """Put a host into maintenance (notifications then get 409)."""
        with contextlib.closing(self._db()) as db, db:
            db.execute('UPDATE hosts SET on_maintenance = ? WHERE name = ? '
                       'AND deleted = 0', (int(on_maintenance), hostname))

    def notifications(self, hostname=None):
        """Rows of the ``notifications`` table, oldest first, as dicts.

        Every column as stored (times are naive UTC strings such as
        ``2026-11-23 16:45:12.318503``) except ``payload``, parsed from
        JSON, plus ``hostname`` from the hosts table.
        """
        query = ('SELECT n.*, h.name AS hostname FROM notifications n '
                 'LEFT JOIN hosts h ON h.uuid = n.source_host_uuid')
        args = ()
        if hostname is not None:
            query += ' WHERE h.name = ?'
            args = (hostname,)
        with contextlib.closing(self._db()) as db:
            rows = db.execute(query + ' ORDER BY n.id', args).fetchall()
        result = []
        for row in rows:
            row = dict(row)
            if row['payload'] is not None:
                row['payload'] = json.loads(row['payload'])
            result.append(row)
        return result

    def clear_notifications(self):
        """Delete every notification row (tests that count want a blank)."""
        with contextlib.closing(self._db()) as db, db:
            db.execute('DELETE FROM notifications')


class MasakariEngine:
    """masakari-engine 22 beside a :class:`MasakariAPI`: same virtualenv,
    same configuration file, database and RabbitMQ topic, plus a file of
    its own for what only the engine reads.

    The engine recovers a VM by calling nova through keystoneauth and
    novaclient (``os_privileged_user_*``, ``nova_catalog_admin_info``):
    ``auth_url`` is a Keystone v3 endpoint whose catalog has ``compute``
    (in the tests, :mod:`tests.integration.nova_standin`).

    Its waits are cut from minutes to seconds, each the real option of
    masakari 22 (masakari/conf/engine.py, service.py):

    * ``wait_period_after_power_off`` / ``_power_on`` (180 / 60 s): how
      long the instance flow waits for ``stopped`` / ``active``; it polls
      every ``verify_interval`` (1 s, the minimum, kept) and goes on as
      soon as the state is there, so these are only upper bounds.
    * ``process_unfinished_notifications_interval`` (120 s): the
      periodic task that retries ``error`` notifications (then marks them
      ``failed``) and picks up ``new`` ones older than
      ``retry_notification_new_status_interval`` (60 s), the ones whose
      RPC cast was lost (no engine listened then).
    * ``periodic_fuzzy_delay`` (60 s): a random delay before the first
      periodic run; 0 here.
    * ``wait_period_after_service_update`` (180 s): host recovery only.

    The periodic task's spacing is read when masakari imports its engine
    manager, which masakari-engine does after parsing the configuration:
    the file's value counts.
    """

    def __init__(self, api, auth_url, username='masakari',
                 password='masakari', project='service',
                 wait_after_power_off=30, wait_after_power_on=30,
                 unfinished_interval=3, new_status_interval=5):
        self.api = api
        self.auth_url = auth_url
        self.username = username
        self.password = password
        self.project = project
        self.wait_after_power_off = wait_after_power_off
        self.wait_after_power_on = wait_after_power_on
        self.unfinished_interval = unfinished_interval
        self.new_status_interval = new_status_interval
        self.base_dir = api.base_dir
        self.config_file = self.base_dir / 'masakari-engine.conf'
        self.log_file = self.base_dir / 'masakari-engine.log'
        self.stdout_log = self.base_dir / 'masakari-engine.out'
        self.timings = {}
        self._process = None

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def running(self):
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines=40):
        return log_tail([self.stdout_log, self.log_file], lines)

    def log_text(self):
        try:
            return self.log_file.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def write_config(self):
        """The engine's own options; the API's file comes first."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(f"""\
[DEFAULT]
log_file = {self.log_file}
host = vmha-it-engine
os_privileged_user_auth_url = {self.auth_url}
os_privileged_user_name = {self.username}
os_privileged_user_password = {self.password}
os_privileged_user_tenant = {self.project}
nova_catalog_admin_info = compute:nova:publicURL
wait_period_after_power_off = {self.wait_after_power_off}
wait_period_after_power_on = {self.wait_after_power_on}
wait_period_after_service_update = 5
process_unfinished_notifications_interval = {self.unfinished_interval}
retry_notification_new_status_interval = {self.new_status_interval}
periodic_fuzzy_delay = 0

[keystone_authtoken]
auth_type = password

[instance_failure]
process_all_instances = false
""")

    def consuming(self):
        """Whether a consumer reads the API's RPC topic queue (the queue
        oslo.messaging's RPC server declares, named like the topic)."""
        import kombu

        url = self.api.transport_url.replace('rabbit://', 'amqp://')
        try:
            with kombu.Connection(url, connect_timeout=2) as connection, \
                    connection.channel() as channel:
                _, _, consumers = channel.queue_declare(
                    self.api.rpc_topic, passive=True)
                return consumers > 0
        except Exception:  # no queue yet (404 closes the channel), no broker
            return False

    def start(self, timeout=60):
        """Start masakari-engine; return once it consumes RPC casts."""
        if self.running():
            return
        if not self.api._synced:
            raise ServiceError('start the MasakariAPI first (db sync)')
        self.write_config()
        started = time.monotonic()
        with open(self.stdout_log, 'a') as out:
            self._process = subprocess.Popen(
                [str(self.api._bin('masakari-engine')),
                 '--config-file', str(self.api.config_file),
                 '--config-file', str(self.config_file)],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=foreign_env(),
                start_new_session=True)
        if not wait_until(lambda: not self.running() or self.consuming(),
                          timeout, interval=0.3):
            self.stop()
            raise ServiceError('masakari-engine did not start within %ss\n%s'
                               % (timeout, self.log_tail()))
        if not self.running():
            status = self._process.returncode
            self.stop()
            raise ServiceError('masakari-engine exited with status %s\n%s'
                               % (status, self.log_tail()))
        self.timings['start'] = time.monotonic() - started

    def stop(self, timeout=20):
        """Stop the engine; casts then wait in its queue on the broker."""
        stop_process(self._process, timeout)
        self._process = None

    @contextlib.contextmanager
    def outage(self):
        """``with engine.outage(): ...`` runs the block with no engine."""
        self.stop()
        try:
            yield self
        finally:
            self.start()


def foreign_env():
    """The environment for another project's virtualenv: nothing of the
    test venv may leak into its interpreter."""
    env = dict(os.environ)
    for name in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV'):
        env.pop(name, None)
    return env


def ensure_venv(venv_dir, requirements, marker, log_path):
    """Create ``venv_dir`` with ``requirements`` unless a stamp says it
    has them and ``marker`` (a file the install creates) exists.

    Shared by every session: the install runs under a file lock, and a
    session that waited finds it done.  Returns the seconds the install
    took, or None if there was nothing to do.
    """
    venv_dir = pathlib.Path(venv_dir)
    stamp = venv_dir / '.vmha-requirement'
    wanted = '\n'.join(requirements) + '\n'

    def installed():
        return (stamp.exists() and stamp.read_text() == wanted
                and pathlib.Path(marker).exists())
    if installed():
        return None
    pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    venv_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(venv_dir / '.install.lock'):
        if installed():  # another session was faster
            return None
        started = time.monotonic()
        run([sys.executable, '-m', 'venv', venv_dir], log_path, 300)
        run([venv_dir / 'bin' / 'pip', 'install', *requirements], log_path,
            1800, env=foreign_env())
        stamp.write_text(wanted)
        return time.monotonic() - started


def utcnow():
    """Now in UTC, timezone-aware."""
    return datetime.datetime.now(datetime.UTC)


def db_time(when=None):
    """A time as masakari's SQLAlchemy models store it in SQLite."""
    when = (when or utcnow()).astimezone(datetime.UTC)
    return when.replace(tzinfo=None).strftime('%Y-%m-%d %H:%M:%S.%f')


def main(argv=None):
    """Run both services until interrupted, for poking at them by hand.

    ``python -m tests.integration.services [DIR] [HOSTNAME...]``: state and
    logs go to DIR (a new temporary directory by default); each HOSTNAME
    is registered in Masakari.
    """
    import tempfile

    argv = sys.argv[1:] if argv is None else argv
    base = pathlib.Path(argv[0] if argv else
                        tempfile.mkdtemp(prefix='vmha-services-'))
    broker = RabbitMQ(base / 'rabbitmq')
    api = MasakariAPI(base / 'masakari', transport_url=broker.transport_url)
    # SIGTERM ends the wait below like Ctrl-C does, so both stop cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        broker.start()
        api.start()
        for hostname in argv[1:]:
            api.add_host(hostname)
        print('rabbitmq   %s%s\nmasakari   %s (no auth header needed)\n'
              'database   %s\nlogs       %s\ntimings    %s\n'
              'Ctrl-C stops both.'
              % (broker.transport_url, ' (reused)' if broker.reused else '',
                 api.url, api.database, base,
                 dict(rabbitmq=broker.timings, masakari=api.timings)),
              flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        broker.stop()


if __name__ == '__main__':
    main()
