"""A client of the vmha-guest API, for applications inside the guest.

An application that registers here becomes part of the guest's health:
if it stops heartbeating for two of its intervals (it crashed, hung or
was starved), vmha-guest answers the host's next challenge
``unhealthy`` naming it, and the host applies the corrective action the
application asked for (capped by what the guest and the operator
allow).  It may also vote on and be told of lifecycle actions through
``on_action``.

Standard library only, Python >= 3.8, one file: copy it next to the
application if vmha-guest was not installed with pip.

    client = HeartbeatClient('db', interval_ms=1000,
                             corrective_action='reboot',
                             on_action=lambda event, notification,
                             phase: (True, ''))
    client.start()          # registers; heartbeats from a thread
    client.set_health(False, 'replication broken')
    client.stop()           # unregisters: leaving is not a failure

The heartbeat thread only proves that the process is alive.  For a
health that means more, call ``set_health`` from the code that knows,
or pass ``health_check`` (a callable returning (healthy, reason)),
which the heartbeat thread calls each interval.
"""

import json
import logging
import socket
import threading

DEFAULT_SOCKET = '/run/vmha-guest/api.sock'
MAX_LINE = 4096

LOG = logging.getLogger('vmha_guest_client')


class ClientError(Exception):
    """The daemon refused a request or cannot be reached."""


class HeartbeatClient:
    """Registers one application and keeps it heartbeating."""

    def __init__(self, name, interval_ms=1000, corrective_action='reboot',
                 on_action=None, health_check=None,
                 socket_path=DEFAULT_SOCKET):
        self.name = name
        self.interval_ms = interval_ms
        self.corrective_action = corrective_action
        self.on_action = on_action
        self.health_check = health_check
        self.socket_path = socket_path
        self._health = ('healthy', '')
        self._sock = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader = None
        self._thread = None
        self.granted_action = None

    # -- connection --------------------------------------------------

    def _send(self, message):
        data = (json.dumps(message) + '\n').encode('utf-8')
        with self._send_lock:
            if self._sock is None:
                raise ClientError('not connected to vmha-guest')
            self._sock.sendall(data)

    def register(self, timeout=5.0):
        """Connect and register; raise ClientError on refusal."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise ClientError('cannot reach vmha-guest at %s: %s'
                              % (self.socket_path, exc))
        reader = sock.makefile('rb')
        with self._send_lock:
            self._sock, self._reader = sock, reader
        try:
            self._send({'type': 'register', 'name': self.name,
                        'interval_ms': self.interval_ms,
                        'corrective_action': self.corrective_action})
            reply = _read_message(reader)
        except OSError as exc:
            reply = {'reason': str(exc)}
        if reply is None or reply.get('type') != 'register_ack':
            self.close()
            raise ClientError('vmha-guest refused the registration: %s'
                              % (reply or {}).get('reason', 'no answer'))
        self.granted_action = reply.get('corrective_action')
        sock.settimeout(None)
        return reply

    def close(self, reader=None):
        """Close the connection (only if it is still ``reader``'s)."""
        with self._send_lock:
            if reader is not None and reader is not self._reader:
                return
            sock, self._sock = self._sock, None
            reader, self._reader = self._reader, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if reader is not None:
            reader.close()

    # -- what the application calls ----------------------------------

    def heartbeat(self):
        """Send one heartbeat with the current health."""
        if self.health_check is not None:
            try:
                healthy, reason = self.health_check()
            except Exception as exc:  # noqa: BLE001 - a bug is ill health
                healthy, reason = False, 'health check raised %r' % exc
            self.set_health(healthy, reason)
        health, reason = self._health
        message = {'type': 'heartbeat', 'health': health}
        if reason:
            message['reason'] = reason
        self._send(message)

    def set_health(self, healthy, reason=''):
        self._health = ('healthy' if healthy else 'unhealthy',
                        str(reason or '')[:200])

    def start(self):
        """Register, then heartbeat and answer actions from threads.

        If vmha-guest restarts, the client registers again by itself
        (retrying every half interval); only this first registration
        raises ClientError.
        """
        self.register()
        self._start_reader()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, daemon=True,
            name='vmha-heartbeat-%s' % self.name)
        self._thread.start()
        return self

    def stop(self, unregister=True):
        """Stop heartbeating; with ``unregister`` the daemon forgets the
        application (no failure), without it the guest turns unhealthy
        after two intervals, as if the application had died."""
        self._stopping.set()
        # The heartbeat thread ends first: between its wait and its
        # send it may register again (after a lost connection), and a
        # registration left behind without an unregister would make the
        # guest unhealthy once it stops heartbeating.
        if (self._thread is not None
                and self._thread is not threading.current_thread()):
            self._thread.join(2 + self.interval_ms / 1000.0)
        if unregister:
            try:
                self._send({'type': 'unregister'})
            except (OSError, ClientError):
                pass
        self.close()

    # -- threads -----------------------------------------------------

    def _start_reader(self):
        threading.Thread(target=self._read_loop, args=(self._reader,),
                         daemon=True,
                         name='vmha-actions-%s' % self.name).start()

    def _heartbeat_loop(self):
        interval = self.interval_ms / 1000.0
        complained = False
        # Twice per interval: one late wakeup must not look like death.
        while not self._stopping.wait(interval / 2):
            if self._sock is None:
                try:
                    self.register()
                except ClientError as exc:
                    if not complained:
                        LOG.error('%s: %s; retrying', self.name, exc)
                        complained = True
                    continue
                if self._stopping.is_set():
                    return          # stop() unregisters and closes
                LOG.info('%s: registered with vmha-guest again', self.name)
                complained = False
                self._start_reader()
            try:
                self.heartbeat()
            except (OSError, ClientError) as exc:
                if self._stopping.is_set():
                    return
                LOG.warning('%s: lost vmha-guest (%s); registering again',
                            self.name, exc)
                self.close()

    def _read_loop(self, reader):
        while not self._stopping.is_set():
            try:
                message = _read_message(reader)
            except (OSError, ValueError):
                message = None
            if message is None:
                # The daemon went away: let the heartbeat loop register
                # again at its next beat rather than fail a send first.
                self.close(reader)
                return
            if message.get('type') == 'action_notify':
                threading.Thread(target=self._answer_action,
                                 args=(message,), daemon=True).start()
            elif message.get('type') == 'error':
                LOG.warning('vmha-guest: %s', message.get('reason'))

    def _answer_action(self, message):
        accept, reason = True, ''
        if self.on_action is not None:
            try:
                accept, reason = self.on_action(message.get('event'),
                                                message.get('notification'),
                                                message.get('phase'))
            except Exception as exc:  # noqa: BLE001 - answer anyway
                LOG.exception('on_action failed; accepting')
                accept, reason = True, 'handler raised %r' % exc
        reply = {'type': 'action_response',
                 'action_id': message.get('action_id'),
                 'phase': message.get('phase'),
                 'result': 'accept' if accept else 'reject'}
        if reason:
            reply['reason'] = str(reason)[:200]
        try:
            self._send(reply)
        except (OSError, ClientError):
            pass


def _read_message(reader):
    """The next message on a connection: None at its end, {} if bad."""
    line = reader.readline(MAX_LINE)
    if not line:
        return None
    try:
        message = json.loads(line.decode('utf-8'))
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
