"""masakari-monitors' introspective instance monitor, as a peer to compare.

Runs ``masakari-introspectiveinstancemonitor`` (PyPI ``masakari-monitors``
22, the 2025.2 "Flamingo" release) from its own virtualenv
(``.venv-masakari-monitors`` at the top of the repository) against the
test bed's libvirtd, and catches the notifications it sends in a small
HTTP server of our own, the *capture endpoint*, which plays both Keystone
and masakari-api.  Plain Python (no pytest), like :mod:`services`::

    peer = IntrospectiveMonitor('/tmp/peer')
    peer.ensure_installed()
    peer.start()                     # capture endpoint + the monitor
    peer.wait_watching(guest.uuid)   # its first guest-ping of the guest
    guest.stop_qemu()
    arrived, body = peer.wait_for(guest.uuid, timeout=120)
    peer.stop()

Facts this module relies on (read in masakari-monitors 22.0.0, checked
against a running one):

* The monitor is configured like its README says: a masakarimonitors.conf
  with ``[api]`` Keystone credentials (``auth_type = password``,
  ``auth_url``, user, project, domains; ``region``, ``api_interface``),
  ``[libvirt] connection_uri``, ``[callback] retry_max/retry_interval``
  and ``[introspectiveinstancemonitor] guest_monitoring_interval``
  (default 10 s), ``guest_monitoring_timeout`` (2 s),
  ``guest_monitoring_failure_threshold`` (3) and
  ``qemu_guest_agent_sock_path`` (a regular expression).
* It reaches Masakari with openstacksdk (``conn.instance_ha``) over a
  keystoneauth password session: ``GET`` of the identity version
  document, ``POST /v3/auth/tokens`` (the token's catalog must have an
  ``instance-ha`` endpoint for the interface and region), then ``POST
  <endpoint>/notifications`` (no version discovery of the endpoint was
  seen; the capture endpoint would answer it).  Every request the capture
  endpoint sees is kept in :attr:`CaptureEndpoint.requests`.
* Which domains it watches: every *running* domain (``listDomainsID``)
  whose first ``<channel>`` in the live XML has ``<source mode='bind'
  path=P>`` with ``re.match(qemu_guest_agent_sock_path, P)``.  The
  default pattern, ``/var/lib/libvirt/qemu/org\\.qemu\\.guest_agent\\..*
  \\.instance-.*\\.sock``, fits the explicit path nova writes
  (``org.qemu.guest_agent.0.<instance name>.sock``, instance names being
  ``instance-<hex id>``).  The test bed's channels have no path; libvirt
  9 names them
  ``/var/lib/libvirt/qemu/channel/target/domain-<id>-<name cut to 20
  characters>/<target name>``, so the harness sets the pattern to that
  (:func:`sock_path_regex`) and the domain XML stays as the test bed
  writes it (:func:`default_regex_channel_xml` is the channel the
  default pattern would need).  The agent channel must come first among
  the channels (``tree.find('devices/channel/source')``): a domain with
  another channel first is not watched.  In the test bed it is first.
  No nova metadata and no ``instance-*`` name is needed.
* Each interval it sends ``guest-ping`` with the timeout through
  ``virDomainQemuAgentCommand``.  A guest is first in ``discovery``;
  the first answered ping makes it ``healthy``; an unanswered one makes
  it ``error`` and counts; the notification goes out on the first
  unanswered ping that finds the count already *above* the threshold,
  i.e. the (threshold + 2)-th unanswered ping in a row (5 with the
  defaults).  Measured (libvirt 9.0, timeout 2 s): the first unanswered
  ping fails after the timeout, the later ones after 5 s (libvirt's
  error each time: "Guest agent is not responding: Guest agent not
  available for now", i.e. its guest-sync got no answer).  A guest
  never answered is never reported.  One notification per failure: after
  it, the guest must answer again before another can be sent.
* The notification: ``type`` ``VM``, ``hostname`` ``socket.gethostname()``
  (not ``[DEFAULT] hostname``), ``generated_time`` (UTC, no zone) and
  ``payload`` ``{'event': 'QEMU_GUEST_AGENT_ERROR', 'instance_uuid':
  <domain uuid>, 'vir_domain_event': 'STOPPED_FAILED'}``.
* Its log (``debug = true``) says ``<uuid>:Journal:__init__:`` at the
  first ping of a guest and ``<uuid>\\tqemu-ga_guest-ping is not
  responding.`` at every unanswered one; answered pings leave no trace.
* masakari-monitors does not list libvirt-python as a requirement; it is
  installed into the venv at the version of the repository's
  constraints.txt (built from its sdist: needs libvirt-dev, pkg-config
  and a compiler, see bindep.txt).
"""

