"""Hypervisor events as vmha's monitors see them.

``Event`` -> ``HostEvent`` (the hypervisor connection) and ``InstanceEvent``
(one domain) -> ``LifecycleEvent`` (a power-state transition), plus typed
instance events for reboot, watchdog, I/O error, control error, guest-agent
lifecycle, job completion, migration iteration and device removal.

Every instance event carries the libvirt numbers it came from (event id,
event code, detail code) and their readable names.  The numbers are libvirt's
stable ABI, so the names table below needs no libvirt import; the strings are
libvirt's own names, upper case: the event id's (``event_name`` =
``LIFECYCLE``) and the code's with its detail (``vir_domain_event`` =
``STOPPED_FAILED``).  A code vmha does not know becomes ``UNKNOWN_<n>``
instead of an error.

Longer than most modules (about 460 lines) because it holds libvirt's
whole vocabulary, names and state tables, next to the classes that use
it; splitting the tables from the classes would only add an import.
"""

import time

from vmha import timestamps

# Lifecycle transitions (what happened to the power state).
EVENT_LIFECYCLE_STARTED = 0
EVENT_LIFECYCLE_STOPPED = 1
EVENT_LIFECYCLE_PAUSED = 2
EVENT_LIFECYCLE_RESUMED = 3
EVENT_LIFECYCLE_SUSPENDED = 4
EVENT_LIFECYCLE_POSTCOPY_STARTED = 5
EVENT_LIFECYCLE_MIGRATION_COMPLETED = 6
EVENT_LIFECYCLE_SHUTTING_DOWN = 7
EVENT_LIFECYCLE_CRASHED = 8
EVENT_LIFECYCLE_DEFINED = 9
EVENT_LIFECYCLE_UNDEFINED = 10
EVENT_LIFECYCLE_UNKNOWN = 11

TRANSITION_NAMES = {
    EVENT_LIFECYCLE_STARTED: 'STARTED',
    EVENT_LIFECYCLE_STOPPED: 'STOPPED',
    EVENT_LIFECYCLE_PAUSED: 'PAUSED',
    EVENT_LIFECYCLE_RESUMED: 'RESUMED',
    EVENT_LIFECYCLE_SUSPENDED: 'SUSPENDED',
    EVENT_LIFECYCLE_POSTCOPY_STARTED: 'POSTCOPY_STARTED',
    EVENT_LIFECYCLE_MIGRATION_COMPLETED: 'MIGRATION_COMPLETED',
    EVENT_LIFECYCLE_SHUTTING_DOWN: 'SHUTTING_DOWN',
    EVENT_LIFECYCLE_CRASHED: 'CRASHED',
    EVENT_LIFECYCLE_DEFINED: 'DEFINED',
    EVENT_LIFECYCLE_UNDEFINED: 'UNDEFINED',
    EVENT_LIFECYCLE_UNKNOWN: 'UNKNOWN',
}

# Transitions that change the domain's configuration, not its power state.
CONFIG_TRANSITIONS = frozenset({EVENT_LIFECYCLE_DEFINED,
                                EVENT_LIFECYCLE_UNDEFINED})

# libvirt domain event ids (virDomainEventID).
VIR_EVENT_ID_LIFECYCLE = 0
VIR_EVENT_ID_REBOOT = 1
VIR_EVENT_ID_WATCHDOG = 3
VIR_EVENT_ID_IO_ERROR = 4
VIR_EVENT_ID_IO_ERROR_REASON = 6
VIR_EVENT_ID_CONTROL_ERROR = 7
VIR_EVENT_ID_DEVICE_REMOVED = 15
VIR_EVENT_ID_AGENT_LIFECYCLE = 18
VIR_EVENT_ID_MIGRATION_ITERATION = 20
VIR_EVENT_ID_JOB_COMPLETED = 21

