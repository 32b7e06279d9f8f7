"""The heartbeat channel's wire format, version 1: framing and messages.

``doc/heartbeat-protocol.md`` is the contract; this module is its host
side and nothing else: no socket, no clock, no state beyond one
connection's partial line.  The guest is untrusted, so every function
here that reads guest bytes either returns a value or raises
``ProtocolError`` with one of the ``nack`` reasons of the contract, and
costs memory bounded by ``MAX_LINE`` whatever it is fed.

* ``Framer``: bytes of successive reads -> complete lines (``Line``) or
  the size of a discarded over-long one (``Oversize``).
* ``parse``: one line -> ``Message`` (validated, defaults filled in,
  strings cut and made printable) or ``ProtocolError``.
* ``encode``: a message of the host -> one line of compact JSON.
* ``clamp``: what a guest's ``init`` wishes -> what the operator's
  ``Bounds`` grant (the ``init_ack`` fields).
"""

import collections
import json
import math
import re

VERSION = 1
#: Longest line, its ``\\n`` included (bytes).
MAX_LINE = 4096
#: Longest string kept from a guest (characters, after cutting).
MAX_STRING = 256
#: Largest ``seq`` (the largest integer a double holds exactly, so a
#: guest written in any language can count to it).
MAX_SEQ = 2 ** 53
#: Longest timeout a guest may ask for, in seconds (a day); the
#: operator's ``max_notice`` caps what is granted.
MAX_TIMEOUT = 86400
#: Heartbeat interval a guest may ask for, in milliseconds.
MIN_INTERVAL_MS = 1
MAX_INTERVAL_MS = 3600 * 1000

# Message types.
INIT = 'init'
INIT_ACK = 'init_ack'
CHALLENGE = 'challenge'
CHALLENGE_RESPONSE = 'challenge_response'
ACTION_NOTIFY = 'action_notify'
ACTION_RESPONSE = 'action_response'
EXIT = 'exit'
NACK = 'nack'
#: What a guest sends; the others are the host's.
GUEST_TYPES = frozenset({INIT, CHALLENGE_RESPONSE, ACTION_RESPONSE, EXIT,
                         NACK})
HOST_TYPES = frozenset({INIT_ACK, CHALLENGE, ACTION_NOTIFY, NACK})

# nack reasons.
TOO_LONG = 'too_long'
NOT_UTF8 = 'not_utf8'
NOT_JSON = 'not_json'
INVALID = 'invalid'
BAD_VERSION = 'version'
UNKNOWN_TYPE = 'unknown_type'
NOT_REGISTERED = 'not_registered'
STALE = 'stale'
NACK_REASONS = (TOO_LONG, NOT_UTF8, NOT_JSON, INVALID, BAD_VERSION,
                UNKNOWN_TYPE, NOT_REGISTERED, STALE)

#: Corrective actions, least drastic first.  ``log`` leaves the guest
#: alone; ``reboot`` interrupts it but it comes back by itself; ``stop``
#: leaves it down until someone starts it, so it is the most drastic.
#: Capping an action means "no more drastic than" the cap.
ACTIONS = ('log', 'reboot', 'stop')
HEALTH = ('healthy', 'unhealthy')
EVENTS = ('stop', 'reboot', 'pause', 'unpause', 'suspend', 'resume',
          'resize_begin', 'resize_end', 'live_migrate_begin',
          'live_migrate_end', 'cold_migrate_begin', 'cold_migrate_end')
REVOCABLE = 'revocable'
IRREVOCABLE = 'irrevocable'
NOTIFICATIONS = (REVOCABLE, IRREVOCABLE)
PHASES = ('pre', 'post')
ACCEPT = 'accept'
REJECT = 'reject'
RESULTS = (ACCEPT, REJECT)

#: The timeouts of ``init``, in the order of the contract.
TIMEOUTS = ('vote_secs', 'shutdown_notice_secs', 'suspend_notice_secs',
            'resume_notice_secs', 'restart_secs')

