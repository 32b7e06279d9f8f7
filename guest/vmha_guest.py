#!/usr/bin/env python3
"""vmha-guest: the in-guest end of the vmha heartbeat channel.

It registers the guest with the vmha agent on its host over a
virtio-serial port, answers every challenge with the guest's health,
and lets the guest (a script, and applications through a local unix
socket) vote on and be told of lifecycle actions.  The contract is
vmha's ``doc/heartbeat-protocol.md`` (version 1).

Why it is one file of standard library only: it must be installable in
any guest with a Python >= 3.8 by copying this file, including a
minimal initramfs.  Why one thread owns all state: the answer to a
challenge must never wait for a script or an application; the threads
that run scripts only hand their results back (a list under a lock held
for a moment, and a wakeup pipe).
"""

import errno
import json
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import syslog
import threading
import time

__version__ = '1.0'

PROTOCOL_VERSION = 1
MAX_LINE = 4096             # bytes, including the newline
MAX_REASON = 256            # characters
MAX_OUTBOX = 64 * 1024      # bytes waiting for the host before we drop
ABSENT_POLL = 0.1           # s between looks at a channel with no host
INIT_RETRY = 1.0            # s between inits until init_ack
REINIT_INTERVALS = 3        # granted intervals without a challenge
APP_MISSES = 2              # app intervals without a heartbeat
MAX_APPS = 64
MAX_API_CLIENTS = 128
MAX_ACTIONS = 4             # action_notify handled at once
MAX_TIMEOUT = 86400         # s, the protocol's bound on every timeout
LOG_INTERVAL = 60.0         # s between two lines of one kind of trouble
MIN_HEALTH_TIMEOUT = 10     # s a health-check run may take at least

ACTIONS = ('log', 'reboot', 'stop')     # mildest first
EVENTS = ('stop', 'reboot', 'pause', 'unpause', 'suspend', 'resume',
          'resize_begin', 'resize_end', 'live_migrate_begin',
          'live_migrate_end', 'cold_migrate_begin', 'cold_migrate_end')
NOTIFICATIONS = ('revocable', 'irrevocable')
PHASES = ('pre', 'post')

DEFAULT_CONFIG = '/etc/vmha-guest/heartbeat.conf'

LOG = logging.getLogger('vmha-guest')


# --------------------------------------------------------------------------
# Configuration

class ConfigError(Exception):
    """A configuration the daemon refuses; str() is the one line shown."""