EVENT_ID_NAMES = {
    VIR_EVENT_ID_LIFECYCLE: 'LIFECYCLE',
    VIR_EVENT_ID_REBOOT: 'REBOOT',
    VIR_EVENT_ID_WATCHDOG: 'WATCHDOG',
    VIR_EVENT_ID_IO_ERROR: 'IO_ERROR',
    VIR_EVENT_ID_IO_ERROR_REASON: 'IO_ERROR_REASON',
    VIR_EVENT_ID_CONTROL_ERROR: 'CONTROL_ERROR',
    VIR_EVENT_ID_DEVICE_REMOVED: 'DEVICE_REMOVED',
    VIR_EVENT_ID_AGENT_LIFECYCLE: 'AGENT_LIFECYCLE',
    VIR_EVENT_ID_MIGRATION_ITERATION: 'MIGRATION_ITERATION',
    VIR_EVENT_ID_JOB_COMPLETED: 'JOB_COMPLETED',
}

# libvirt lifecycle event codes (virDomainEventType) and their details.
VIR_LIFECYCLE_DEFINED = 0
VIR_LIFECYCLE_UNDEFINED = 1
VIR_LIFECYCLE_STARTED = 2
VIR_LIFECYCLE_SUSPENDED = 3
VIR_LIFECYCLE_RESUMED = 4
VIR_LIFECYCLE_STOPPED = 5
VIR_LIFECYCLE_SHUTDOWN = 6
VIR_LIFECYCLE_PMSUSPENDED = 7
VIR_LIFECYCLE_CRASHED = 8

LIFECYCLE_NAMES = {
    VIR_LIFECYCLE_DEFINED: 'DEFINED',
    VIR_LIFECYCLE_UNDEFINED: 'UNDEFINED',
    VIR_LIFECYCLE_STARTED: 'STARTED',
    VIR_LIFECYCLE_SUSPENDED: 'SUSPENDED',
    VIR_LIFECYCLE_RESUMED: 'RESUMED',
    VIR_LIFECYCLE_STOPPED: 'STOPPED',
    VIR_LIFECYCLE_SHUTDOWN: 'SHUTDOWN',
    VIR_LIFECYCLE_PMSUSPENDED: 'PMSUSPENDED',
    VIR_LIFECYCLE_CRASHED: 'CRASHED',
}

# Detail names per lifecycle code, indexed by the libvirt detail number.
LIFECYCLE_DETAIL_NAMES = {
    VIR_LIFECYCLE_DEFINED: ('ADDED', 'UPDATED', 'RENAMED', 'FROM_SNAPSHOT'),
    VIR_LIFECYCLE_UNDEFINED: ('REMOVED', 'RENAMED'),
    VIR_LIFECYCLE_STARTED: ('BOOTED', 'MIGRATED', 'RESTORED',
                            'FROM_SNAPSHOT', 'WAKEUP'),
    VIR_LIFECYCLE_SUSPENDED: ('PAUSED', 'MIGRATED', 'IOERROR', 'WATCHDOG',
                              'RESTORED', 'FROM_SNAPSHOT', 'API_ERROR',
                              'POSTCOPY', 'POSTCOPY_FAILED'),
    VIR_LIFECYCLE_RESUMED: ('UNPAUSED', 'MIGRATED', 'FROM_SNAPSHOT',
                            'POSTCOPY', 'POSTCOPY_FAILED'),
    VIR_LIFECYCLE_STOPPED: ('SHUTDOWN', 'DESTROYED', 'CRASHED', 'MIGRATED',
                            'SAVED', 'FAILED', 'FROM_SNAPSHOT'),
    VIR_LIFECYCLE_SHUTDOWN: ('FINISHED', 'GUEST', 'HOST'),
    VIR_LIFECYCLE_PMSUSPENDED: ('MEMORY', 'DISK'),
    VIR_LIFECYCLE_CRASHED: ('PANICKED', 'CRASHLOADED'),
}