import contextlib
import datetime
import http.server
import json
import pathlib
import re
import subprocess
import threading
import time
import uuid as uuid_lib

from tests.integration import services

REPO_ROOT = services.REPO_ROOT
MONITORS_REQUIREMENT = 'masakari-monitors==22.*'
MONITORS_VENV = REPO_ROOT / '.venv-masakari-monitors'
CONSOLE_SCRIPT = 'masakari-introspectiveinstancemonitor'

# Where libvirt 9 puts the host side of a virtio channel declared as
# <source mode='bind'/> without a path (the test bed's guests).
LIBVIRT_CHANNEL_DIR = '/var/lib/libvirt/qemu/channel/target'
AGENT_CHANNEL = 'org.qemu.guest_agent.0'

# What the monitor logs (debug) about a guest: the first ping of it, and
# every ping it did not get an answer to.
WATCHING = '{uuid}:Journal:__init__:'
NOT_RESPONDING = '{uuid}\tqemu-ga_guest-ping is not responding.'

# Credentials the monitor sends to the capture endpoint's "Keystone".
USERNAME = 'masakari'
PASSWORD = 'vmha-capture'
PROJECT = 'service'
REGION = 'RegionOne'


def libvirt_requirement():
    """libvirt-python as pinned in constraints.txt (same wheel as vmha's
    venv, so pip's cache usually has it built)."""
    constraints = REPO_ROOT / 'constraints.txt'
    if constraints.exists():
        for line in constraints.read_text().splitlines():
            if line.strip().lower().startswith('libvirt-python'):
                return line.split('#')[0].strip()
    return 'libvirt-python'


def sock_path_regex(channel_path=None):
    """A ``qemu_guest_agent_sock_path`` for the agent channel libvirt
    makes for a bind channel without a path: exactly ``channel_path``
    (one running domain's, from ``Domains.channel_path``) or, by default,
    that of any domain.

    libvirt names the directory ``domain-<id>-<name cut to 20
    characters>``, so a name alone cannot single out a test-bed guest
    (``vmha-it-<name>-<hex>``: the hex is cut off).
    """
    if channel_path is not None:
        return re.escape(str(channel_path)) + '$'
    return r'%s/domain-\d+-[^/]+/%s$' % (re.escape(LIBVIRT_CHANNEL_DIR),
                                        re.escape(AGENT_CHANNEL))


def default_regex_channel_xml(domain_name):
    """The agent ``<channel>`` a domain needs for the monitor's *default*
    ``qemu_guest_agent_sock_path``: an explicit socket path the way old
    nova wrote it (``org.qemu.guest_agent.0.instance-<x>.sock`` in
    /var/lib/libvirt/qemu).  It must be the first channel of the domain.
    The test bed does not use it (it would need a change to
    testbed.CHANNEL_XML); :func:`sock_path_regex` is used instead."""
    return ("\n    <channel type='unix'>"
            "\n      <source mode='bind' path='/var/lib/libvirt/qemu/"
            "%s.instance-%s.sock'/>"
            "\n      <target type='virtio' name='%s'/>"
            "\n    </channel>" % (AGENT_CHANNEL, domain_name, AGENT_CHANNEL))


class PeerError(services.ServiceError):
    """The peer could not be installed, started or did not notify."""


# -- the capture endpoint ----------------------------------------------------

def _iso(when):
    return when.strftime('%Y-%m-%dT%H:%M:%S.%f') + 'Z'


