"""The guest-agent monitor's machine for one VM: a declared table.

States (``vmha.objects.fields.GuestHealthState``):

* ``discovery``: booted (or resumed, rebooted, first seen); waiting for
  the agent's first answer.  Failed pings here are not failures: the
  agent may not have started yet (see ``[guest_agent] discovery_timeout``).
* ``healthy``: the last ping was answered.
* ``error``: pings fail; ``failures`` counts them.  At
  ``failure_threshold`` the monitor gathers host-side evidence and feeds
  the verdict (``hung`` or ``agent_down``) back into the table.
* ``reported``: the verdict went out, once; pings go on.
* ``suppressed``: paused, shutting down, crashed, migrating or being
  saved: no pings, never reported.

Inputs: ``ping_ok``, ``ping_failed``, ``hung``, ``agent_down``,
``suppress`` and ``reset`` (a boot, resume or reboot).  A pair missing
from the table is a bug, not a guest's doing: ``next_state`` raises.
"""

from vmha.objects import fields

S = fields.GuestHealthState
DISCOVERY, HEALTHY, ERROR, REPORTED, SUPPRESSED = (
    S.DISCOVERY, S.HEALTHY, S.ERROR, S.REPORTED, S.SUPPRESSED)

PING_OK = 'ping_ok'
PING_FAILED = 'ping_failed'
HUNG = 'hung'
AGENT_DOWN = 'agent_down'
SUPPRESS = 'suppress'
RESET = 'reset'

TRANSITIONS = {
    DISCOVERY: {PING_OK: HEALTHY, PING_FAILED: DISCOVERY,
                SUPPRESS: SUPPRESSED, RESET: DISCOVERY},
    HEALTHY: {PING_OK: HEALTHY, PING_FAILED: ERROR,
              SUPPRESS: SUPPRESSED, RESET: DISCOVERY},
    ERROR: {PING_OK: HEALTHY, PING_FAILED: ERROR, HUNG: REPORTED,
            AGENT_DOWN: REPORTED, SUPPRESS: SUPPRESSED, RESET: DISCOVERY},
    # A warning (agent down) may still turn into a failure (hung).
    REPORTED: {PING_OK: HEALTHY, PING_FAILED: REPORTED, HUNG: REPORTED,
               AGENT_DOWN: REPORTED, SUPPRESS: SUPPRESSED,
               RESET: DISCOVERY},
    # Late ping results of a suppressed VM change nothing.
    SUPPRESSED: {PING_OK: SUPPRESSED, PING_FAILED: SUPPRESSED,
                 SUPPRESS: SUPPRESSED, RESET: DISCOVERY},
}

# States in which the VM is pinged.
PINGED = frozenset({DISCOVERY, HEALTHY, ERROR, REPORTED})


class InvalidTransition(Exception):
    pass


def next_state(state, event):
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition('no transition from %s on %s'
                                % (state, event))
