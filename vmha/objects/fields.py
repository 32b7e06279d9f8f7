"""Field types of vmha's objects: oslo.versionedobjects' plus vmha enums."""

from oslo_versionedobjects import fields

# Re-exported so payload modules import fields from one place.
BooleanField = fields.BooleanField
DateTimeField = fields.DateTimeField
FloatField = fields.FloatField
IntegerField = fields.IntegerField
ListOfDictOfNullableStringsField = fields.ListOfDictOfNullableStringsField
ListOfObjectsField = fields.ListOfObjectsField
ObjectField = fields.ObjectField
StringField = fields.StringField
UUIDField = fields.UUIDField


class NotificationPriority(fields.Enum):
    # oslo.messaging's priorities, as Notifier methods name them.
    AUDIT = 'audit'
    CRITICAL = 'critical'
    DEBUG = 'debug'
    INFO = 'info'
    ERROR = 'error'
    SAMPLE = 'sample'
    WARN = 'warn'

    ALL = (AUDIT, CRITICAL, DEBUG, INFO, ERROR, SAMPLE, WARN)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class NotificationPriorityField(fields.BaseEnumField):
    AUTO_TYPE = NotificationPriority()


class FailureCause(fields.Enum):
    """Why vmha decided an instance failed."""

    QEMU_DIED = 'qemu_died'
    GUEST_PANIC = 'guest_panic'
    IO_ERROR = 'io_error'
    WATCHDOG = 'watchdog'
    CONTROL_ERROR = 'control_error'
    GUEST_HUNG = 'guest_hung'
    VANISHED = 'vanished'
    # libvirt says "crashed" but no guest panic was seen: QEMU was killed
    # while libvirtd was away, say, or the guest crashed without pvpanic.
    CRASHED = 'crashed'
    # The guest heartbeat: challenges unanswered, or the guest said it is
    # unhealthy (vmha.manager.heartbeat_monitor).
    HEARTBEAT_LOST = 'heartbeat_lost'
    GUEST_UNHEALTHY = 'guest_unhealthy'
    # A live migration failed after its switch to post-copy: the guest's
    # memory is split between the two hosts, it cannot run on either.
    POSTCOPY_FAILED = 'postcopy_failed'

    ALL = (QEMU_DIED, GUEST_PANIC, IO_ERROR, WATCHDOG, CONTROL_ERROR,
           GUEST_HUNG, VANISHED, CRASHED, HEARTBEAT_LOST, GUEST_UNHEALTHY,
           POSTCOPY_FAILED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class FailureCauseField(fields.BaseEnumField):
    AUTO_TYPE = FailureCause()


class GuestHealthState(fields.Enum):
    """States of the guest-agent monitor's per-VM machine."""

    DISCOVERY = 'discovery'
    HEALTHY = 'healthy'
    ERROR = 'error'
    REPORTED = 'reported'
    SUPPRESSED = 'suppressed'

    ALL = (DISCOVERY, HEALTHY, ERROR, REPORTED, SUPPRESSED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class GuestHealthStateField(fields.BaseEnumField):
    AUTO_TYPE = GuestHealthState()


class HeartbeatState(fields.Enum):
    """States of the guest heartbeat's per-VM machine
    (doc/heartbeat-protocol.md, "Timing and state")."""

    WAITING = 'waiting'
    ENABLING = 'enabling'
    ENABLED = 'enabled'
    FAILED = 'failed'
    PAUSED = 'paused'
    EXITED = 'exited'
    CUT_OFF = 'cut_off'
    # No channel connected (yet, or any more): vmha is connecting.
    DISCONNECTED = 'disconnected'

    ALL = (WAITING, ENABLING, ENABLED, FAILED, PAUSED, EXITED, CUT_OFF,
           DISCONNECTED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class HeartbeatStateField(fields.BaseEnumField):
    AUTO_TYPE = HeartbeatState()


class ConnectionState(fields.Enum):
    LOST = 'lost'
    RESTORED = 'restored'

    ALL = (LOST, RESTORED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class ConnectionStateField(fields.BaseEnumField):
    AUTO_TYPE = ConnectionState()


class MonitoringChangeSource(fields.Enum):
    """What changed an operator's monitoring choice for a domain."""

    RPC = 'rpc'  # set_monitoring over the RPC API
    METADATA = 'metadata'  # adopted from the domain's metadata (migrated)
    UNDEFINED = 'undefined'  # dropped: the domain was undefined here
    VANISHED = 'vanished'  # dropped: the audit found the domain gone

    ALL = (RPC, METADATA, UNDEFINED, VANISHED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class MonitoringChangeSourceField(fields.BaseEnumField):
    AUTO_TYPE = MonitoringChangeSource()


class ActionPhase(fields.Enum):
    """Phases of a lifecycle action (``vmha.manager.lifecycle_actions``)."""

    VOTE = 'vote'  # the guest may reject the action
    PRE = 'pre'  # the guest is told it will happen
    ACTION = 'action'  # the action itself
    POST = 'post'  # the guest is told it happened

    ALL = (VOTE, PRE, ACTION, POST)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class ActionPhaseField(fields.BaseEnumField):
    AUTO_TYPE = ActionPhase()


class ActionResult(fields.Enum):
    """What one phase of a lifecycle action came to."""

    ACCEPTED = 'accepted'
    REJECTED = 'rejected'
    DONE = 'done'
    FAILED = 'failed'
    SKIPPED = 'skipped'

    ALL = (ACCEPTED, REJECTED, DONE, FAILED, SKIPPED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class ActionResultField(fields.BaseEnumField):
    AUTO_TYPE = ActionResult()


class RecoveryStatus(fields.Enum):
    """What became of a failure vmha-masakari-bridge forwarded to Masakari.

    accepted: Masakari took it (202), its engine has not started on it;
    running: the engine is on it (Masakari says running, or error with a
    retry to come); finished, failed, ignored: Masakari's own outcomes;
    rejected: Masakari refused it (400, 409), so there is no recovery.
    """

    ACCEPTED = 'accepted'
    RUNNING = 'running'
    FINISHED = 'finished'
    FAILED = 'failed'
    IGNORED = 'ignored'
    REJECTED = 'rejected'

    ALL = (ACCEPTED, RUNNING, FINISHED, FAILED, IGNORED, REJECTED)
    #: Outcomes after which nothing changes any more.
    FINAL = (FINISHED, FAILED, IGNORED, REJECTED)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class RecoveryStatusField(fields.BaseEnumField):
    AUTO_TYPE = RecoveryStatus()


class MigrationPhase(fields.Enum):
    """Where a live migration is, as ``instance.migration`` says."""

    START = 'start'
    PROGRESS = 'progress'
    END = 'end'  # completed
    ERROR = 'error'  # failed, aborted or timed out

    ALL = (START, PROGRESS, END, ERROR)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class MigrationPhaseField(fields.BaseEnumField):
    AUTO_TYPE = MigrationPhase()


class MigrationDirection(fields.Enum):
    OUTGOING = 'outgoing'
    INCOMING = 'incoming'

    ALL = (OUTGOING, INCOMING)

    def __init__(self):
        super().__init__(valid_values=self.ALL)


class MigrationDirectionField(fields.BaseEnumField):
    AUTO_TYPE = MigrationDirection()