def _timeout(text):
    # The protocol's timeouts are 0 to 86400 s; the host refuses an init
    # with one out of range, so refuse it here, where it can be fixed.
    value = float(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise ValueError('must be a number of seconds above 0 and at most '
                         '%d' % MAX_TIMEOUT)
    return int(value) if value == int(value) else value


def _interval_ms(text):
    value = int(text)
    if not 100 <= value <= 3600000:
        raise ValueError('must be between 100 and 3600000 ms')
    return value


def _action(text):
    if text not in ACTIONS:
        raise ValueError('must be one of %s' % '|'.join(ACTIONS))
    return text


def _optional_script(text):
    if not text:
        return ''
    if not os.path.isabs(text):
        raise ValueError('must be an absolute path')
    return text


def _path(text):
    if not text:
        raise ValueError('must not be empty')
    return text


#: key -> (default, parser).  The keys are those of the Titanium guest
#: client's heartbeat.conf, so an existing file keeps working.
CONFIG_KEYS = {
    'HB_INTERVAL': (1000, _interval_ms),
    'CORRECTIVE_ACTION': ('reboot', _action),
    'HEALTH_CHECK_SCRIPT': ('', _optional_script),
    'HEALTH_CHECK_INTERVAL': (30, _timeout),
    'VOTE': (8, _timeout),
    'SHUTDOWN_NOTICE': (8, _timeout),
    'SUSPEND_NOTICE': (8, _timeout),
    'RESUME_NOTICE': (13, _timeout),
    'RESTART': (300, _timeout),
    'EVENT_HANDLING_SCRIPT': ('', _optional_script),
    'DEVICE': ('/dev/virtio-ports/org.vmha.heartbeat.0', _path),
    'API_SOCKET': ('/run/vmha-guest/api.sock', _path),
}


def default_config():
    return dict((key, default) for key, (default, _) in CONFIG_KEYS.items())


def parse_config(text, source='heartbeat.conf'):
    """Parse ``KEY=value`` lines; raise ConfigError naming the line.

    ``#`` starts a comment line; a value may be quoted with ' or ".
    An unknown key is an error rather than ignored: a misspelt
    CORRECTIVE_ACTION silently left at ``reboot`` is worse than a
    daemon that will not start.
    """
    config = default_config()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        where = '%s:%d' % (source, number)
        if '=' not in line:
            raise ConfigError('%s: expected KEY=value, got %r'
                              % (where, line[:80]))
        key, value = line.split('=', 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        if key not in CONFIG_KEYS:
            raise ConfigError('%s: unknown key %r (known: %s)'
                              % (where, key[:40], ', '.join(CONFIG_KEYS)))
        try:
            config[key] = CONFIG_KEYS[key][1](value)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith('invalid literal'):
                reason = 'not a number'
            raise ConfigError('%s: %s=%r: %s' % (where, key, value[:80],
                                                 reason))
    return config


def load_config(path, required):
    try:
        with open(path, encoding='utf-8') as conf_file:
            text = conf_file.read()
    except FileNotFoundError:
        if required:
            raise ConfigError('%s: no such file' % path)
        return default_config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError('%s: cannot read: %s' % (path, exc))
    return parse_config(text, path)


def check_scripts(config):
    """Refuse to start with a script that cannot run: found at start,
    a typo is a clear error; found at the first health check, it would
    look like ill health and get the guest rebooted."""
    for key in ('HEALTH_CHECK_SCRIPT', 'EVENT_HANDLING_SCRIPT'):
        script = config[key]
        if script and not os.access(script, os.X_OK):
            raise ConfigError('%s=%s: not an executable file'
                              % (key, script))


# --------------------------------------------------------------------------
# Logging what comes often

class LogLimiter:
    """At most one warning per kind of trouble every LOG_INTERVAL, with
    the count of those not logged: a host sending garbage in a loop
    must not fill the guest's disk with syslog."""

    def __init__(self, clock):
        self.clock = clock
        self._last = {}             # kind -> when last logged
        self._unlogged = {}         # kind -> count since

    def warning(self, kind, message, *args):
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        skipped = self._unlogged.pop(kind, 0)
        if skipped:
            message += ' (and %d more like it not logged)' % skipped
        self._last[kind] = now
        LOG.warning(message, *args)


# --------------------------------------------------------------------------
# Framing

class LineReader:
    """Split a byte stream into newline-terminated lines, bounded.

    ``feed`` returns a list of ``(line, error)`` pairs: ``line`` is the
    bytes without the newline, ``error`` is None or ``'too_long'``.  A
    line longer than ``limit`` bytes (newline included) is never
    buffered: its bytes are dropped up to the next newline and it is
    reported once.
    """

    def __init__(self, limit=MAX_LINE):
        self.limit = limit
        self._buffer = b''
        self._discarding = False

    def reset(self):
        self._buffer = b''
        self._discarding = False

    def feed(self, data):
        out = []
        while data:
            newline = data.find(b'\n')
            if self._discarding:
                if newline < 0:
                    return out
                self._discarding = False
                data = data[newline + 1:]
                continue
            if newline < 0:
                self._buffer += data
                if len(self._buffer) >= self.limit:
                    self._buffer = b''
                    self._discarding = True
                    out.append((None, 'too_long'))
                return out
            line = self._buffer + data[:newline]
            self._buffer = b''
            data = data[newline + 1:]
            if len(line) + 1 > self.limit:
                out.append((None, 'too_long'))
            else:
                out.append((line, None))
        return out


def decode(line):
    """bytes -> (message dict, None) or (None, (nack reason, seq)).

    Checks what every message has (``version``, ``type``, ``seq``);
    the fields of each type are checked by its handler.
    """
    try:
        text = line.decode('utf-8')
    except UnicodeDecodeError:
        return None, ('not_utf8', None)
    try:
        message = json.loads(text)
    except ValueError:
        return None, ('not_json', None)
    if not isinstance(message, dict):
        return None, ('invalid', None)
    seq = message.get('seq')
    if not _is_int(seq) or seq < 0:
        return None, ('invalid', None)
    version = message.get('version')
    if not _is_int(version):
        return None, ('invalid', seq)
    if version != PROTOCOL_VERSION:
        return None, ('version', seq)
    if not isinstance(message.get('type'), str):
        return None, ('invalid', seq)
    return message, None


def encode(message):
    return (json.dumps(message, separators=(',', ':'), sort_keys=True)
            + '\n').encode('utf-8')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and value not in (float('inf'),
                                                 float('-inf')))


def clean_text(text, limit=MAX_REASON):
    """Printable characters only, at most ``limit`` of them."""
    text = ''.join(ch if ch.isprintable() else ' ' for ch in str(text))
    return text.strip()[:limit]


def cap_action(wished, granted):
    """The milder of two corrective actions (``log`` < ``reboot`` <
    ``stop``): nothing in the guest may ask for more than the host
    granted at registration."""
    if wished not in ACTIONS:
        return granted
    return ACTIONS[min(ACTIONS.index(wished), ACTIONS.index(granted))]


# --------------------------------------------------------------------------
# Scripts

def run_script(argv, timeout, env=None):
    """Run a script; return (status or None on timeout, first stdout line).

    The script gets its own process group so that a timeout kills what
    it started too.  OSError (cannot execute) propagates.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, _ = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out = b''
        status = None
    first = out.split(b'\n', 1)[0].decode('utf-8', 'replace')
    return status, clean_text(first)


class HealthChecker(threading.Thread):
    """Runs HEALTH_CHECK_SCRIPT every interval; keeps its last verdict.

    Until the first run finishes the guest counts as healthy: no
    evidence is not ill health.  A script that cannot be executed any
    more keeps the last verdict and is logged, for the same reason.  A
    run is given at least MIN_HEALTH_TIMEOUT seconds even with a short
    interval: a script slowed down by a loaded host is not a sick guest.
    """

    def __init__(self, script, interval, stopping):
        super().__init__(name='health-check', daemon=True)
        self.script = script
        self.interval = interval
        self.timeout = max(interval, MIN_HEALTH_TIMEOUT)
        self.stopping = stopping
        self.verdict = (True, '')          # (healthy, reason)

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            self.verdict = self.check()
            elapsed = time.monotonic() - started
            self.stopping.wait(max(0.0, self.interval - elapsed))

    def check(self):
        try:
            status, first = run_script([self.script], self.timeout)
        except OSError as exc:
            LOG.error('health check script %s cannot run (%s); keeping '
                      'the last verdict', self.script, exc)
            return self.verdict
        if status == 0:
            if not self.verdict[0]:
                LOG.info('health check script %s passes again', self.script)
            return (True, '')
        if status is None:
            reason = ('health check script timed out after %s s'
                      % self.timeout)
        else:
            reason = 'health check script exited %d' % status
        if first:
            reason += ': ' + first
        if self.verdict != (False, reason):
            LOG.warning('guest unhealthy: %s', reason)
        return (False, clean_text(reason))


# --------------------------------------------------------------------------
# Applications (the local API)

class Application:
    """One registered application: its wishes and its last heartbeat."""

    def __init__(self, name, interval_ms, corrective_action, now):
        self.name = name
        self.interval = interval_ms / 1000.0
        self.corrective_action = corrective_action
        self.last_heartbeat = now
        self.health = 'healthy'
        self.reason = ''
        self.connection = None

    def problem(self, now):
        """None when healthy, else the reason naming the application."""
        if now - self.last_heartbeat > APP_MISSES * self.interval:
            return ('application %s missed its heartbeat (%.1f s silent, '
                    'interval %.1f s)' % (self.name,
                                          now - self.last_heartbeat,
                                          self.interval))
        if self.health != 'healthy':
            return 'application %s unhealthy: %s' % (
                self.name, self.reason or 'no reason given')
        return None


class ApiConnection:
    """One application's connection to the API socket."""

    def __init__(self, sock):
        self.sock = sock
        self.reader = LineReader()
        self.outbox = b''
        self.app = None

    def name(self):
        return self.app.name if self.app is not None else '(unregistered)'


class ApplicationApi:
    """The local API: applications register on a unix socket, heartbeat,
    and vote through it.

    It keeps the registered applications and answers what they send;
    it never blocks (non-blocking sockets, bounded buffers) and calls
    back into the daemon for votes.  A closed connection leaves its
    application registered: one that crashed stops heartbeating and
    the guest turns unhealthy; only ``unregister`` leaves without a
    failure.
    """

    def __init__(self, path, granted_action, on_vote, on_gone):
        self.path = path
        self.granted_action = granted_action    # () -> the host's grant
        self.on_vote = on_vote                  # (name, message, now)
        self.on_gone = on_gone                  # (name)
        self.apps = {}                          # name -> Application
        self.sock = None
        self.clients = {}                       # fd -> ApiConnection

    def open(self):
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.stat(self.path).st_mode):
                os.unlink(self.path)     # left by a previous run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock

    def close(self):
        if self.sock is None:
            return
        for connection in list(self.clients.values()):
            connection.sock.close()
        self.clients.clear()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()
        self.sock = None

    # -- what the daemon asks --------------------------------------------

    def problems(self, now):
        """[(reason naming the application, its wished action)]."""
        out = []
        for name in sorted(self.apps):
            app = self.apps[name]
            problem = app.problem(now)
            if problem:
                out.append((problem, app.corrective_action))
        return out

    def excuse(self, seconds):
        """The daemon was not scheduled for ``seconds``: neither were
        the applications, so that silence is not theirs."""
        for app in self.apps.values():
            app.last_heartbeat += seconds

    def notify(self, fields):
        """Send an action_notify to every connected application; return
        the names of those asked."""
        asked = set()
        for app in self.apps.values():
            if app.connection is not None:
                self.send(app.connection, dict(fields, type='action_notify'))
                if app.connection is not None:
                    asked.add(app.name)
        return asked

    # -- polling ---------------------------------------------------------

    def register_poll(self, poller):
        if self.sock is not None:
            poller.register(self.sock, select.POLLIN)
        for fd, connection in self.clients.items():
            events = select.POLLIN
            if connection.outbox:
                events |= select.POLLOUT
            poller.register(fd, events)

    def handle(self, fd, events, now):
        """Serve a ready descriptor; False if it is not one of ours."""
        if self.sock is not None and fd == self.sock.fileno():
            self.accept()
            return True
        connection = self.clients.get(fd)
        if connection is None:
            return False
        if events & select.POLLOUT:
            self.flush(connection)
        if fd in self.clients and events & (
                select.POLLIN | select.POLLHUP | select.POLLERR):
            self.read(connection, now)
        return True

    # -- connections -----------------------------------------------------

    def accept(self):
        try:
            sock, _ = self.sock.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_API_CLIENTS:
            LOG.warning('too many API connections; refusing one')
            sock.close()
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = ApiConnection(sock)

    def send(self, connection, message):
        connection.outbox += (json.dumps(message) + '\n').encode('utf-8')
        if len(connection.outbox) > MAX_OUTBOX:
            LOG.warning('application %s is not reading the API socket; '
                        'disconnecting it', connection.name())
            self.drop(connection)
            return
        self.flush(connection)

    def flush(self, connection):
        while connection.outbox:
            try:
                written = connection.sock.send(connection.outbox)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                self.drop(connection)
                return
            connection.outbox = connection.outbox[written:]

    def drop(self, connection):
        self.clients.pop(connection.sock.fileno(), None)
        app = connection.app
        if app is not None and app.connection is connection:
            app.connection = None
            self.on_gone(app.name)
        connection.sock.close()

    def read(self, connection, now):
        try:
            data = connection.sock.recv(65536)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            data = b''
        if not data:
            self.drop(connection)
            return
        for line, error in connection.reader.feed(data):
            message = None
            if not error:
                try:
                    message = json.loads(line.decode('utf-8'))
                except ValueError:
                    error = 'not_json'
                if not error and not isinstance(message, dict):
                    error = 'not_json'
            if not error:
                error = self.on_message(connection, message, now)
            if error:
                LOG.warning('application %s: %s', connection.name(), error)
                self.send(connection, {'type': 'error', 'reason': error})
            if connection.sock.fileno() not in self.clients:
                return               # dropped while answering

    def on_message(self, connection, message, now):
        """Handle one message from an application; return an error."""
        mtype = message.get('type')
        app = connection.app
        if mtype == 'register':
            return self.register(connection, message, now)
        if app is None or self.apps.get(app.name) is not app:
            return 'not registered'
        if mtype == 'heartbeat':
            health = message.get('health', 'healthy')
            if health not in ('healthy', 'unhealthy'):
                return 'health must be healthy or unhealthy'
            reason = clean_text(message.get('reason') or '', 200)
            if health != app.health:
                LOG.info('application %s reports itself %s %s', app.name,
                         health, reason)
            app.health, app.reason = health, reason
            app.last_heartbeat = now
            return None
        if mtype == 'unregister':
            LOG.info('application %s unregistered', app.name)
            del self.apps[app.name]
            app.connection = connection.app = None
            self.on_gone(app.name)
            self.send(connection, {'type': 'unregister_ack'})
            return None
        if mtype == 'action_response':
            self.on_vote(app.name, message, now)
            return None
        return 'unknown message type %r' % clean_text(mtype, 40)

    def register(self, connection, message, now):
        name = message.get('name')
        interval = message.get('interval_ms', 1000)
        action = message.get('corrective_action', 'reboot')
        if (not isinstance(name, str) or not 0 < len(name) <= 64
                or clean_text(name, 64) != name):
            return 'name must be 1-64 printable characters'
        if not _is_int(interval) or not 100 <= interval <= 3600000:
            return 'interval_ms must be an integer from 100 to 3600000'
        if action not in ACTIONS:
            return 'corrective_action must be one of %s' % '|'.join(ACTIONS)
        if name not in self.apps and len(self.apps) >= MAX_APPS:
            return 'too many applications registered'
        old = self.apps.get(name)
        if old is not None and old.connection not in (None, connection):
            old.connection.app = None    # the newer registration wins
            self.on_gone(name)
        app = Application(name, interval, action, now)
        app.connection = connection
        self.apps[name] = app
        connection.app = app
        LOG.info('application %s registered: interval %d ms, corrective '
                 'action %s', name, interval, action)
        self.send(connection, {
            'type': 'register_ack', 'name': name,
            'corrective_action': cap_action(action, self.granted_action())})
        return None