# The domain state (libvirt's ``<STATE>_<REASON>``, as ``dom.state()`` and
# the audit name it) a lifecycle event leaves the domain in, so that what
# an event and what a listing say about one domain compare equal.  An
# event missing here falls back to ``_STATE_OF_LIFECYCLE`` + '_UNKNOWN'.
STATE_REASON_AFTER = {
    'STARTED_BOOTED': 'RUNNING_BOOTED',
    # An incoming migration starts the domain paused until it resumes.
    'STARTED_MIGRATED': 'PAUSED_MIGRATION',
    'STARTED_RESTORED': 'RUNNING_RESTORED',
    'STARTED_FROM_SNAPSHOT': 'RUNNING_FROM_SNAPSHOT',
    'STARTED_WAKEUP': 'RUNNING_WAKEUP',
    'SUSPENDED_PAUSED': 'PAUSED_USER',
    'SUSPENDED_MIGRATED': 'PAUSED_MIGRATION',
    'SUSPENDED_IOERROR': 'PAUSED_IOERROR',
    'SUSPENDED_WATCHDOG': 'PAUSED_WATCHDOG',
    'SUSPENDED_RESTORED': 'PAUSED_USER',
    'SUSPENDED_FROM_SNAPSHOT': 'PAUSED_FROM_SNAPSHOT',
    'SUSPENDED_POSTCOPY': 'PAUSED_POSTCOPY',
    'SUSPENDED_POSTCOPY_FAILED': 'PAUSED_POSTCOPY_FAILED',
    'RESUMED_UNPAUSED': 'RUNNING_UNPAUSED',
    'RESUMED_MIGRATED': 'RUNNING_MIGRATED',
    'RESUMED_FROM_SNAPSHOT': 'RUNNING_FROM_SNAPSHOT',
    'RESUMED_POSTCOPY': 'RUNNING_POSTCOPY',
    'RESUMED_POSTCOPY_FAILED': 'RUNNING_POSTCOPY_FAILED',
    'STOPPED_SHUTDOWN': 'SHUTOFF_SHUTDOWN',
    'STOPPED_DESTROYED': 'SHUTOFF_DESTROYED',
    'STOPPED_CRASHED': 'SHUTOFF_CRASHED',
    'STOPPED_MIGRATED': 'SHUTOFF_MIGRATED',
    'STOPPED_SAVED': 'SHUTOFF_SAVED',
    'STOPPED_FAILED': 'SHUTOFF_FAILED',
    'STOPPED_FROM_SNAPSHOT': 'SHUTOFF_FROM_SNAPSHOT',
    'CRASHED_PANICKED': 'CRASHED_PANICKED',
    # A crash kernel (kdump) took over: the domain goes on running.
    'CRASHED_CRASHLOADED': 'RUNNING_CRASHED',
}
_STATE_OF_LIFECYCLE = {
    VIR_LIFECYCLE_DEFINED: 'SHUTOFF',
    VIR_LIFECYCLE_UNDEFINED: 'SHUTOFF',
    VIR_LIFECYCLE_STARTED: 'RUNNING',
    VIR_LIFECYCLE_SUSPENDED: 'PAUSED',
    VIR_LIFECYCLE_RESUMED: 'RUNNING',
    VIR_LIFECYCLE_STOPPED: 'SHUTOFF',
    VIR_LIFECYCLE_SHUTDOWN: 'SHUTDOWN',
    VIR_LIFECYCLE_PMSUSPENDED: 'PMSUSPENDED',
    VIR_LIFECYCLE_CRASHED: 'CRASHED',
}


def state_reason_after(code, detail):
    """The ``<STATE>_<REASON>`` a lifecycle event leaves its domain in:
    'SHUTOFF_FAILED' for STOPPED/FAILED."""
    reason = STATE_REASON_AFTER.get(lifecycle_name(code, detail))
    if reason is None:
        reason = '%s_UNKNOWN' % _STATE_OF_LIFECYCLE.get(code, 'NOSTATE')
    return reason


# STOPPED details that are never part of a reboot: delivered at once, so a
# dead QEMU or a panic is reported without the STOPPED delay.
STOPPED_FAILED = 5
STOPPED_CRASHED = 2
UNDELAYED_STOPPED_DETAILS = frozenset({STOPPED_FAILED, STOPPED_CRASHED})

WATCHDOG_ACTION_NAMES = ('NONE', 'PAUSE', 'RESET', 'POWEROFF', 'SHUTDOWN',
                         'DEBUG', 'INJECTNMI')