class CaptureEndpoint:
    """Keystone v3 and masakari-api v1 in one stdlib HTTP server.

    Keystone lives under ``/identity`` (``auth_url``
    ``http://127.0.0.1:PORT/identity``), Masakari's ``instance-ha``
    endpoint is ``http://127.0.0.1:PORT/v1``.  Any password is accepted.
    ``POST /v1/notifications`` answers ``notification_status`` (202)
    with a body like masakari-api's, and records ``(time.monotonic() of
    arrival, request body)``.
    """

    def __init__(self, log_file, host='127.0.0.1', port=None,
                 notification_status=202):
        self.host = host
        self.port = port or services.free_port(host)
        self.log_file = pathlib.Path(log_file)
        self.notification_status = notification_status
        self.requests = []  # (monotonic, method, path)
        self._notifications = []  # (monotonic, body)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = None
        self._thread = None

    @property
    def url(self):
        return 'http://%s:%d' % (self.host, self.port)

    @property
    def auth_url(self):
        return self.url + '/identity'

    @property
    def masakari_url(self):
        return self.url + '/v1'

    def notifications(self):
        with self._lock:
            return list(self._notifications)

    def start(self):
        if self._server is not None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, format, *args):
                endpoint._log('%s %s' % (self.address_string(),
                                         format % args))

            def do_GET(self):
                endpoint._handle(self, 'GET')

            def do_HEAD(self):
                endpoint._handle(self, 'HEAD')

            def do_POST(self):
                endpoint._handle(self, 'POST')

        self._server = http.server.ThreadingHTTPServer(
            (self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name='peer-capture',
            daemon=True)
        self._thread.start()

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self._server = None

    def wait(self, predicate, timeout):
        """Wait until ``predicate(notifications)`` is true; return it."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                result = predicate(list(self._notifications))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    return result
                self._arrived.wait(left)

    # -- inside the server ---------------------------------------------------

    def _log(self, line):
        with open(self.log_file, 'a') as log:
            log.write('%s %s\n' % (datetime.datetime.now().isoformat(),
                                   line))

    def _handle(self, request, method):
        arrived = time.monotonic()
        path = request.path.split('?')[0].rstrip('/') or '/'
        length = int(request.headers.get('Content-Length') or 0)
        raw = request.rfile.read(length) if length else b''
        with self._lock:
            self.requests.append((arrived, method, request.path))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors='replace')
        self._log('%s %s %s' % (method, request.path,
                                json.dumps(body) if body else ''))
        status, reply, headers = self._route(method, path, body, arrived)
        data = json.dumps(reply).encode() if reply is not None else b''
        request.send_response(status)
        request.send_header('Content-Type', 'application/json')
        request.send_header('Content-Length', str(len(data)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        if method != 'HEAD':
            request.wfile.write(data)

    def _route(self, method, path, body, arrived):
        if method in ('GET', 'HEAD'):
            if path == '/identity':
                return 300, {'versions': {'values': [
                    self._identity_version()]}}, {}
            if path == '/identity/v3':
                return 200, {'version': self._identity_version()}, {}
            if path == '/':
                return 200, {'versions': [self._masakari_version()]}, {}
            if path == '/v1':
                return 200, {'version': self._masakari_version()}, {}
        elif method == 'POST':
            if path == '/identity/v3/auth/tokens':
                return 201, self._token(), {
                    'X-Subject-Token': uuid_lib.uuid4().hex}
            if path.startswith('/v1') and path.endswith('/notifications') \
                    and isinstance(body, dict):
                return self._notification(body, arrived)
        return 404, {'error': {'code': 404, 'title': 'Not Found',
                               'message': '%s %s' % (method, path)}}, {}

    def _notification(self, body, arrived):
        with self._arrived:
            self._notifications.append((arrived, body))
            number = len(self._notifications)
            self._arrived.notify_all()
        notification = dict(body.get('notification') or {})
        now = _iso(datetime.datetime.now(datetime.UTC))
        notification.update(
            id=number, notification_uuid=str(uuid_lib.uuid4()),
            source_host_uuid=str(uuid_lib.uuid5(
                uuid_lib.NAMESPACE_DNS, str(notification.get('hostname')))),
            status='new', created_at=now, updated_at=None, deleted=False,
            deleted_at=None)
        return self.notification_status, {'notification': notification}, {}

    def _identity_version(self):
        return {'id': 'v3.14', 'status': 'stable',
                'updated': '2020-04-07T00:00:00Z',
                'links': [{'rel': 'self', 'href': self.auth_url + '/v3/'}],
                'media-types': [{
                    'base': 'application/json',
                    'type': 'application/vnd.openstack.identity-v3+json'}]}

    def _masakari_version(self):
        return {'id': 'v1.0', 'status': 'CURRENT', 'version': '1.2',
                'min_version': '1.0', 'updated': '2016-07-01T11:33:21Z',
                'links': [{'rel': 'self', 'href': self.masakari_url + '/'}]}

    def _token(self):
        now = datetime.datetime.now(datetime.UTC)
        domain = {'id': 'default', 'name': 'Default'}

        def endpoints(url):
            return [{'id': uuid_lib.uuid4().hex, 'interface': interface,
                     'region': REGION, 'region_id': REGION, 'url': url}
                    for interface in ('public', 'internal', 'admin')]
        return {'token': {
            'methods': ['password'],
            'issued_at': _iso(now),
            'expires_at': _iso(now + datetime.timedelta(hours=12)),
            'audit_ids': [uuid_lib.uuid4().hex[:22]],
            'user': {'id': 'u-' + USERNAME, 'name': USERNAME,
                     'domain': domain, 'password_expires_at': None},
            'project': {'id': 'p-' + PROJECT, 'name': PROJECT,
                        'domain': domain},
            'roles': [{'id': 'r-admin', 'name': 'admin'}],
            'is_domain': False,
            'catalog': [
                {'id': 'identity', 'type': 'identity', 'name': 'keystone',
                 'endpoints': endpoints(self.auth_url)},
                {'id': 'instance-ha', 'type': 'instance-ha',
                 'name': 'masakari',
                 'endpoints': endpoints(self.masakari_url)},
            ]}}


# -- the monitor -------------------------------------------------------------

class IntrospectiveMonitor:
    """``masakari-introspectiveinstancemonitor`` and its capture endpoint.

    Configuration, logs and the capture log go to ``base_dir``.  The
    interval, timeout and threshold default to the monitor's own defaults
    (10 s, 2 s, 3).  ``sock_path`` is its ``qemu_guest_agent_sock_path``;
    by default every test-bed guest fits (:func:`sock_path_regex`).
    """

    def __init__(self, base_dir, libvirt_uri='qemu:///system', interval=10,
                 timeout=2, failure_threshold=3, sock_path=None,
                 retry_max=12, retry_interval=10, venv_dir=MONITORS_VENV):
        self.base_dir = pathlib.Path(base_dir)
        self.libvirt_uri = libvirt_uri
        self.interval = interval
        self.timeout = timeout
        self.failure_threshold = failure_threshold
        self.sock_path = sock_path or sock_path_regex()
        self.retry_max = retry_max
        self.retry_interval = retry_interval
        self.venv_dir = pathlib.Path(venv_dir)
        self.timings = {}
        self.started_at = None  # monotonic time of the last start
        self._process = None
        self.config_file = self.base_dir / 'masakarimonitors.conf'
        self.log_file = self.base_dir / 'introspectiveinstancemonitor.log'
        self.stdout_log = self.base_dir / 'introspectiveinstancemonitor.out'
        self.install_log = self.base_dir / 'pip.log'
        self.capture = CaptureEndpoint(self.base_dir / 'capture.log')

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def running(self):
        return self._process is not None and self._process.poll() is None

    def log_text(self):
        try:
            return self.log_file.read_text(errors='replace')
        except OSError:
            return ''

    def log_tail(self, lines=40):
        return services.log_tail([self.stdout_log, self.log_file,
                                  self.capture.log_file], lines)

    # -- installing --------------------------------------------------------

    def _bin(self, name):
        return self.venv_dir / 'bin' / name

    def ensure_installed(self):
        """Create the virtualenv with masakari-monitors and libvirt-python
        unless it is there already (shared, under a file lock)."""
        seconds = services.ensure_venv(
            self.venv_dir, [MONITORS_REQUIREMENT, libvirt_requirement()],
            self._bin(CONSOLE_SCRIPT), self.install_log)
        if seconds is not None:
            self.timings['install'] = seconds

    def version(self):
        """The installed masakari-monitors version."""
        result = subprocess.run(
            [str(self._bin('python')), '-c',
             'import importlib.metadata as m; '
             'print(m.version("masakari-monitors"))'],
            capture_output=True, text=True, env=self._env(), timeout=60)
        return result.stdout.strip()

    # -- configuring -------------------------------------------------------

    def _env(self):
        return services.foreign_env()

    def write_config(self):
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # oslo.config takes the value verbatim (no quotes, no escapes).
        self.config_file.write_text(f"""\
[DEFAULT]
debug = true
log_file = {self.log_file}
use_stderr = false
tempdir = {self.base_dir}

[api]
region = {REGION}
api_version = v1
api_interface = public
auth_type = password
auth_url = {self.capture.auth_url}
username = {USERNAME}
password = {PASSWORD}
user_domain_id = default
project_name = {PROJECT}
project_domain_id = default
timeout = 30

[callback]
retry_max = {self.retry_max}
retry_interval = {self.retry_interval}

[libvirt]
connection_uri = {self.libvirt_uri}

[introspectiveinstancemonitor]
guest_monitoring_interval = {self.interval}
guest_monitoring_timeout = {self.timeout}
guest_monitoring_failure_threshold = {self.failure_threshold}
qemu_guest_agent_sock_path = {self.sock_path}
""")

    # -- running -----------------------------------------------------------

    def start(self, timeout=60):
        """Start the capture endpoint and the monitor; return once the
        monitor has logged that it is running."""
        if self.running():
            return
        self.ensure_installed()
        self.capture.start()
        self.write_config()
        offset = self.log_file.stat().st_size if self.log_file.exists() \
            else 0
        started = time.monotonic()
        with open(self.stdout_log, 'a') as out:
            self._process = subprocess.Popen(
                [str(self._bin(CONSOLE_SCRIPT)), '--config-file',
                 str(self.config_file)],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(),
                start_new_session=True)
        self.started_at = started

        def up():
            return ('Starting masakarimonitors-introspectiveinstancemonitor'
                    in self.log_text()[offset:]
                    or self._process.poll() is not None)
        if not services.wait_until(up, timeout, interval=0.2):
            self.stop()
            raise PeerError('%s did not start within %ss\n%s'
                            % (CONSOLE_SCRIPT, timeout, self.log_tail()))
        if self._process.poll() is not None:
            status = self._process.returncode
            self.stop()
            raise PeerError('%s exited with status %s\n%s'
                            % (CONSOLE_SCRIPT, status, self.log_tail()))
        self.timings['start'] = time.monotonic() - started

    def stop(self, timeout=20):
        """SIGTERM the monitor (SIGKILL its session if it lingers), then
        stop the capture endpoint.  Returns the monitor's exit status."""
        process = self._process
        services.stop_process(process, timeout)
        self._process = None
        self.capture.stop()
        return process.returncode if process is not None else None

    # -- what it did -------------------------------------------------------

    def watching(self, instance_uuid):
        """Whether the monitor has pinged this guest (its journal exists).
        """
        return WATCHING.format(uuid=instance_uuid) in self.log_text()

    def missed_pings(self, instance_uuid):
        """How many pings of this guest went unanswered, from its log."""
        return self.log_text().count(NOT_RESPONDING.format(
            uuid=instance_uuid))

    def wait_watching(self, instance_uuid, timeout=None):
        """Wait until the monitor has pinged the guest; return the
        seconds waited.  Raises if it did not, or if that ping failed (a
        guest whose first ping fails stays in discovery and is never
        reported)."""
        timeout = timeout if timeout is not None else 3 * self.interval + 10
        started = time.monotonic()
        if not services.wait_until(
                lambda: self.watching(instance_uuid) or not self.running(),
                timeout, interval=0.2):
            raise PeerError('the monitor does not watch %s after %ss\n%s'
                            % (instance_uuid, timeout, self.log_tail()))
        if not self.running():
            raise PeerError('the monitor exited (status %s)\n%s'
                            % (self._process.returncode, self.log_tail()))
        # The journal is written right after the ping's result; a failure
        # is logged just before it.
        time.sleep(0.5)
        if self.missed_pings(instance_uuid):
            raise PeerError('the first ping of %s failed: the monitor '
                            'keeps it in discovery\n%s'
                            % (instance_uuid, self.log_tail()))
        return time.monotonic() - started

    def notifications(self, instance_uuid=None):
        """[(monotonic arrival, request body)] the capture endpoint got,
        all or those whose payload names ``instance_uuid``."""
        found = self.capture.notifications()
        if instance_uuid is not None:
            found = [(when, body) for when, body in found
                     if _instance_of(body) == instance_uuid]
        return found

    def wait_for(self, instance_uuid, timeout):
        """(monotonic arrival, body) of the first notification for the
        instance; raises with the monitor's log if none comes in time."""
        def first(notifications):
            for when, body in notifications:
                if _instance_of(body) == instance_uuid:
                    return when, body
            return None
        found = self.capture.wait(first, timeout)
        if not found:
            raise PeerError('no notification for %s within %ss (%d '
                            'unanswered pings logged)\n%s'
                            % (instance_uuid, timeout,
                               self.missed_pings(instance_uuid),
                               self.log_tail()))
        return found


def _instance_of(body):
    with contextlib.suppress(AttributeError, TypeError):
        return body['notification']['payload'].get('instance_uuid')
    return None