# --------------------------------------------------------------------------
# Actions (votes and notifications)

class ActionRun:
    """One action_notify being answered: the script and the apps vote
    in parallel; the first reject wins; silence is consent."""

    def __init__(self, message, deadline):
        self.message = message
        self.deadline = deadline
        self.votes = {}          # voter name -> (accept, reason)
        self.waiting = set()     # app names still to answer
        self.script_running = False

    @property
    def key(self):
        message = self.message
        return (message['action_id'], message['phase'],
                message['notification'])

    def finished(self, now):
        return now >= self.deadline or (not self.waiting
                                        and not self.script_running)

    def response(self):
        revocable = self.message['notification'] == 'revocable'
        result, reason = 'accept', ''
        for voter in sorted(self.votes):
            accept, why = self.votes[voter]
            if not accept:
                if revocable:
                    result = 'reject'
                    reason = why or '%s rejected' % voter
                    break
                LOG.warning('%s: handler %s failed on %s notice: %s',
                            self.message['event'], voter,
                            self.message['phase'], why)
        return result, reason


def answer_margin(timeout):
    """Answer a little before the host's timeout so the answer arrives
    while the host still waits for it."""
    return min(1.0, timeout * 0.2)


# --------------------------------------------------------------------------
# The channel

class Channel:
    """The virtio-serial port, or a unix socket standing in for it.

    A virtio-serial port with no host connected reads end-of-file at
    once (and polls readable), so "no host" is a state we poll out of
    every ABSENT_POLL seconds.  A unix socket path (tests, or a host
    end exposed directly) is connected to instead and reconnected.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.sock = None
        self.connected = False     # the host is there, as far as we know
        self.next_try = 0.0
        self.pending = b''         # read while probing for the host
        self._warned = False

    def fileno(self):
        return self.fd

    def try_open(self, now):
        """Open (or reconnect); return True when the channel is usable."""
        if self.fd is not None and self.connected:
            return True
        if now < self.next_try:
            return False
        self.next_try = now + ABSENT_POLL
        if self.fd is not None and self.sock is None:
            return self._probe_device()
        try:
            mode = os.stat(self.path).st_mode
            if stat.S_ISSOCK(mode):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(self.path)
                except OSError:
                    sock.close()
                    raise
                sock.setblocking(False)
                self.sock, self.fd = sock, sock.fileno()
                self.connected = True
            else:
                self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK
                                  | getattr(os, 'O_CLOEXEC', 0))
                return self._probe_device()
        except OSError as exc:
            if not self._warned:
                LOG.warning('channel %s not available yet (%s); waiting',
                            self.path, exc.strerror or exc)
                self._warned = True
            return False
        self._warned = False
        LOG.info('connected to the host over %s', self.path)
        return True

    def _probe_device(self):
        """A read tells whether the host is there: EOF means not."""
        try:
            data = os.read(self.fd, MAX_LINE)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                data = None              # there, with nothing to say yet
            else:
                # The port itself is wrong (unplugged?): open it anew.
                if not self._warned:
                    LOG.warning('reading %s: %s; opening it again',
                                self.path, exc)
                    self._warned = True
                os.close(self.fd)
                self.fd = None
                return False
        if data == b'':
            return False
        self.connected = True
        self.pending = data or b''
        self._warned = False
        LOG.info('the host is connected on %s', self.path)
        return True

    def read(self):
        """Bytes from the host, b'' when it went away, None if none."""
        if self.pending:
            data, self.pending = self.pending, b''
            return data
        try:
            if self.sock is not None:
                data = self.sock.recv(65536)
            else:
                data = os.read(self.fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return None
            LOG.warning('reading %s: %s', self.path, exc)
            data = b''
        if not data:
            self.lost()
        return data

    def write(self, data):
        """Write what the channel takes now; return the bytes written."""
        try:
            if self.sock is not None:
                return self.sock.send(data)
            return os.write(self.fd, data)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            LOG.warning('writing %s: %s', self.path, exc)
            self.lost()
            return 0

    def lost(self):
        if self.connected:
            LOG.info('host end of %s went away; waiting for it', self.path)
        self.connected = False
        self.pending = b''
        if self.sock is not None:
            self.sock.close()
            self.sock, self.fd = None, None

    def close(self):
        if self.sock is not None:
            self.sock.close()
        elif self.fd is not None:
            os.close(self.fd)
        self.sock = self.fd = None
        self.connected = False


# --------------------------------------------------------------------------
# The daemon

class Daemon:
    """The protocol state of the guest and the loop that drives it."""

    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self.channel = Channel(config['DEVICE'])
        self.reader = LineReader()
        self.outbox = b''
        self.dropping = False        # the outbox overflowed, logged once
        self.seq = 0
        self.registered = False
        self.last_init = None        # when the last init was sent
        self.last_challenge = None   # when the host last challenged us
        # Until when silence is expected (an action we were told of
        # runs): no init for silence before then.
        self.quiet_until = None
        self.limited = LogLimiter(clock)
        self.granted = {
            'heartbeat_interval_ms': config['HB_INTERVAL'],
            'corrective_action': config['CORRECTIVE_ACTION'],
            'restart_secs': config['RESTART'],
        }
        self.stopping = threading.Event()
        self.results = []            # (kind, payload) from other threads
        self.results_lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.health_checker = None
        self.api = ApplicationApi(
            config['API_SOCKET'],
            lambda: self.granted['corrective_action'],
            self.on_app_vote, self.on_app_gone)
        self.actions = {}            # ActionRun.key -> ActionRun

    # -- messages to the host --------------------------------------------

    def send(self, mtype, **fields):
        self.seq += 1
        message = dict(fields, version=PROTOCOL_VERSION, type=mtype,
                       seq=self.seq)
        data = encode(message)
        if len(self.outbox) + len(data) > MAX_OUTBOX:
            # The host is not reading.  What waits is stale by now (old
            # nonces, old inits): drop it rather than grow or block.
            # Said once until the channel drains, not once per drop.
            if not self.dropping:
                LOG.warning('host is not reading the channel: dropping '
                            'what it has not taken (%d bytes)',
                            len(self.outbox))
                self.dropping = True
            self.outbox = b''
        self.outbox += data
        self.flush()

    def flush(self):
        while self.outbox and self.channel.connected:
            written = self.channel.write(self.outbox)
            if not written:
                break
            self.outbox = self.outbox[written:]
        if not self.outbox and self.dropping:
            LOG.info('host reads the channel again')
            self.dropping = False

    def send_init(self, now):
        config = self.config
        self.send('init', client_version=__version__,
                  heartbeat_interval_ms=config['HB_INTERVAL'],
                  corrective_action=config['CORRECTIVE_ACTION'],
                  vote_secs=config['VOTE'],
                  shutdown_notice_secs=config['SHUTDOWN_NOTICE'],
                  suspend_notice_secs=config['SUSPEND_NOTICE'],
                  resume_notice_secs=config['RESUME_NOTICE'],
                  restart_secs=config['RESTART'])
        self.last_init = now

    def nack(self, reason, nack_seq=None, detail=None):
        fields = {'reason': reason, 'nack_seq': nack_seq}
        if detail:
            fields['detail'] = detail
        self.send('nack', **fields)

    # -- health ----------------------------------------------------------

    def health(self, now):
        """(healthy?, reason, corrective action) as of now."""
        reasons = []
        wished = []
        if self.health_checker is not None:
            healthy, reason = self.health_checker.verdict
            if not healthy:
                reasons.append(reason)
                wished.append(self.config['CORRECTIVE_ACTION'])
        for problem, action in self.api.problems(now):
            reasons.append(problem)
            wished.append(action)
        if not reasons:
            return True, '', None
        granted = self.granted['corrective_action']
        action = max((cap_action(w, granted) for w in wished),
                     key=ACTIONS.index)
        return False, clean_text('; '.join(reasons)), action

    # -- messages from the host ------------------------------------------

    def on_channel_data(self, data, now):
        for line, error in self.reader.feed(data):
            if error:
                self.limited.warning(
                    'bad', 'host sent a line over %d bytes; dropped',
                    MAX_LINE)
                self.nack(error)
                continue
            if not line.strip():
                continue             # an empty line carries nothing
            message, problem = decode(line)
            if problem:
                self.limited.warning(
                    'bad', 'host sent a bad message (%s): %r', problem[0],
                    line[:80])
                self.nack(problem[0], problem[1])
                continue
            self.on_message(message, now)

    def on_message(self, message, now):
        mtype = message['type']
        handler = {
            'init_ack': self.on_init_ack,
            'challenge': self.on_challenge,
            'action_notify': self.on_action_notify,
            'nack': self.on_nack,
        }.get(mtype)
        if handler is None:
            self.limited.warning(
                'bad', 'host sent unknown message type %r',
                clean_text(mtype, 40))
            self.nack('unknown_type', message['seq'])
            return
        handler(message, now)

    def on_init_ack(self, message, now):
        interval = message.get('heartbeat_interval_ms')
        action = message.get('corrective_action')
        if not _is_int(interval) or interval <= 0 or action not in ACTIONS:
            self.limited.warning('bad', 'host sent an invalid init_ack: %r',
                                 message)
            self.nack('invalid', message['seq'])
            return
        changed = (not self.registered
                   or self.granted['heartbeat_interval_ms'] != interval
                   or self.granted['corrective_action'] != action)
        restart = message.get('restart_secs')
        if not _is_number(restart) or restart <= 0:
            restart = self.config['RESTART']
        self.granted = {'heartbeat_interval_ms': interval,
                        'corrective_action': action,
                        'restart_secs': restart}
        self.registered = True
        self.last_challenge = now
        if changed:
            LOG.info('registered with the host: interval %d ms, '
                     'corrective action %s', interval, action)

    def on_challenge(self, message, now):
        nonce = message.get('nonce')
        if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
            self.nack('invalid', message['seq'], 'challenge needs a nonce')
            return
        self.last_challenge = now
        self.quiet_until = None
        healthy, reason, action = self.health(now)
        if healthy:
            self.send('challenge_response', nonce=nonce, health='healthy')
        else:
            self.send('challenge_response', nonce=nonce, health='unhealthy',
                      reason=reason, corrective_action=action)

    def on_nack(self, message, now):
        reason = message.get('reason')
        # 'stale' is the host ignoring answers to challenges we missed
        # (we were frozen) or a repeat: expected, not worth a line.
        # Anything else is a bug of one end: said, but not per message.
        if reason != 'stale':
            self.limited.warning(
                'nack', 'host refused our message %r: %s %s',
                message.get('nack_seq'), clean_text(reason, 40),
                clean_text(message.get('detail') or '', 120))
        if reason == 'not_registered':
            self.registered = False
            self.send_init(now)

    def on_action_notify(self, message, now):
        problem = None
        if not (isinstance(message.get('action_id'), str)
                and 0 < len(message['action_id']) <= 64):
            problem = 'action_id'
        elif message.get('event') not in EVENTS:
            problem = 'event'
        elif message.get('notification') not in NOTIFICATIONS:
            problem = 'notification'
        elif message.get('phase') not in PHASES:
            problem = 'phase'
        elif (not _is_number(message.get('timeout_secs'))
              or message['timeout_secs'] <= 0):
            problem = 'timeout_secs'
        if problem:
            self.limited.warning(
                'bad', 'host sent an action_notify with a bad %s', problem)
            self.nack('invalid', message['seq'], 'bad ' + problem)
            return
        timeout = message['timeout_secs']
        run = ActionRun(message, now + timeout - answer_margin(timeout))
        if run.key in self.actions:
            return                   # a repeat: the first one answers
        LOG.info('host: %s %s %s (answer within %s s)', message['phase'],
                 message['notification'], message['event'], timeout)
        if len(self.actions) >= MAX_ACTIONS:
            LOG.warning('%d actions already being handled; accepting %s '
                        'without asking', len(self.actions),
                        message['event'])
            self.answer_action(run)
            return
        self.actions[run.key] = run
        fields = dict((key, message[key]) for key in
                      ('action_id', 'event', 'notification', 'phase'))
        run.waiting |= self.api.notify(dict(
            fields, timeout_secs=round(max(0.1, run.deadline - now), 3)))
        script = self.config['EVENT_HANDLING_SCRIPT']
        if script:
            run.script_running = True
            threading.Thread(target=self.run_event_script,
                             args=(script, run), daemon=True,
                             name='event-' + message['event']).start()
        self.check_actions(now)

    def run_event_script(self, script, run):
        message = run.message
        env = dict(os.environ, VMHA_PHASE=message['phase'],
                   VMHA_ACTION_ID=message['action_id'])
        timeout = max(0.1, run.deadline - self.clock())
        try:
            status, first = run_script(
                [script, message['notification'], message['event']],
                timeout, env)
        except OSError as exc:
            LOG.error('event handling script %s cannot run: %s', script,
                      exc)
            status, first = 0, ''
        if status is None:
            LOG.warning('event handling script %s did not answer %s %s '
                        'within %.1f s: counted as accept', script,
                        message['notification'], message['event'], timeout)
            vote = (True, '')
        else:
            vote = (status == 0, first or ('event handling script exited '
                                           '%d' % status))
        self.post_result('script_vote', (run.key, vote))

    def answer_action(self, run):
        result, reason = run.response()
        message = run.message
        fields = dict((key, message[key]) for key in
                      ('action_id', 'event', 'notification', 'phase'))
        fields['result'] = result
        if reason:
            fields['reason'] = clean_text(reason)
        LOG.info('answered %s %s %s: %s %s', message['phase'],
                 message['notification'], message['event'], result, reason)
        self.send('action_response', **fields)
        if message['notification'] == 'irrevocable' and \
                message['phase'] == 'pre':
            # The action follows; the host stops challenging meanwhile.
            # An init now would look like the guest coming back.
            self.quiet_until = self.clock() + self.granted['restart_secs']

    def check_actions(self, now):
        for key, run in list(self.actions.items()):
            if run.finished(now):
                for name in run.waiting:
                    LOG.info('application %s did not answer %s in time: '
                             'counted as accept', name,
                             run.message['event'])
                del self.actions[key]
                self.answer_action(run)

    # -- results from worker threads -------------------------------------

    def post_result(self, kind, payload):
        with self.results_lock:
            self.results.append((kind, payload))
        try:
            os.write(self.wake_w, b'x')
        except OSError:
            pass                     # pipe full: a wakeup is pending

    def drain_results(self, now):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass
        with self.results_lock:
            results, self.results = self.results, []
        for kind, payload in results:
            if kind == 'script_vote':
                key, vote = payload
                run = self.actions.get(key)
                if run is not None:
                    run.script_running = False
                    run.votes['event handling script'] = vote
        self.check_actions(now)

    # -- votes of applications -------------------------------------------

    def on_app_vote(self, name, message, now):
        """An application answered an action_notify; late or unknown
        answers are dropped."""
        for run in self.actions.values():
            if (run.message['action_id'] == message.get('action_id')
                    and run.message['phase'] == message.get(
                        'phase', run.message['phase'])
                    and name in run.waiting):
                run.waiting.discard(name)
                accept = message.get('result', 'accept') != 'reject'
                reason = clean_text(message.get('reason') or '', 200)
                run.votes['application ' + name] = (
                    accept, reason or 'application %s rejected' % name)
                self.check_actions(now)
                return

    def on_app_gone(self, name):
        """An application left or lost its connection: its vote will not
        come, so nobody waits for it."""
        for run in self.actions.values():
            run.waiting.discard(name)

    # -- the loop --------------------------------------------------------

    def start(self):
        if self.config['HEALTH_CHECK_SCRIPT']:
            self.health_checker = HealthChecker(
                self.config['HEALTH_CHECK_SCRIPT'],
                self.config['HEALTH_CHECK_INTERVAL'], self.stopping)
            self.health_checker.start()
        try:
            self.api.open()
        except OSError as exc:
            # The heartbeat itself does not need the API: run without.
            LOG.error('cannot open the application API socket %s (%s); '
                      'running without it', self.config['API_SOCKET'], exc)

    def tick(self, now):
        """Timers: connect, (re)register, answer overdue actions."""
        if not self.channel.connected and self.channel.try_open(now):
            self.on_connected()
            data = self.channel.read()
            if data:
                self.on_channel_data(data, now)
        if self.channel.connected:
            interval = self.granted['heartbeat_interval_ms'] / 1000.0
            if not self.registered:
                if self.last_init is None or now - self.last_init >= \
                        INIT_RETRY:
                    self.send_init(now)
            elif self.quiet_until is not None and now < self.quiet_until:
                pass
            elif now - self.last_challenge >= REINIT_INTERVALS * interval:
                self.quiet_until = None
                LOG.warning('no challenge from the host for %.1f s: '
                            'registering again', now - self.last_challenge)
                self.registered = False
                self.send_init(now)
        self.check_actions(now)

    def on_connected(self):
        """A host (again): what was half-read or unsent belongs to the
        previous connection, and so do outstanding actions."""
        self.reader.reset()
        self.outbox = b''
        self.registered = False
        self.last_init = None
        self.quiet_until = None
        self.actions.clear()

    def poll_once(self, timeout):
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        channel_fd = self.channel.fileno() if self.channel.connected \
            else None
        if channel_fd is not None:
            events = select.POLLIN
            if self.outbox:
                events |= select.POLLOUT
            poller.register(channel_fd, events)
        self.api.register_poll(poller)
        try:
            ready = poller.poll(timeout * 1000)
        except InterruptedError:
            ready = []
        now = self.clock()
        for fd, events in ready:
            if fd == self.wake_r:
                self.drain_results(now)
            elif fd == channel_fd:
                if not self.channel.connected:
                    continue
                if events & select.POLLOUT:
                    self.flush()             # may find the host gone
                if self.channel.connected and events & (
                        select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = self.channel.read()
                    if data:
                        self.on_channel_data(data, now)
            else:
                self.api.handle(fd, events, now)

    def run(self):
        self.start()
        last = self.clock()
        while not self.stopping.is_set():
            now = self.clock()
            late = now - last - 0.5
            if late > 0:
                # This process was not scheduled (CPU steal, a frozen
                # VM): the silence of the host or of an application
                # while we were not running is nobody's fault.
                if self.last_challenge is not None:
                    self.last_challenge += late
                self.api.excuse(late)
            last = now
            self.tick(now)
            self.poll_once(ABSENT_POLL)
        self.shutdown()

    def shutdown(self, reason='vmha-guest stopping'):
        if self.channel.connected:
            self.send('exit', reason=reason)
            deadline = self.clock() + 1.0
            while self.outbox and self.channel.connected \
                    and self.clock() < deadline:
                select.select([], [self.channel.fileno()], [], 0.1)
                self.flush()
        LOG.info('stopped (%s)', reason)
        self.channel.close()
        self.api.close()

    def stop(self, *_args):
        """The signal handler: no lock here (the main thread it
        interrupts may hold one), only the event and a wakeup."""
        self.stopping.set()
        try:
            os.write(self.wake_w, b'x')
        except OSError:
            pass


# --------------------------------------------------------------------------
# Logging and the command line

class SyslogHandler(logging.Handler):
    """Through libc syslog(3): works without /dev/log (messages are then
    dropped by libc, never raised), unlike logging's socket handler."""

    PRIORITIES = {logging.DEBUG: syslog.LOG_DEBUG,
                  logging.INFO: syslog.LOG_INFO,
                  logging.WARNING: syslog.LOG_WARNING,
                  logging.ERROR: syslog.LOG_ERR,
                  logging.CRITICAL: syslog.LOG_CRIT}

    def emit(self, record):
        try:
            syslog.syslog(self.PRIORITIES.get(record.levelno,
                                              syslog.LOG_INFO),
                          self.format(record))
        except Exception:            # noqa: BLE001 - logging never kills
            self.handleError(record)


