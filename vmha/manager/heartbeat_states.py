"""The heartbeat machine of one VM's channel: a declared table.

States (``doc/heartbeat-protocol.md``, "Timing and state"):

* ``waiting``: the channel is there (or being connected), no guest has
  registered on it.
* ``enabling``: an ``init`` was acknowledged; challenges go out and no
  valid answer came back yet.
* ``enabled``: the latest challenge answered healthy.
* ``failed``: ``miss_threshold`` challenges in a row went unanswered, or
  the guest said it is unhealthy.  Challenges go on: a healthy answer
  (after the guest re-registered, say from a reboot) ends the failure.
* ``paused``: the VM cannot answer (paused, saved, migrating, an action
  running): no challenges, no misses.  An ``init`` ends it: a guest that
  can register can answer (the monitor pauses again if its reasons for
  the pause still hold).
* ``exited``: the guest left on purpose (``exit``): no challenges, no
  failure, until it registers again.
* ``cut_off``: the guest broke the limits; the monitor closes the
  connection.  Nothing the guest sends counts any more.

Inputs: what the session saw or was told (the constants below).  Each
cell gives the next state and the *effects* the monitor must carry out,
besides a state-change notification whenever the state differs:

* ``REPORT_FAILURE``: open a failure episode, unless one is open already
  (the session emits ``Failure`` only then: one report per episode);
* ``CLOSE_EPISODE``: close the open episode, if one is (``Recovered``);
* ``EXITED``, ``CUT_OFF``: tell the monitor (``Exited``, ``CutOff``).

A pair missing from the table is a bug of the session, not a guest's
doing: ``step`` raises ``InvalidTransition``.
"""

import collections

WAITING = 'waiting'
ENABLING = 'enabling'
ENABLED = 'enabled'
FAILED = 'failed'
PAUSED = 'paused'
EXITED = 'exited'
CUT_OFF = 'cut_off'
ALL_STATES = (WAITING, ENABLING, ENABLED, FAILED, PAUSED, EXITED, CUT_OFF)

# Inputs.
CONNECTED = 'connected'            # the monitor (re)connected the channel
INIT = 'init'                      # a valid init was acknowledged
ANSWER_HEALTHY = 'answer_healthy'  # the latest challenge, answered healthy
ANSWER_UNHEALTHY = 'answer_unhealthy'
MISSED = 'missed'                  # one challenge unanswered, below threshold
LOST = 'lost'                      # miss_threshold misses in a row
PAUSE = 'pause'                    # the VM cannot answer for a while
RESUME = 'resume'                  # it can again (the guest is registered)
RESUME_UNREGISTERED = 'resume_unregistered'  # ... no guest registered
EXIT = 'exit'                      # the guest's exit
CLOSED = 'closed'                  # the connection ended
VIOLATION = 'violation'            # the guest broke a limit
INPUTS = (CONNECTED, INIT, ANSWER_HEALTHY, ANSWER_UNHEALTHY,
          MISSED, LOST, PAUSE, RESUME, RESUME_UNREGISTERED, EXIT, CLOSED,
          VIOLATION)

# Effects.
REPORT_FAILURE = 'report_failure'
CLOSE_EPISODE = 'close_episode'
NOTIFY_EXITED = 'exited'
NOTIFY_CUT_OFF = 'cut_off'

Transition = collections.namedtuple('Transition', ['state', 'effects'])


def _t(state, *effects):
    return Transition(state, frozenset(effects))


# Inputs every state but cut_off answers alike.
_COMMON = {
    CONNECTED: _t(WAITING),
    INIT: _t(ENABLING),
    EXIT: _t(EXITED, NOTIFY_EXITED),
    CLOSED: _t(WAITING),
    VIOLATION: _t(CUT_OFF, NOTIFY_CUT_OFF),
}

TRANSITIONS = {
    WAITING: dict(_COMMON, **{
        PAUSE: _t(PAUSED),
    }),
    ENABLING: dict(_COMMON, **{
        ANSWER_HEALTHY: _t(ENABLED, CLOSE_EPISODE),
        ANSWER_UNHEALTHY: _t(FAILED, REPORT_FAILURE),
        MISSED: _t(ENABLING),
        # A guest that registers and then never answers has hung.
        LOST: _t(FAILED, REPORT_FAILURE),
        PAUSE: _t(PAUSED),
    }),
    ENABLED: dict(_COMMON, **{
        ANSWER_HEALTHY: _t(ENABLED),
        ANSWER_UNHEALTHY: _t(FAILED, REPORT_FAILURE),
        MISSED: _t(ENABLED),
        LOST: _t(FAILED, REPORT_FAILURE),
        PAUSE: _t(PAUSED),
    }),
    FAILED: dict(_COMMON, **{
        ANSWER_HEALTHY: _t(ENABLED, CLOSE_EPISODE),
        ANSWER_UNHEALTHY: _t(FAILED, REPORT_FAILURE),
        MISSED: _t(FAILED),
        LOST: _t(FAILED, REPORT_FAILURE),
        PAUSE: _t(PAUSED),
    }),
    # Answers never reach a paused machine: the challenge they answer was
    # voided by the pause, so they are stale.
    PAUSED: dict(_COMMON, **{
        PAUSE: _t(PAUSED),
        RESUME: _t(ENABLING),
        RESUME_UNREGISTERED: _t(WAITING),
    }),
    # A pause changes nothing for a guest that left; it registers again
    # when it comes back.
    EXITED: dict(_COMMON, **{
        PAUSE: _t(EXITED),
        RESUME: _t(EXITED),
        RESUME_UNREGISTERED: _t(EXITED),
        EXIT: _t(EXITED),
    }),
    # Nothing the guest does counts any more; the connection is closed
    # and a later one starts a new session.
    CUT_OFF: {event: _t(CUT_OFF) for event in INPUTS},
}

#: States in which challenges go out (and misses count).
CHALLENGED = frozenset({ENABLING, ENABLED, FAILED})


class InvalidTransition(Exception):
    pass


def step(state, event):
    """The ``Transition`` for ``event`` in ``state``."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition('no heartbeat transition from %s on %s'
                                % (state, event)) from None
