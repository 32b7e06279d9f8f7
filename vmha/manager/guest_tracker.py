"""The guest-agent monitor's view of one VM: its settings, the journal
row it keeps across restarts, and what lives only in memory (the ping
out, the counters for a verdict, what ``vmha-status`` shows).

Data only: the monitor (``guest_monitor``) decides, the machine
(``guest_states``) says which state follows which.
"""

import collections

from vmha.manager import guest_states as gs
from vmha.manager import guest_store

Settings = collections.namedtuple(
    'Settings', ['enabled', 'interval', 'timeout', 'failure_threshold',
                 'action'], defaults=[True, 5.0, 2.0, 2, 'notify'])
Settings.__doc__ = """One VM's guest-agent settings (``[guest_agent]``,
overridden per VM by ``_replace(**metadata settings)``)."""

# What the journal keeps of a Watched (``guest_store.GuestRow``).
_ROW_FIELDS = ('state', 'failures', 'verdict', 'changed_at', 'booted_at',
               'discovery_warned', 'actions')


class Watched:
    """The monitor's view of one VM (the journal row plus what lives only
    in memory: schedule, outstanding call, evidence)."""

    def __init__(self, uuid, name, settings, now, wall):
        self.uuid = uuid
        self.name = name
        self.settings = settings
        self.state = gs.DISCOVERY
        self.failures = 0
        self.verdict = None
        self.changed_at = wall
        self.booted_at = wall
        self.discovery_warned = False
        self.actions = []
        self.pingable = None  # None until its XML was read
        self.next_ping = now
        self.ping = None  # the outstanding ping job
        self.ping_counted = False
        self.last_ping_at = None
        self.last_outcome_at = None  # answered, failed or counted
        self.last_latency = None
        self.last_error = None
        self.channel_closed_at = None
        self.baseline = None  # (Counters, monotonic time)
        self.judging = None  # the job gathering evidence

    def row(self):
        return guest_store.GuestRow(
            self.uuid, self.name, self.state, self.failures, self.verdict,
            self.changed_at, self.booted_at, self.discovery_warned,
            self.actions)

    def restore(self, row):
        for field in _ROW_FIELDS:
            setattr(self, field, getattr(row, field))

    def forget_evidence(self):
        """A new episode starts: no failures, verdict or counters."""
        self.failures = 0
        self.verdict = None
        self.channel_closed_at = None
        self.baseline = None
        self.judging = None

    def status(self):
        """The row ``vmha-status`` and the metrics read; times are the
        monitor's monotonic clock."""
        return {
            'uuid': self.uuid, 'name': self.name, 'state': self.state,
            'pinged': bool(self.pingable), 'failures': self.failures,
            'verdict': self.verdict, 'last_ping_at': self.last_ping_at,
            'last_outcome_at': self.last_outcome_at,
            'last_ping_latency': self.last_latency,
            'last_error': self.last_error,
        }