def setup_logging(foreground):
    syslog.openlog('vmha-guest', syslog.LOG_PID, syslog.LOG_DAEMON)
    LOG.setLevel(logging.INFO)
    LOG.addHandler(SyslogHandler())
    if foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            '%(asctime)s vmha-guest %(levelname)s %(message)s'))
        LOG.addHandler(handler)


USAGE = """usage: vmha-guest [--config PATH] [--device PATH] [--foreground]
                  [--check-config] [--version]

The vmha heartbeat client: registers this guest with the vmha agent on
its host over a virtio-serial port and answers its challenges.

  --config PATH    configuration file (default %s)
  --device PATH    the channel, overriding DEVICE= (a unix socket path
                   is connected to, for tests)
  --foreground     also log to stderr (it never forks either way)
  --check-config   parse the configuration, print it, exit 0 or 2
  --version        print the version
""" % DEFAULT_CONFIG


def parse_args(argv):
    options = {'config': None, 'device': None, 'foreground': False,
               'check': False}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ('-h', '--help'):
            sys.stdout.write(USAGE)
            sys.exit(0)
        elif arg == '--version':
            sys.stdout.write('vmha-guest %s (protocol %d)\n'
                             % (__version__, PROTOCOL_VERSION))
            sys.exit(0)
        elif arg == '--foreground':
            options['foreground'] = True
        elif arg == '--check-config':
            options['check'] = True
        elif arg in ('--config', '--device') or \
                arg.startswith(('--config=', '--device=')):
            if '=' in arg:
                arg, value = arg.split('=', 1)
            elif args:
                value = args.pop(0)
            else:
                raise ConfigError('%s needs a value' % arg)
            options[arg[2:]] = value
        else:
            raise ConfigError('unknown argument %r (see --help)' % arg)
    return options


def main(argv=None):
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        config = load_config(options['config'] or DEFAULT_CONFIG,
                             required=options['config'] is not None)
        if options['device']:
            config['DEVICE'] = options['device']
        check_scripts(config)
    except ConfigError as exc:
        sys.stderr.write('vmha-guest: %s\n' % exc)
        return 2
    if options['check']:
        for key in CONFIG_KEYS:
            sys.stdout.write('%s=%s\n' % (key, config[key]))
        return 0
    setup_logging(options['foreground'])
    daemon = Daemon(config)
    signal.signal(signal.SIGTERM, daemon.stop)
    signal.signal(signal.SIGINT, daemon.stop)
    try:
        daemon.run()
    except OSError as exc:
        LOG.error('cannot run: %s', exc)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
