"""The heartbeat monitor's view of one VM: its channel and connection, its
protocol session, why it is paused, and the journal row it keeps.

Data only: the monitor (``heartbeat_monitor``) decides, the session
(``heartbeat_session``) speaks the protocol.
"""

from vmha.manager import heartbeat_store
from vmha.objects import fields

State = fields.HeartbeatState

# Why a session is paused, each until its own end (see ``Beating.pauses``).
VM_PAUSED = 'vm paused'  # until RESUMED
MIGRATING = 'migrating'  # until the migration ends or goes quiet
HOLD = 'action'  # an action voted through vmha: until re-registered
REBOOT = 'reboot'  # the guest rebooted: until re-registered
# Pauses that end when the guest registers again.
ENDED_BY_INIT = frozenset({HOLD, REBOOT})


class Beating:
    """One VM with (maybe) a heartbeat channel."""

    def __init__(self, uuid, name, wall):
        self.uuid = uuid
        self.name = name
        self.has_channel = None  # None until its XML was read
        self.path = None
        self.running = True
        # Connection: the hub key of the current connection (a new one per
        # attempt, so events of an older one are told apart) and the
        # session on it once connected.
        self.key = None
        self.attempts = 0
        self.session = None
        self.reconnect_at = None  # monotonic
        self.reconnect_delay = None
        self.cut_off_until = None
        # reason -> monotonic end, or None: until an event ends it.
        self.pauses = {}
        # How the session is paused: None, ('event', None) or ('init',
        # until) (see HeartbeatMonitor._sync_pause).
        self.session_paused = None
        self.planned = None  # the schedule entry's time
        self.challenge_sent_at = None
        self.answers_seen = None  # session.last_answer_at last looked at
        # action_id -> callable(Answer): ``ask`` callers waiting.
        self.asks = {}
        self.granted = None  # a copy of the session's, for other threads
        self.failed_from = None  # the state before the last failure
        self.acting = None  # (action, cause, evidence) while one runs
        self.acting_until = None  # monotonic: then it is overdue
        # What the journal keeps (``heartbeat_store.HeartbeatRow``).
        self.state = State.DISCONNECTED
        self.interval = None
        self.action = None
        self.registered_at = None
        self.last_answer_at = None
        self.misses = 0
        self.reason = None
        self.changed_at = wall
        self.cause = None  # the FailureCause of an open episode
        self.booted_at = wall
        self.actions = []

    def row(self):
        return heartbeat_store.HeartbeatRow(
            self.uuid, self.name, self.state, self.interval, self.action,
            self.registered_at, self.last_answer_at, self.misses,
            self.reason, self.changed_at, self.cause, self.booted_at,
            list(self.actions))

    def restore(self, row):
        for field in ('state', 'interval', 'action', 'registered_at',
                      'last_answer_at', 'misses', 'reason', 'changed_at',
                      'cause', 'booted_at', 'actions'):
            setattr(self, field, getattr(row, field))

    def status(self):
        """The row ``vmha-status`` and the metrics read."""
        return {
            'uuid': self.uuid, 'name': self.name,
            'channel': bool(self.has_channel), 'state': self.state,
            'interval': self.interval, 'action': self.action,
            'misses': self.misses, 'reason': self.reason,
            'last_answer_at': self.last_answer_at,
            'paused': sorted(self.pauses),
        }