Line = collections.namedtuple('Line', ['data'])
Line.__doc__ = "One complete line, without its ``\\n`` (bytes)."
Oversize = collections.namedtuple('Oversize', ['size'])
Oversize.__doc__ = """A line longer than the limit, discarded unread.

``size``: its length in bytes, ``\\n`` included.
"""

Message = collections.namedtuple('Message', ['type', 'seq', 'fields'])
Message.__doc__ = """One valid message.

``fields``: the fields of its type (``SCHEMAS``), every optional one
present with its default; unknown extra fields are dropped.
"""

Bounds = collections.namedtuple('Bounds', [
    'min_interval', 'max_interval', 'default_interval', 'miss_threshold',
    'max_action', 'max_notice', 'max_messages_per_second',
    'max_bad_in_a_row', 'answer_window'])
Bounds.__doc__ = """The operator's bounds on what a guest may ask.

Intervals and ``max_notice`` in seconds; ``default_interval`` is granted
to a guest whose ``init`` names none; ``max_action`` caps the corrective
action (``ACTIONS``); the last two are the limits past which a guest is
cut off (messages per second averaged over ``RATE_WINDOW`` seconds, bad
messages in a row); ``answer_window``, the part of the interval a guest
has to answer a challenge before it counts as a miss (1.0: until the
next challenge is due).
"""
Bounds.__new__.__defaults__ = (0.4, 60.0, 1.0, 2, 'stop', 300.0, 20, 10,
                               1.0)


class ProtocolError(Exception):
    """A line the contract does not allow.

    ``reason``: one of ``NACK_REASONS``; ``seq``: the offending
    message's ``seq`` when it had a valid one, else None; ``detail``: a
    short text for a person, never the guest's bytes.
    """

    def __init__(self, reason, seq=None, detail=''):
        super().__init__(reason, seq, detail)
        self.reason = reason
        self.seq = seq
        self.detail = detail

    def __str__(self):
        text = self.reason
        if self.detail:
            text += ': ' + self.detail
        return text


class Framer:
    """Splits a byte stream into lines, whatever the read boundaries.

    Holds at most ``max_line - 1`` bytes between calls: a line that
    cannot fit is dropped as it arrives, up to its ``\\n``, and reported
    once as ``Oversize`` (a guest sending a 1 GiB line costs this
    object no more than a short one).
    """

    def __init__(self, max_line=MAX_LINE):
        self._max_content = max_line - 1  # the '\n' is part of the limit
        self._buffer = bytearray()
        self._discarding = 0  # bytes of an over-long line dropped so far

    def pending(self):
        """Bytes held for the line not complete yet."""
        return len(self._buffer)

    def feed(self, data):
        """Return the ``Line`` and ``Oversize`` items ``data`` completes."""
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)  # a memoryview has no find()
        items = []
        pos = 0
        end = len(data)
        while pos < end:
            newline = data.find(b'\n', pos)
            if newline < 0:
                self._hold(data, pos, end)
                break
            length = newline - pos
            if self._discarding:
                items.append(Oversize(self._discarding + length + 1))
                self._discarding = 0
            elif len(self._buffer) + length > self._max_content:
                items.append(Oversize(len(self._buffer) + length + 1))
                self._buffer.clear()
            elif self._buffer:
                self._buffer += data[pos:newline]
                items.append(Line(bytes(self._buffer)))
                self._buffer.clear()
            else:
                items.append(Line(bytes(data[pos:newline])))
            pos = newline + 1
        return items

    def _hold(self, data, pos, end):
        # The rest of a read with no '\n': keep it if the line can still
        # fit, otherwise start (or go on) discarding.
        length = end - pos
        if self._discarding:
            self._discarding += length
        elif len(self._buffer) + length > self._max_content:
            self._discarding = len(self._buffer) + length
            self._buffer.clear()
        else:
            self._buffer += data[pos:end]


# -- schemas ---------------------------------------------------------------

