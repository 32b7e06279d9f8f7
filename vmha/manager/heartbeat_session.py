"""One guest connection's heartbeat engine: bytes and time in, outputs out.

A ``Session`` holds what the host knows of one heartbeat connection:
what was granted, the latest challenge, the misses, the votes waiting
for an answer.  It has no socket, no thread and no clock of its own:
the monitor feeds it the bytes the hub read (``feed``), calls ``tick``
when ``next_due`` says, tells it what the VM does (``pause``,
``resume``, ``close``) and asks votes and notices (``ask``), always
passing ``now`` (monotonic seconds).  Each call returns the ``Output``
items the monitor must act on, in order: bytes to write (``Send``),
state changes, a failure to report, an answer to a vote.

The guest is untrusted: nothing it sends makes a method raise, every
buffer is bounded (a partial line by ``MAX_LINE``, the rate window by
the rate limit), and a guest that floods or keeps sending garbage is
cut off (``CutOff``; the monitor closes the connection).

No false failures: a miss is only counted when the host challenged on
time (see ``tick``), an answer to any challenge but the latest counts
for nothing either way, and a paused VM is never challenged.  The
caller's part: feed everything the hub has read before calling ``tick``
with the same or a later ``now``; an answer still waiting in a buffer
when the tick runs would be counted as a miss.
"""

import collections
import logging
import secrets

from vmha.manager import heartbeat_protocol as protocol
from vmha.manager import heartbeat_states as states

LOG = logging.getLogger(__name__)

Bounds = protocol.Bounds
#: The rate limit's window, in seconds.
RATE_WINDOW = 5.0
#: Bytes of entropy in a nonce (32 hex characters).
NONCE_BYTES = 16
#: Seconds between two log lines about one guest's bad messages.
BAD_LOG_INTERVAL = 60.0

# Failure causes.
HEARTBEAT_LOST = 'heartbeat_lost'
GUEST_UNHEALTHY = 'guest_unhealthy'
# An Answer's result when the guest did not answer in time: accepts.
TIMEOUT = 'timeout'

Send = collections.namedtuple('Send', ['data'])
Send.__doc__ = "Bytes to write to the guest (one whole line)."
StateChange = collections.namedtuple('StateChange', ['old', 'new', 'reason'])
Failure = collections.namedtuple('Failure', [
    'cause', 'reason', 'evidence', 'action'])
Failure.__doc__ = """Open a failure episode (once per episode).

``cause``: ``heartbeat_lost`` or ``guest_unhealthy``; ``reason``: words
for a person (the guest's own, cut and printable, for ill health);
``evidence``: ``misses``, ``last_answer_age`` (seconds, None if never),
``guest_reason``; ``action``: the corrective action granted (the
guest's wish capped by ``max_action``).
"""
Recovered = collections.namedtuple('Recovered', ['reason'])
Recovered.__doc__ = "Close the open failure episode: healthy again."
Answer = collections.namedtuple('Answer', [
    'action_id', 'result', 'reason', 'event', 'notification', 'phase'])
Answer.__doc__ = """The end of one ``ask``.

``result``: ``accept``, ``reject`` (a vote only) or ``timeout`` (no
answer in time, or the guest could not answer: counts as accept).
"""
CutOff = collections.namedtuple('CutOff', ['reason'])
CutOff.__doc__ = "Close the connection: the guest broke a limit."
Exited = collections.namedtuple('Exited', ['reason'])
Exited.__doc__ = "The guest stopped heartbeating on purpose: no failure."

Verdict = collections.namedtuple('Verdict', ['result', 'reason'])


def aggregate(answers):
    """The verdict of a vote: one ``reject`` wins, anything else accepts.

    ``answers``: ``Answer`` items (a voter that never answered is simply
    absent, or answered ``timeout``).  The verdict's reason is the first
    rejecter's.
    """
    for answer in answers:
        if answer.result == protocol.REJECT:
            return Verdict(protocol.REJECT, answer.reason)
    return Verdict(protocol.ACCEPT, '')


_Pending = collections.namedtuple('_Pending', [
    'action_id', 'event', 'notification', 'phase', 'deadline'])
_Hold = collections.namedtuple('_Hold', ['why', 'until'])


