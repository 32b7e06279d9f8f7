"""Lifecycle actions a heartbeat guest votes on or is told of: the table
and the flow, as pure code.

An operator or nova asks the agent for an action on one VM
(``request_action``, ``vmha-action``).  A guest registered on the
heartbeat channel (``doc/heartbeat-protocol.md``) has a say first:

1. **vote** (``revocable``, ``pre``), for the actions the table votes on:
   one rejection aborts the action and its reason goes back to the
   caller; a guest that does not answer within its ``vote_secs``
   accepts (a frozen guest must not veto its own repair);
2. **pre-notification** (``irrevocable``, ``pre``): the action will
   happen; it waits until the guest's handlers finished, or its notice
   timeout ran out;
3. **the action** through the virt driver, or nothing when the caller
   acts (``vote_only``, and the begin/end of resize and migrations,
   which nova performs): then the verdict is returned and the caller
   must act, since the guest was told it would happen;
4. **post-notification** (``irrevocable``, ``post``) for the actions that
   have one; after a cold migration the guest booted again, so it is
   sent once the guest registered again (within ``restart_secs``).

Corrective actions (the heartbeat monitor's reboot or stop of a guest
that failed) skip voting and notification: a failed guest cannot be
trusted to vote on its own repair, and StarlingX did the same.

The table is the Titanium guest-client's (see /work/shared/DESIGN.md,
"Facts for the heartbeat ..."): which event each action is, whether it
is voted on, whether it has a pre- and a post-notification, and which of
the guest's notice timeouts governs it.

``run_flow`` takes every effect as a callable (ask the guest, hold the
heartbeat, act, wait, read a clock), so it runs the same in unit tests
and in ``action_runner``; it returns every phase it went through.
"""

import collections

#: The notice timeouts a guest asks for in ``init`` (its granted values
#: come back from ``HeartbeatMonitor.registration``), with the protocol's
#: defaults for a guest whose registration is unknown.
DEFAULT_TIMEOUTS = {
    'vote_secs': 8.0,
    'shutdown_notice_secs': 8.0,
    'suspend_notice_secs': 8.0,
    'resume_notice_secs': 13.0,
    'restart_secs': 300.0,
}

# Phases and their results (the ``instance.action`` payload).
VOTE, PRE, ACTION, POST = 'vote', 'pre', 'action', 'post'
ACCEPTED, REJECTED, DONE, FAILED, SKIPPED = (
    'accepted', 'rejected', 'done', 'failed', 'skipped')

Row = collections.namedtuple('Row', [
    'action', 'event', 'vote', 'pre', 'post', 'timeout', 'operation',
    'stops_heartbeat', 'restarts', 'after_restart'])
Row.__doc__ = """One action of the table.

``event``: the protocol's ``action_notify`` event; ``vote``, ``pre``,
``post``: whether it is voted on and has a pre- and a post-notification;
``timeout``: the guest's notice timeout for its notifications (a key of
``DEFAULT_TIMEOUTS``); ``operation``: the ``ActionDriver`` method that
performs it, None where the caller performs it (nova resizes and
migrates); ``stops_heartbeat``: the guest stops answering challenges
while it runs (it shuts down, or is paused or saved), so the heartbeat is
held: no false heartbeat loss; ``restarts``: the guest boots again (a
reboot; a resize or cold migration stops it here and starts it on the
destination), so the hold lasts its ``restart_secs`` too;
``after_restart``: the guest booted again before the post-notification,
which waits until it registered again.
"""

TABLE = {row.action: row for row in (
    # action, event, vote, pre, post, timeout, operation,
    #     stops heartbeat, restarts, post after restart
    Row('stop', 'stop', True, True, False, 'shutdown_notice_secs',
        'stop', True, False, False),
    Row('reboot', 'reboot', True, True, False, 'shutdown_notice_secs',
        'reboot', True, True, False),
    # A pause is not held: the monitor pauses the session on libvirt's
    # SUSPENDED event and resumes it on RESUMED; a hold would outlast the
    # unpause (the guest does not register again after one).
    Row('pause', 'pause', True, True, False, 'suspend_notice_secs',
        'pause', False, False, False),
    Row('unpause', 'unpause', False, False, True, 'resume_notice_secs',
        'unpause', False, False, False),
    Row('suspend', 'suspend', True, True, False, 'suspend_notice_secs',
        'suspend', True, False, False),
    Row('resume', 'resume', False, False, True, 'resume_notice_secs',
        'resume', False, False, False),
    # nova stops the guest for a resize or a cold migration and starts it
    # on the destination: held like a reboot.  A live migration keeps it
    # running (the monitor pauses at the switch-over by itself).
    Row('resize-begin', 'resize_begin', True, True, False,
        'suspend_notice_secs', None, True, True, False),
    Row('resize-end', 'resize_end', False, False, True,
        'resume_notice_secs', None, False, False, False),
    Row('live-migrate-begin', 'live_migrate_begin', True, True, False,
        'suspend_notice_secs', None, False, False, False),
    Row('live-migrate-end', 'live_migrate_end', False, False, True,
        'resume_notice_secs', None, False, False, False),
    Row('cold-migrate-begin', 'cold_migrate_begin', True, True, False,
        'suspend_notice_secs', None, True, True, False),
    Row('cold-migrate-end', 'cold_migrate_end', False, False, True,
        'resume_notice_secs', None, False, False, True),
)}