_HEX32 = re.compile(r'[0-9a-f]{32}\Z')
_REQUIRED = object()


def _is_int(value):
    return type(value) is int  # bool is a subclass of int: not a number


def _text(value):
    """A guest's string, printable characters only, cut to MAX_STRING."""
    if type(value) is not str:
        raise ValueError('not a string')
    kept = []
    for char in value:
        if char.isprintable():
            kept.append(char)
            if len(kept) == MAX_STRING:
                break
    return ''.join(kept)


def _hex32(value):
    if type(value) is not str or not _HEX32.match(value):
        raise ValueError('not 32 lowercase hex characters')
    return value


def _enum(choices):
    def check(value):
        if type(value) is not str or value not in choices:
            raise ValueError('not one of %s' % ', '.join(choices))
        return value
    return check


def _integer(low, high):
    def check(value):
        if not _is_int(value) or not low <= value <= high:
            raise ValueError('not an integer in [%d, %d]' % (low, high))
        return value
    return check


def _number(low, high):
    def check(value):
        if not (_is_int(value) or type(value) is float) or not (
                math.isfinite(value) and low <= value <= high):
            raise ValueError('not a number in [%g, %g]' % (low, high))
        return value
    return check


def _optional_seq(value):
    if value is None:
        return None
    return _integer(0, MAX_SEQ)(value)


_seq = _integer(0, MAX_SEQ)
_timeout = _number(0, MAX_TIMEOUT)
_interval_ms = _integer(MIN_INTERVAL_MS, MAX_INTERVAL_MS)

#: type -> field -> (check, default); ``_REQUIRED`` marks a field that
#: must be present.  ``heartbeat_interval_ms`` of ``init`` defaults to
#: None: ``clamp`` grants the operator's ``default_interval`` then.
SCHEMAS = {
    INIT: {
        'client_version': (_text, ''),
        'heartbeat_interval_ms': (_interval_ms, None),
        'corrective_action': (_enum(ACTIONS), 'reboot'),
        'vote_secs': (_timeout, 8),
        'shutdown_notice_secs': (_timeout, 8),
        'suspend_notice_secs': (_timeout, 8),
        'resume_notice_secs': (_timeout, 13),
        'restart_secs': (_timeout, 300),
    },
    INIT_ACK: {
        'init_seq': (_seq, _REQUIRED),
        'heartbeat_interval_ms': (_interval_ms, _REQUIRED),
        'corrective_action': (_enum(ACTIONS), _REQUIRED),
        'vote_secs': (_timeout, _REQUIRED),
        'shutdown_notice_secs': (_timeout, _REQUIRED),
        'suspend_notice_secs': (_timeout, _REQUIRED),
        'resume_notice_secs': (_timeout, _REQUIRED),
        'restart_secs': (_timeout, _REQUIRED),
    },
    CHALLENGE: {
        'nonce': (_hex32, _REQUIRED),
    },
    CHALLENGE_RESPONSE: {
        'nonce': (_hex32, _REQUIRED),
        'health': (_enum(HEALTH), _REQUIRED),
        'reason': (_text, ''),
        'corrective_action': (_enum(ACTIONS), None),
    },
    ACTION_NOTIFY: {
        'action_id': (_hex32, _REQUIRED),
        'event': (_enum(EVENTS), _REQUIRED),
        'notification': (_enum(NOTIFICATIONS), _REQUIRED),
        'phase': (_enum(PHASES), _REQUIRED),
        'timeout_secs': (_timeout, _REQUIRED),
    },
    ACTION_RESPONSE: {
        'action_id': (_hex32, _REQUIRED),
        'event': (_enum(EVENTS), _REQUIRED),
        'notification': (_enum(NOTIFICATIONS), _REQUIRED),
        'phase': (_enum(PHASES), _REQUIRED),
        'result': (_enum(RESULTS), _REQUIRED),
        'reason': (_text, ''),
    },
    EXIT: {
        'reason': (_text, ''),
    },
    NACK: {
        'nack_seq': (_optional_seq, None),
        # Free text from the guest's point of view: a later version may
        # add reasons, and the host never answers a nack anyway.
        'reason': (_text, _REQUIRED),
        'detail': (_text, ''),
    },
}