IO_ERROR_ACTION_NAMES = ('NONE', 'PAUSE', 'REPORT')
AGENT_STATE_CONNECTED = 1
AGENT_STATE_DISCONNECTED = 2
AGENT_STATE_NAMES = {AGENT_STATE_CONNECTED: 'CONNECTED',
                     AGENT_STATE_DISCONNECTED: 'DISCONNECTED'}
AGENT_REASON_NAMES = ('UNKNOWN', 'DOMAIN_STARTED', 'CHANNEL')

# The detail name of events that have no detail of their own.
NO_DETAIL = 'UNKNOWN'


def unknown(code):
    """The readable name of a code vmha has no name for."""
    return 'UNKNOWN_%s' % code


def name_in(names, code):
    """Look ``code`` up in a tuple or dict of names, never failing."""
    try:
        if isinstance(names, dict):
            return names[code]
        if code < 0:
            raise IndexError(code)
        return names[code]
    except (KeyError, IndexError, TypeError):
        return unknown(code)


def event_id_name(event_id):
    """'LIFECYCLE', 'WATCHDOG', ... or 'UNKNOWN_<id>'."""
    return name_in(EVENT_ID_NAMES, event_id)


def lifecycle_name(code, detail):
    """The ``<EVENT>_<DETAIL>`` name of a lifecycle code and detail:
    'STOPPED_FAILED'."""
    if code not in LIFECYCLE_NAMES:
        return unknown(code)
    return '%s_%s' % (LIFECYCLE_NAMES[code],
                      name_in(LIFECYCLE_DETAIL_NAMES[code], detail))


class Event:
    """Something the hypervisor told us, stamped when it was received.

    ``timestamp`` is wall-clock seconds since the epoch (for people and
    notifications); ``monotonic`` is ``time.monotonic()`` at the same moment
    (for delays and latency measurements).
    """

    def __init__(self, timestamp=None, monotonic=None):
        self.timestamp = time.time() if timestamp is None else timestamp
        self.monotonic = time.monotonic() if monotonic is None else monotonic

    @property
    def time_iso(self):
        return timestamps.isotime(self.timestamp, 'milliseconds')

    def describe(self):
        """One readable line, without the time."""
        return self.__class__.__name__

    def __str__(self):
        return '%s %s' % (self.time_iso, self.describe())

    def __repr__(self):
        return '<%s>' % self


class HostEvent(Event):
    """An event about the hypervisor connection itself."""

    name = 'HOST'