#: The names ``request_action`` accepts, in the table's order.
ACTIONS = tuple(TABLE)


class UnknownAction(ValueError):
    """An action the table does not have."""


def row(action):
    """The table's Row for ``action`` ('stop', 'resize-begin'; an event
    name such as 'resize_begin' is accepted too).  Raises
    ``UnknownAction`` naming the valid ones."""
    if isinstance(action, str):
        found = TABLE.get(action) or TABLE.get(action.replace('_', '-'))
        if found is not None:
            return found
    raise UnknownAction('unknown action %r; one of: %s'
                        % (action, ', '.join(ACTIONS)))


#: Most characters of a guest's reason that vmha passes on.
MAX_REASON = 256


def guest_text(text):
    """A guest's ``reason`` as vmha passes it on: text, printable
    characters only (one line in ``vmha-action``'s output and the logs),
    at most ``MAX_REASON`` characters; None for nothing usable.  The
    heartbeat session cuts it already; the guest is untrusted, so the
    flow does too."""
    if not isinstance(text, str):
        return None
    text = ''.join(c if c.isprintable() else ' ' for c in text[:MAX_REASON])
    return text.strip() or None


def timeouts(registration):
    """The guest's granted timeouts, the protocol's defaults for any it
    did not state (``registration`` None: not registered)."""
    granted = dict(DEFAULT_TIMEOUTS)
    for key in DEFAULT_TIMEOUTS:
        value = (registration or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value >= 0:
            granted[key] = float(value)
    return granted


Phase = collections.namedtuple('Phase', ['phase', 'event', 'result',
                                         'reason', 'took_ms'])
Phase.__doc__ = """What one phase of an action came to: ``phase`` vote,
pre, action or post; ``result`` accepted, rejected, done, failed or
skipped; ``reason`` why (the guest's own words where it gave some)."""

Outcome = collections.namedtuple('Outcome', ['verdict', 'reason', 'done',
                                             'phases'])
Outcome.__doc__ = """The end of a flow: ``verdict`` accepted or rejected
(by the guest's vote); ``reason`` the guest's reason for a rejection, or
what happened; ``done`` whether the whole action happened here (False
when rejected, when it failed, or when the caller acts)."""


class Effects:
    """What a flow does to the world; ``action_runner`` gives the real
    ones, unit tests their own.

    :param ask: ``ask(event, notification, phase, timeout)`` ->
        an answer with ``result`` ('accept', 'reject', 'timeout') and
        ``reason`` (the heartbeat monitor's ``ask`` for this VM)
    :param hold: ``hold(why, seconds)``: stop challenging the guest
    :param act: ``act(operation)`` performs the action; returns a phrase
        saying what it did, raises ``ActionFailed`` (or anything) if it
        did not happen
    :param wait_registered: ``wait_registered(seconds)`` -> whether the
        guest registered again within ``seconds``
    :param clock: monotonic seconds
    :param sleep: ``sleep(seconds)`` on the caller's task
    :param on_phase: ``on_phase(Phase)`` as each phase ends
    """

    def __init__(self, ask, hold, act, wait_registered, clock, sleep,
                 on_phase=None):
        self.ask = ask
        self.hold = hold
        self.act = act
        self.wait_registered = wait_registered
        self.clock = clock
        self.sleep = sleep
        self.on_phase = on_phase or (lambda phase: None)


#: Seconds between two tries of a post-notification the guest could not
#: be sent yet (see ``ask_when_ready``).
RETRY_INTERVAL = 0.2


def ask_when_ready(effects, event, notification, phase, seconds):
    """``effects.ask``, tried again until ``seconds`` passed while the
    answer is a ``timeout`` that came at once.

    Right after an unpause or a resume the heartbeat monitor has not yet
    seen the VM run again (libvirt's event is on its way; after a resume
    from saved memory the guest even connects and registers anew): the
    session answers at once that the guest cannot answer.  The guest's
    post-notification waits for it, within the notice timeout.
    """
    deadline = effects.clock() + seconds
    remaining = seconds
    while True:
        started = effects.clock()
        answer = effects.ask(event, notification, phase, remaining)
        early = effects.clock() - started < remaining / 2
        if answer.result != 'timeout' or not early or \
                effects.clock() + RETRY_INTERVAL >= deadline:
            return answer
        effects.sleep(RETRY_INTERVAL)
        # Whole tenths: the guest reads it as timeout_secs.
        remaining = max(0.1, round(deadline - effects.clock(), 1))


class ActionFailed(Exception):
    """The action itself did not happen (libvirt refused, or did not
    answer in time); the message says what to do."""


def hold_seconds(row_, granted, call_seconds):
    """How long the heartbeat is held for an action that stops it: the
    longest the action may take, and where the guest boots again the
    time it has to register again (the hold ends early when it does)."""
    seconds = call_seconds + granted[row_.timeout]
    if row_.restarts:
        seconds += granted['restart_secs']
    return seconds


def run_flow(row_, registration, effects, vote_only=False,
             call_seconds=0.0):
    """Run ``row_``'s flow for one VM; an ``Outcome``.

    :param registration: the guest's granted timeouts (None: no
        registered guest; the heartbeat's ``ask`` then accepts at once)
    :param vote_only: vote and pre-notify, then return: the caller acts
    :param call_seconds: the most the action itself may take (the
        heartbeat is held at least that long)
    """
    granted = timeouts(registration)
    phases = []

    def record(phase, result, reason, started):
        took = int(round((effects.clock() - started) * 1000))
        done = Phase(phase, row_.event, result, reason, max(0, took))
        phases.append(done)
        effects.on_phase(done)
        return done

    # 1. The vote: one rejection aborts; no answer in time accepts.
    started = effects.clock()
    if not row_.vote:
        record(VOTE, SKIPPED, '%s is not voted on' % row_.event, started)
    else:
        answer = effects.ask(row_.event, 'revocable', 'pre',
                             granted['vote_secs'])
        if answer.result == 'reject':
            reason = guest_text(answer.reason) or 'no reason given'
            record(VOTE, REJECTED, reason, started)
            return Outcome(REJECTED, reason, False, phases)
        if answer.result == 'timeout':
            reason = ('no vote within %gs: accepted'
                      % granted['vote_secs'])
        else:
            reason = guest_text(answer.reason) or 'accepted'
        record(VOTE, ACCEPTED, reason, started)

    # 2. The pre-notification: wait for the guest's handlers.
    started = effects.clock()
    if not row_.pre:
        record(PRE, SKIPPED, '%s has no pre-notification' % row_.event,
               started)
    else:
        seconds = granted[row_.timeout]
        answer = effects.ask(row_.event, 'irrevocable', 'pre', seconds)
        if answer.result == 'timeout':
            reason = ('handlers did not finish within %gs: going on'
                      % seconds)
        else:
            reason = guest_text(answer.reason) or 'handlers done'
        record(PRE, DONE, reason, started)

    # 3. The action.  The heartbeat is held first where the action (or
    # the caller's, with vote_only) stops the guest's answers.
    if row_.stops_heartbeat:
        effects.hold('%s requested' % row_.action,
                     hold_seconds(row_, granted, call_seconds))
    started = effects.clock()
    if vote_only or row_.operation is None:
        reason = ('vote only: the caller performs the %s' % row_.action
                  if vote_only and row_.operation is not None
                  else 'the caller performs the %s' % row_.event)
        record(ACTION, SKIPPED, reason, started)
        if vote_only or row_.pre:
            # The caller acts after this answer; a post-notification
            # (the *_end actions) comes with their own request.
            return Outcome(ACCEPTED, reason, False, phases)
    else:
        try:
            what = effects.act(row_.operation)
        except Exception as error:
            reason = str(error) or error.__class__.__name__
            record(ACTION, FAILED, reason, started)
            return Outcome(ACCEPTED, reason, False, phases)
        record(ACTION, DONE, what, started)

    # 4. The post-notification, once the guest is back where it booted.
    started = effects.clock()
    if not row_.post:
        record(POST, SKIPPED, '%s has no post-notification' % row_.event,
               started)
        return Outcome(ACCEPTED, phases[-2].reason, True, phases)
    if row_.after_restart and not effects.wait_registered(
            granted['restart_secs']):
        reason = ('the guest did not register again within %gs: no '
                  'post-notification' % granted['restart_secs'])
        record(POST, SKIPPED, reason, started)
        return Outcome(ACCEPTED, reason, True, phases)
    seconds = granted[row_.timeout]
    answer = ask_when_ready(effects, row_.event, 'irrevocable', 'post',
                            seconds)
    if answer.result == 'timeout':
        reason = 'handlers did not finish within %gs' % seconds
    else:
        reason = guest_text(answer.reason) or 'handlers done'
    record(POST, DONE, reason, started)
    return Outcome(ACCEPTED, reason, True, phases)