def _reject_constant(name):
    # json accepts NaN and Infinity, which are not JSON.
    raise ValueError('%s is not JSON' % name)


def parse(line):
    """Return the ``Message`` ``line`` (bytes, no ``\\n``) holds.

    :raises ProtocolError: with the ``nack`` reason and the message's
        ``seq`` when it had a valid one
    """
    try:
        text = line.decode('utf-8')
    except UnicodeDecodeError:
        raise ProtocolError(NOT_UTF8) from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(NOT_JSON) from None
    if type(obj) is not dict:
        raise ProtocolError(INVALID, detail='not a JSON object')
    seq = obj.get('seq')
    try:
        seq = _seq(seq)
    except ValueError:
        raise ProtocolError(INVALID, detail='seq missing or not an integer '
                            'in [0, 2**53]') from None
    version = obj.get('version')
    if not _is_int(version):
        raise ProtocolError(INVALID, seq, 'version missing or not an integer')
    if version != VERSION:
        raise ProtocolError(BAD_VERSION, seq,
                            'only version %d is spoken' % VERSION)
    kind = obj.get('type')
    if type(kind) is not str:
        raise ProtocolError(INVALID, seq, 'type missing or not a string')
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise ProtocolError(UNKNOWN_TYPE, seq)
    fields = {}
    for name, (check, default) in schema.items():
        if name not in obj:
            if default is _REQUIRED:
                raise ProtocolError(INVALID, seq, '%s: missing' % name)
            fields[name] = default
            continue
        try:
            fields[name] = check(obj[name])
        except ValueError as error:
            raise ProtocolError(INVALID, seq,
                                '%s: %s' % (name, error)) from None
    return Message(kind, seq, fields)


def encode(kind, seq, **fields):
    """One message of the host as a line: compact ASCII JSON and ``\\n``.

    :raises ValueError: on a field that would not round-trip (NaN) or a
        line over ``MAX_LINE``: a bug of the host, never the guest's
    """
    obj = {'version': VERSION, 'type': kind, 'seq': seq}
    obj.update(fields)
    data = json.dumps(obj, separators=(',', ':'), allow_nan=False)
    data = data.encode('ascii') + b'\n'
    if len(data) > MAX_LINE:
        raise ValueError('%s message of %d bytes is over the %d-byte limit'
                         % (kind, len(data), MAX_LINE))
    return data


# -- what is granted -------------------------------------------------------

def cap_action(wished, max_action):
    """``wished``, made no more drastic than ``max_action`` (``ACTIONS``)."""
    if ACTIONS.index(wished) > ACTIONS.index(max_action):
        return max_action
    return wished


def clamp(init, bounds):
    """The ``init_ack`` fields granted for an ``init``'s fields.

    The interval is held within ``[min_interval, max_interval]`` (the
    operator's ``default_interval`` when the guest names none), the
    corrective action capped by ``max_action`` and every timeout by
    ``max_notice``.  ``init_seq`` is the caller's to add.
    """
    interval_ms = init.get('heartbeat_interval_ms')
    if interval_ms is None:
        interval_ms = bounds.default_interval * 1000
    low = bounds.min_interval * 1000
    high = bounds.max_interval * 1000
    granted = {
        'heartbeat_interval_ms': max(1, int(round(
            min(max(interval_ms, low), high)))),
        'corrective_action': cap_action(
            init.get('corrective_action') or 'reboot', bounds.max_action),
    }
    for name in TIMEOUTS:
        wished = init.get(name)
        if wished is None:
            wished = SCHEMAS[INIT][name][1]
        granted[name] = min(wished, bounds.max_notice)
    return granted