class Session:
    """The host end of one heartbeat connection; see the module.

    :param bounds: ``Bounds``
    :param now: monotonic time the connection was made
    :param nonce: ``nonce(nbytes) -> hex string``, ``secrets.token_hex``
        unless a test wants predictable ones
    :param name: how log lines name the VM (its UUID)
    :param episode_open: a failure episode of this VM is open already
        (the journal says so after an agent restart or a reconnect): no
        second ``Failure`` for it, and ``Recovered`` at the first healthy
        answer
    """

    def __init__(self, bounds, now, nonce=secrets.token_hex, name='',
                 episode_open=False):
        self.bounds = bounds
        self.name = name
        self._nonce = nonce
        self._framer = protocol.Framer()
        self.state = states.WAITING
        self.granted = None
        self.misses = 0
        self.last_answer_at = None
        self.connected_at = now
        self._registered = False
        self._host_seq = 0
        self._guest_seq = None     # the last guest seq accepted
        self._challenge = None     # the latest challenge's nonce
        self._answered = True      # the latest challenge was answered
        self._challenge_due = None  # when the next challenge goes out
        self._answer_due = None     # when the latest one counts a miss
        self._failure_open = episode_open
        self._guest_reason = ''
        self._hold = None
        # (action_id, notification, phase) -> _Pending
        self._pending = {}
        self._arrivals = collections.deque()
        self._bad_in_a_row = 0
        self._bad_logged_at = None
        self._bad_unlogged = 0
        self._cut_off_reason = None
        self.counters = collections.Counter()

    # -- what the monitor reads ------------------------------------------

    @property
    def interval(self):
        """The granted interval in seconds, None before an ``init``."""
        if self.granted is None:
            return None
        return self.granted['heartbeat_interval_ms'] / 1000.0

    @property
    def episode_open(self):
        """True between a ``Failure`` and its ``Recovered``."""
        return self._failure_open

    def next_due(self):
        """Monotonic time ``tick`` has something to do, None if never."""
        times = [pending.deadline for pending in self._pending.values()]
        if self._hold is not None and self._hold.until is not None:
            times.append(self._hold.until)
        if self.state in states.CHALLENGED and self._challenge_due is not None:
            times.append(self._challenge_due)
            if self._answer_due is not None:
                times.append(self._answer_due)
        return min(times) if times else None

    def status(self, now=None):
        """What ``vmha-status`` and the metrics show for this channel."""
        status = {
            'state': self.state,
            'interval': self.interval,
            'corrective_action': (self.granted or {}).get('corrective_action'),
            'misses': self.misses,
            'last_answer_at': self.last_answer_at,
            'episode_open': self._failure_open,
            'paused_why': self._hold.why if self._hold else None,
            'pending_answers': len(self._pending),
            'cut_off_reason': self._cut_off_reason,
        }
        if now is not None:
            status['last_answer_age'] = self._answer_age(now)
        status.update(sorted(self.counters.items()))
        return status

    # -- input -----------------------------------------------------------

    def feed(self, data, now):
        """Handle the bytes one read returned; return the outputs."""
        out = []
        if self.state == states.CUT_OFF:
            return out
        for item in self._framer.feed(data):
            self._arrived(now, out)
            if self.state == states.CUT_OFF:
                break
            if type(item) is protocol.Oversize:
                self._bad(protocol.ProtocolError(
                    protocol.TOO_LONG,
                    detail='line of %d bytes' % item.size), now, out)
            elif item.data.strip():
                try:
                    message = protocol.parse(item.data)
                except protocol.ProtocolError as error:
                    self._bad(error, now, out)
                else:
                    self._handle(message, now, out)
            # else: an empty line carries nothing; only the rate counts it
            if self.state == states.CUT_OFF:
                break
        return out

    def tick(self, now):
        """Do what is due at ``now``: vote timeouts, the next challenge."""
        out = []
        for key, pending in list(self._pending.items()):
            if pending.deadline <= now:
                del self._pending[key]
                out.append(self._answer(pending, TIMEOUT, 'no answer in time'))
        if self.state == states.CUT_OFF:
            return out
        if (self._hold is not None and self._hold.until is not None
                and now >= self._hold.until):
            self._end_hold(now, 'hold ran out (%s)' % self._hold.why, out)
        if (self.state in states.CHALLENGED
                and self._answer_due is not None
                and now >= self._answer_due):
            self._miss_tick(now, out)
        if (self.state in states.CHALLENGED
                and self._challenge_due is not None
                and now >= self._challenge_due):
            self._challenge_tick(now, out)
        return out

    def pause(self, now, why, timeout=None):
        """The VM cannot answer: stop challenging, count no misses.

        Challenges start again at ``resume``, at the guest's next
        ``init`` (a guest that can register can answer; the monitor
        pauses again if its reason still holds), or, with ``timeout``
        (seconds: an action restarts the guest, its granted
        ``restart_secs``), when that runs out, whichever comes first.
        Votes waiting for an answer end ``timeout`` (accept): the guest
        cannot answer them.
        """
        out = []
        if self.state == states.CUT_OFF:
            return out
        self._hold = _Hold(why, None if timeout is None else now + timeout)
        self._void_challenge()
        self.misses = 0
        for pending in self._pending.values():
            out.append(self._answer(pending, TIMEOUT, 'VM paused: ' + why))
        self._pending.clear()
        self._transition(states.PAUSE, 'paused: ' + why, now, out)
        return out

    def resume(self, now):
        """The VM runs again: a fresh challenge now, misses from zero."""
        out = []
        if self._hold is not None and self.state != states.CUT_OFF:
            self._end_hold(now, 'resumed', out)
        return out

    def close(self, now, why='connection closed'):
        """The connection ended: answer what waits, back to ``waiting``."""
        out = []
        for pending in self._pending.values():
            out.append(self._answer(pending, TIMEOUT, why))
        self._pending.clear()
        self._registered = False
        self._hold = None  # a new connection gets a new session
        self._void_challenge()
        self._challenge_due = None
        self._transition(states.CLOSED, why, now, out)
        return out

    def ask(self, action_id, event, notification, phase, timeout, now):
        """Send an ``action_notify``; its ``Answer`` comes from a later call.

        A guest that cannot answer (not registered, paused, cut off) is
        answered ``timeout`` at once: a voter that does not answer
        accepts.
        """
        protocol.SCHEMAS[protocol.ACTION_NOTIFY]['action_id'][0](action_id)
        pending = _Pending(action_id, event, notification, phase,
                           now + timeout)
        if not self._registered or self.state not in states.CHALLENGED:
            return [self._answer(pending, TIMEOUT,
                                 'guest cannot answer (%s)' % self.state)]
        self._pending[(action_id, notification, phase)] = pending
        return [self._send(protocol.ACTION_NOTIFY, action_id=action_id,
                           event=event, notification=notification,
                           phase=phase, timeout_secs=timeout)]

    # -- messages --------------------------------------------------------

    def _handle(self, message, now, out):
        kind = message.type
        if kind not in protocol.GUEST_TYPES:
            self._bad(protocol.ProtocolError(
                protocol.INVALID, message.seq,
                '%s is sent by the host, not the guest' % kind), now, out)
            return
        self._bad_in_a_row = 0
        if kind == protocol.INIT:
            self._on_init(message, now, out)
            return
        if kind == protocol.NACK:
            # Never answered (no nack storms); a host bug shows here.
            self.counters['nacks_received'] += 1
            LOG.debug('heartbeat %s: the guest refused message %s: %s',
                      self.name, message.fields['nack_seq'],
                      message.fields['reason'])
            return
        if not self._registered:
            if kind != protocol.EXIT:  # a leaving guest needs no init
                self._nack(protocol.NOT_REGISTERED, message.seq, out)
            return
        if message.seq <= self._guest_seq:
            self.counters['replays'] += 1
            self._nack(protocol.STALE, message.seq, out,
                       'seq not greater than %d' % self._guest_seq)
            return
        self._guest_seq = message.seq
        if kind == protocol.CHALLENGE_RESPONSE:
            self._on_response(message.fields, now, out)
        elif kind == protocol.ACTION_RESPONSE:
            self._on_action_response(message.fields, out)
        else:
            self._on_exit(message.fields, now, out)

    def _on_init(self, message, now, out):
        self.counters['inits'] += 1
        self.granted = protocol.clamp(message.fields, self.bounds)
        self._registered = True
        self._guest_seq = message.seq
        self._guest_reason = ''
        # Registering again neither resets the misses nor postpones the
        # deadline of the challenge outstanding: a guest whose client
        # keeps restarting without answering fails like a silent one.
        outstanding = (self.state in states.CHALLENGED and not self._answered
                       and self._challenge_due is not None)
        due = self._challenge_due if outstanding else None
        answer_due = self._answer_due if outstanding else None
        out.append(self._send(protocol.INIT_ACK, init_seq=message.seq,
                              **self.granted))
        # An init ends any pause: a guest that can register can answer.
        # The monitor, which knows why the VM was paused, pauses the
        # session again (``StateChange`` to ``enabling`` tells it) when
        # that still holds, before the challenge sent here is due.
        self._hold = None
        self._transition(states.INIT, 'registered', now, out)
        self._send_challenge(now, out, due, answer_due)

    def _on_response(self, fields, now, out):
        if (fields['nonce'] != self._challenge or self._answered
                or self.state not in states.CHALLENGED):
            # A frozen guest answering every challenge it missed: none of
            # them says anything about now.
            self.counters['stale_answers'] += 1
            self._nack(protocol.STALE, None, out, 'not the latest challenge')
            return
        self._answered = True
        self.misses = 0
        self.last_answer_at = now
        if fields['health'] == 'healthy':
            self._guest_reason = ''
            self._transition(states.ANSWER_HEALTHY, 'answered healthy', now,
                             out)
            return
        self._guest_reason = fields['reason']
        wished = fields['corrective_action'] or (
            self.granted['corrective_action'])
        self._transition(
            states.ANSWER_UNHEALTHY,
            'the guest says it is unhealthy: %s' % (fields['reason'] or
                                                    'no reason given'),
            now, out, cause=GUEST_UNHEALTHY,
            action=protocol.cap_action(wished, self.bounds.max_action))

    def _on_action_response(self, fields, out):
        key = (fields['action_id'], fields['notification'], fields['phase'])
        pending = self._pending.get(key)
        if pending is None or pending.event != fields['event']:
            self.counters['unmatched_answers'] += 1
            LOG.debug('heartbeat %s: dropped an answer to no outstanding '
                      'action (%s %s %s)', self.name, fields['event'],
                      fields['notification'], fields['phase'])
            return
        del self._pending[key]
        result = fields['result']
        if result == protocol.REJECT and (
                pending.notification == protocol.IRREVOCABLE):
            LOG.warning('heartbeat %s: the guest rejected the irrevocable '
                        '%s %s notice (%s); it goes on', self.name,
                        pending.event, pending.phase, fields['reason'])
            result = protocol.ACCEPT
        out.append(self._answer(pending, result, fields['reason']))

    def _on_exit(self, fields, now, out):
        self._registered = False
        self._void_challenge()
        self._challenge_due = None
        self.misses = 0
        for pending in self._pending.values():
            out.append(self._answer(pending, TIMEOUT, 'the guest exited'))
        self._pending.clear()
        self._transition(states.EXIT, 'the guest exited: %s'
                         % (fields['reason'] or 'no reason given'), now, out,
                         exit_reason=fields['reason'])

    # -- time ------------------------------------------------------------

    def _miss_tick(self, now, out):
        """The latest challenge's answer window ended unanswered."""
        self._answer_due, due = None, self._answer_due
        if self._answered:
            return
        if now - due > self.interval / 2.0:
            # The host woke up late: the guest had no fair chance to be
            # heard in time, so this tick proves nothing.
            self.counters['late_ticks'] += 1
            return
        self.misses += 1
        self.counters['misses_total'] += 1
        if self.misses >= self.bounds.miss_threshold:
            self._transition(
                states.LOST,
                '%d challenges in a row unanswered' % self.misses,
                now, out, cause=HEARTBEAT_LOST,
                action=self.granted['corrective_action'])
        else:
            self._transition(states.MISSED, 'challenge unanswered', now,
                             out)

    def _challenge_tick(self, now, out):
        if self._answer_due is not None:
            # Both due at once (an answer window of a whole interval, or
            # a host that slept through both): the miss first.
            self._miss_tick(now, out)
            if self.state not in states.CHALLENGED:
                return
        self._send_challenge(now, out)

    def _send_challenge(self, now, out, due=None, answer_due=None):
        self._challenge = self._nonce(NONCE_BYTES)
        self._answered = False
        # From the time it is really sent: a guest always has its whole
        # answer window, however late the host was.
        interval = self.interval
        self._challenge_due = now + interval if due is None else due
        self._answer_due = (
            min(now + interval * self.bounds.answer_window,
                self._challenge_due)
            if answer_due is None else answer_due)
        out.append(self._send(protocol.CHALLENGE, nonce=self._challenge))

    def _void_challenge(self):
        self._challenge = None
        self._answered = True
        self._answer_due = None

    def _end_hold(self, now, why, out):
        self._hold = None
        self.misses = 0
        if self._registered:
            self._transition(states.RESUME, why, now, out)
            if self.state in states.CHALLENGED:
                self._send_challenge(now, out)
        else:
            self._transition(states.RESUME_UNREGISTERED, why, now, out)

    # -- limits ----------------------------------------------------------

    def _arrived(self, now, out):
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals and arrivals[0] <= now - RATE_WINDOW:
            arrivals.popleft()
        limit = self.bounds.max_messages_per_second * RATE_WINDOW
        if len(arrivals) > limit:
            self._cut_off('more than %d messages a second over %g s'
                          % (self.bounds.max_messages_per_second,
                             RATE_WINDOW), now, out)

    def _bad(self, error, now, out):
        self.counters['bad_messages'] += 1
        self._bad_in_a_row += 1
        # One line per BAD_LOG_INTERVAL at most: a guest mixing garbage
        # with good messages stays under the cut-off, not in the log.
        if (self._bad_logged_at is None
                or now - self._bad_logged_at >= BAD_LOG_INTERVAL):
            LOG.warning('heartbeat %s: bad message (seq %s): %s; %d more '
                        'since the last such line', self.name, error.seq,
                        error, self._bad_unlogged)
            self._bad_logged_at = now
            self._bad_unlogged = 0
        else:
            self._bad_unlogged += 1
        self._nack(error.reason, error.seq, out, error.detail)
        if self._bad_in_a_row > self.bounds.max_bad_in_a_row:
            self._cut_off('more than %d bad messages in a row'
                          % self.bounds.max_bad_in_a_row, None, out)

    def _cut_off(self, why, now, out):
        self._cut_off_reason = why
        self._registered = False
        self._void_challenge()
        self._challenge_due = None
        self._hold = None
        self._arrivals.clear()
        for pending in self._pending.values():
            out.append(self._answer(pending, TIMEOUT, 'guest cut off'))
        self._pending.clear()
        LOG.warning('heartbeat %s: guest cut off: %s', self.name, why)
        self._transition(states.VIOLATION, why, now, out)

    # -- helpers ---------------------------------------------------------

    def _transition(self, event, reason, now, out, cause=None, action=None,
                    exit_reason=''):
        old = self.state
        transition = states.step(old, event)
        self.state = transition.state
        if old != self.state:
            out.append(StateChange(old, self.state, reason))
        effects = transition.effects
        if states.REPORT_FAILURE in effects and not self._failure_open:
            self._failure_open = True
            out.append(Failure(cause, reason, {
                'misses': self.misses,
                'last_answer_age': self._answer_age(now),
                'guest_reason': self._guest_reason,
            }, action))
        if states.CLOSE_EPISODE in effects and self._failure_open:
            self._failure_open = False
            out.append(Recovered(reason))
        if states.NOTIFY_EXITED in effects:
            out.append(Exited(exit_reason))
        if states.NOTIFY_CUT_OFF in effects:
            out.append(CutOff(reason))

    def _answer_age(self, now):
        if self.last_answer_at is None or now is None:
            return None
        return now - self.last_answer_at

    def _answer(self, pending, result, reason):
        return Answer(pending.action_id, result, reason, pending.event,
                      pending.notification, pending.phase)

    def _send(self, kind, **fields):
        self._host_seq += 1
        return Send(protocol.encode(kind, self._host_seq, **fields))

    def _nack(self, reason, seq, out, detail=''):
        self.counters['nacks_sent'] += 1
        out.append(self._send(protocol.NACK, nack_seq=seq, reason=reason,
                              detail=detail))