class ConnectionLostEvent(HostEvent):
    """The connection to the hypervisor closed; events may be missed."""

    name = 'CONNECTION_LOST'

    def __init__(self, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def describe(self):
        return '%s reason=%s' % (self.name, self.reason)


class ConnectionRestoredEvent(HostEvent):
    """A new connection is open and every callback is registered again.

    Listeners must re-read what they care about: anything may have
    happened while the connection was down.
    """

    name = 'CONNECTION_RESTORED'

    def __init__(self, attempts, outage_seconds, **kwargs):
        super().__init__(**kwargs)
        self.attempts = attempts
        self.outage_seconds = outage_seconds

    def describe(self):
        return '%s after %.1fs, %d attempt(s)' % (
            self.name, self.outage_seconds, self.attempts)


class ResyncRequiredEvent(HostEvent):
    """Events were lost (queue overflow): listeners must re-read state."""

    name = 'RESYNC_REQUIRED'

    def __init__(self, dropped, **kwargs):
        super().__init__(**kwargs)
        self.dropped = dropped

    def describe(self):
        return '%s %d event(s) dropped' % (self.name, self.dropped)


class InstanceEvent(Event):
    """An event about one domain.

    :param uuid: the domain UUID (the instance UUID under nova)
    :param name: the domain name
    :param event_id: libvirt event id (0 = lifecycle, 3 = watchdog, ...)
    :param code: the event's primary code (lifecycle type, watchdog
        action, agent state, ...) or None
    :param detail: the event's secondary code (lifecycle detail, agent
        reason, ...) or None
    """

    def __init__(self, uuid, name, event_id, code=None, detail=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.uuid = uuid
        self.name = name
        self.event_id = event_id
        self.code = code
        self.detail = detail

    @property
    def event_name(self):
        """The event id's name: 'LIFECYCLE', 'IO_ERROR', ..."""
        return event_id_name(self.event_id)

    @property
    def vir_domain_event(self):
        """What happened, by name: 'STOPPED_FAILED', ..."""
        return NO_DETAIL

    def describe(self):
        return '%-15s %-24s %s (%s)' % (self.event_name,
                                        self.vir_domain_event,
                                        self.name, self.uuid)


class LifecycleEvent(InstanceEvent):
    """A power-state transition of a domain."""

    def __init__(self, uuid, name, code, detail, transition, **kwargs):
        super().__init__(uuid, name, VIR_EVENT_ID_LIFECYCLE, code, detail,
                         **kwargs)
        self.transition = transition

    @property
    def transition_name(self):
        return TRANSITION_NAMES[self.transition]

    @property
    def vir_domain_event(self):
        return lifecycle_name(self.code, self.detail)

    @property
    def state_reason(self):
        """The domain state this event leaves it in ('SHUTOFF_FAILED')."""
        return state_reason_after(self.code, self.detail)


class CrashedEvent(LifecycleEvent):
    """The guest crashed (guest panic reported through pvpanic)."""


class RebootEvent(InstanceEvent):
    """The guest rebooted (the QEMU process stays)."""


class WatchdogEvent(InstanceEvent):
    """The guest's watchdog fired; ``code`` is the action libvirt took."""

    @property
    def action(self):
        return name_in(WATCHDOG_ACTION_NAMES, self.code)

    @property
    def vir_domain_event(self):
        return 'WATCHDOG_%s' % self.action


class IOErrorEvent(InstanceEvent):
    """A disk I/O error; ``code`` is the action libvirt took.

    Both IO_ERROR and IO_ERROR_REASON arrive as this class; the latter has
    ``reason`` set ('enospc', ...).  libvirt sends both for one error.
    """

    def __init__(self, uuid, name, event_id, action, src_path, dev_alias,
                 reason=None, **kwargs):
        super().__init__(uuid, name, event_id, action, None, **kwargs)
        self.src_path = src_path
        self.dev_alias = dev_alias
        self.reason = reason

    @property
    def action(self):
        return name_in(IO_ERROR_ACTION_NAMES, self.code)

    @property
    def vir_domain_event(self):
        return 'IO_ERROR_%s' % self.action

    def describe(self):
        text = '%s device=%s path=%s' % (super().describe(), self.dev_alias,
                                         self.src_path)
        if self.reason:
            text += ' reason=%s' % self.reason
        return text


class ControlErrorEvent(InstanceEvent):
    """libvirt lost control of the domain's QEMU monitor."""


class AgentLifecycleEvent(InstanceEvent):
    """The QEMU guest agent channel connected or disconnected."""

    @property
    def connected(self):
        return self.code == AGENT_STATE_CONNECTED

    @property
    def state(self):
        return name_in(AGENT_STATE_NAMES, self.code)

    @property
    def reason(self):
        return name_in(AGENT_REASON_NAMES, self.detail)

    @property
    def vir_domain_event(self):
        return '%s_%s' % (self.state, self.reason)


class JobCompletedEvent(InstanceEvent):
    """A domain job (migration, save, dump) finished; ``params`` are its
    statistics as libvirt reports them."""

    def __init__(self, uuid, name, params, **kwargs):
        super().__init__(uuid, name, VIR_EVENT_ID_JOB_COMPLETED, **kwargs)
        self.params = dict(params)


class MigrationIterationEvent(InstanceEvent):
    """A live migration started another pass over guest memory."""

    def __init__(self, uuid, name, iteration, **kwargs):
        super().__init__(uuid, name, VIR_EVENT_ID_MIGRATION_ITERATION,
                         iteration, **kwargs)
        self.iteration = iteration


class DeviceRemovedEvent(InstanceEvent):
    """A device finished detaching from the guest."""

    def __init__(self, uuid, name, dev_alias, **kwargs):
        super().__init__(uuid, name, VIR_EVENT_ID_DEVICE_REMOVED, **kwargs)
        self.dev_alias = dev_alias
