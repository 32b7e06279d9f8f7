"""Corrective actions and their budget, shared by the monitors.

A monitor that finds a guest broken may act on it (``reset``: a hard
reset, ``restart``: destroy and start, ``stop``: destroy) instead of
reporting the failure, but only within bounds, or a guest that hangs
again at every boot would be reset for ever and never reach Masakari:

* at most ``budget`` actions per VM in any ``window`` seconds;
* none before the guest has been up ``min_uptime`` seconds since its
  last boot (a guest hanging while it boots needs a person).

Past either bound the failure is reported as if the action were
``notify``.

One policy serves every monitor of an agent (the guest-agent monitor and
the heartbeat), with one per-VM ledger of the actions taken: a reset the
heartbeat did counts against the guest-agent monitor's budget for the
same VM and the other way round, so two monitors watching one guest
cannot each spend a full budget on it.  Each monitor also keeps the
times in its own journal rows and hands them back at load
(``remember``), so the ledger outlives a restart.

The action itself is a blocking libvirt call: the monitor runs it on its
bounded native pool, off the dispatcher and off the hub, and hears of
its outcome like any other call.
"""

import collections
import time

Choice = collections.namedtuple('Choice', ['function', 'why', 'actions'])
Choice.__doc__ = """What to do with a broken guest: ``function(uuid)`` to
run (None: report the failure), why, as a phrase for the log and the
notification, and the VM's action times still inside the window (to keep,
with this one added when ``function`` is run)."""


class ActionPolicy:
    """:param driver: the virt driver (``reset_instance``,
        ``restart_instance``)
    :param budget: most actions per VM in ``window``
    :param window: seconds
    :param min_uptime: seconds a guest must be up before any action
    :param wall: wall clock (action times and boot times are wall times,
        kept in the journal across restarts)
    """

    def __init__(self, driver, budget=3, window=3600.0, min_uptime=300.0,
                 wall=time.time):
        self._functions = {'reset': driver.reset_instance,
                           'restart': driver.restart_instance,
                           'stop': driver.destroy_instance}
        self._budget = budget
        self._window = window
        self._min_uptime = min_uptime
        self._wall = wall
        self._ledger = {}  # uuid -> wall times of actions, any monitor

    def remember(self, uuid, actions):
        """Add the action times a monitor kept for ``uuid`` (at load)."""
        known = self._ledger.setdefault(uuid, [])
        known.extend(t for t in actions if t not in known)
        known.sort()

    def record(self, uuid, when):
        """An action on ``uuid`` runs at wall time ``when``."""
        self.remember(uuid, [when])

    def forget(self, uuid):
        """``uuid`` is gone (undefined): its ledger with it."""
        self._ledger.pop(uuid, None)

    def actions_of(self, uuid):
        """The action times on ``uuid`` still inside the window."""
        now = self._wall()
        return [t for t in self._ledger.get(uuid, ())
                if now - t < self._window]

    def choose(self, action, actions, booted_at, uuid=None):
        """The ``Choice`` for a guest whose configured action is
        ``action`` ('notify', 'reset', 'restart', 'stop'), that was acted
        on at the wall times ``actions`` (with ``uuid``: and whatever the
        shared ledger holds for it) and last booted at ``booted_at``."""
        if uuid is not None:
            self.remember(uuid, actions)
            actions = list(self._ledger[uuid])
        if action == 'notify':
            return Choice(None, 'failure reported', actions)
        now = self._wall()
        recent = [t for t in actions if now - t < self._window]
        uptime = now - (booted_at or now)
        if uptime < self._min_uptime:
            return Choice(None, 'no %s: up only %.0fs (action_min_uptime '
                          '%.0fs); failure reported'
                          % (action, uptime, self._min_uptime), recent)
        if len(recent) >= self._budget:
            return Choice(None, 'no %s: %d already in the last %.0fs '
                          '(action_budget); failure reported'
                          % (action, len(recent), self._window), recent)
        return Choice(self._functions[action], '%s %d of %d in %.0fs; no '
                      'failure reported' % (action, len(recent) + 1,
                                            self._budget, self._window),
                      recent)
