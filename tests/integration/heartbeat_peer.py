"""The host end of a heartbeat channel, spoken by hand from a test.

:class:`HeartbeatPeer` connects to the unix socket QEMU listens on for a
domain's ``org.vmha.heartbeat.0`` port and speaks
doc/heartbeat-protocol.md (version 1) itself, without vmha's host side:
it proves the guest end (vmha-guest in the test image) keeps the
contract, and it gives a benchmark a reference round-trip time.  It
checks what the guest sends against the page (:func:`protocol_errors`)
and keeps every message it sent and received, with its time, for the
test's assertions and failure messages.
"""

import json
import os
import socket
import time

PROTOCOL_VERSION = 1
MAX_LINE = 4096
GUEST_TYPES = ('init', 'challenge_response', 'action_response', 'exit',
               'nack')
# init's fields and their types (all optional: the page gives defaults).
INIT_FIELDS = {
    'client_version': str, 'heartbeat_interval_ms': int,
    'corrective_action': str, 'vote_secs': (int, float),
    'shutdown_notice_secs': (int, float), 'suspend_notice_secs': (int, float),
    'resume_notice_secs': (int, float), 'restart_secs': (int, float)}
ACTIONS = ('log', 'reboot', 'stop')


class PeerClosed(Exception):
    """The guest end closed (QEMU went away)."""


def protocol_errors(message):
    """What is wrong with a guest message by the page; [] when nothing."""
    errors = []
    if not isinstance(message, dict):
        return ['not an object']
    if message.get('version') != PROTOCOL_VERSION:
        errors.append('version %r' % message.get('version'))
    kind = message.get('type')
    if kind not in GUEST_TYPES:
        errors.append('type %r' % kind)
    seq = message.get('seq')
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        errors.append('seq %r' % seq)
    if kind == 'init':
        for field, types in INIT_FIELDS.items():
            if field in message and (not isinstance(message[field], types)
                                     or isinstance(message[field], bool)):
                errors.append('%s %r' % (field, message[field]))
        if message.get('corrective_action', 'reboot') not in ACTIONS:
            errors.append('corrective_action %r'
                          % message['corrective_action'])
    elif kind == 'challenge_response':
        if not isinstance(message.get('nonce'), str):
            errors.append('nonce %r' % message.get('nonce'))
        if message.get('health') not in ('healthy', 'unhealthy'):
            errors.append('health %r' % message.get('health'))
    elif kind == 'action_response':
        if message.get('result') not in ('accept', 'reject'):
            errors.append('result %r' % message.get('result'))
    return errors


class HeartbeatPeer:
    """One connection to a guest's heartbeat port (see the module doc)."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.seq = 0
        self.buffer = b''
        self.log = []  # (monotonic, 'sent'|'received', message)
        self.pending = []  # received, not yet taken by wait_for

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def connect(self, timeout=30):
        """Connect, retrying until QEMU listens (it creates the socket
        when it starts); returns self."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            self.sock = sock
            self.buffer = b''
            return self

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def reconnect(self, timeout=30):
        self.close()
        return self.connect(timeout)

    def send(self, kind, **fields):
        """Send one message; return its seq."""
        self.seq += 1
        message = dict(version=PROTOCOL_VERSION, type=kind, seq=self.seq,
                       **fields)
        self.sock.sendall(json.dumps(message).encode() + b'\n')
        self.log.append((time.monotonic(), 'sent', message))
        return self.seq

    def send_raw(self, data):
        """Bytes as they are (garbage, a split line, ...)."""
        self.sock.sendall(data)
        self.log.append((time.monotonic(), 'sent', data))

    def _read_line(self, deadline):
        while b'\n' not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise PeerClosed('%s: end of file' % self.path)
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b'\n', 1)
        return line

    def receive(self, timeout):
        """The next message the guest sends (a dict, or the raw line if it
        is not JSON), or None after ``timeout`` seconds."""
        if self.pending:
            return self.pending.pop(0)
        line = self._read_line(time.monotonic() + timeout)
        if line is None:
            return None
        if len(line) + 1 > MAX_LINE:
            message = line
        else:
            try:
                message = json.loads(line)
            except ValueError:
                message = line
        self.log.append((time.monotonic(), 'received', message))
        return message

    def wait_for(self, kind, timeout, match=None):
        """The first message of type ``kind`` (for which ``match(message)``
        holds) within ``timeout`` s; others stay for later calls.  Raises
        TimeoutError naming what did arrive."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            for index, message in enumerate(self.pending):
                if self._fits(message, kind, match):
                    return self.pending.pop(index)
            skipped, self.pending = self.pending, []
            while True:
                message = self.receive(max(0, deadline - time.monotonic()))
                if message is None:
                    raise TimeoutError(
                        'no %s from %s within %ss; received: %s'
                        % (kind, self.path, timeout, self.received_types()))
                if self._fits(message, kind, match):
                    return message
                skipped.append(message)
        finally:
            self.pending = skipped + self.pending

    @staticmethod
    def _fits(message, kind, match):
        return (isinstance(message, dict) and message.get('type') == kind
                and (match is None or match(message)))

    def received_types(self):
        return [m.get('type') if isinstance(m, dict) else m[:60]
                for _, direction, m in self.log if direction == 'received']

    def register(self, timeout=60, **granted):
        """Wait for the guest's init and acknowledge it, granting what it
        asked for (or ``granted``); returns the init."""
        init = self.wait_for('init', timeout)
        grant = {field: init[field] for field in INIT_FIELDS
                 if field in init and field != 'client_version'}
        grant.update(granted)
        self.send('init_ack', init_seq=init['seq'], **grant)
        return init

    def challenge(self, timeout=5):
        """Send a challenge with a fresh nonce; return (the response that
        carries it, round-trip seconds), or (None, None) without one in
        ``timeout`` s.  Responses to older nonces are skipped."""
        nonce = os.urandom(16).hex()
        sent = time.monotonic()
        self.send('challenge', nonce=nonce)
        try:
            response = self.wait_for('challenge_response', timeout,
                                     lambda m: m.get('nonce') == nonce)
        except TimeoutError:
            return None, None
        finally:
            # Answers to older challenges count for nothing.
            self.pending = [m for m in self.pending if not self._fits(
                m, 'challenge_response', None)]
        return response, time.monotonic() - sent

    def notify(self, event, notification, phase='pre', timeout=10):
        """Send an action_notify; return the guest's action_response, or
        None without one in ``timeout`` s."""
        action_id = os.urandom(16).hex()
        self.send('action_notify', action_id=action_id, event=event,
                  notification=notification, phase=phase,
                  timeout_secs=timeout)
        try:
            return self.wait_for(
                'action_response', timeout + 2,
                lambda m: m.get('action_id') == action_id)
        except TimeoutError:
            return None
