"""Turn the raw tuples libvirt callbacks queue into typed events.

Callbacks run on libvirt's event-loop thread and only copy their arguments
into a ``RawEvent``; building objects and interpreting codes happens here,
on the dispatcher.  Codes vmha does not know produce events named
``UNKNOWN_<n>``; arguments of the wrong shape raise ``MalformedEvent``, which
the dispatcher logs with the domain and skips.
"""

import collections

from vmha.virt import event as ev

RawEvent = collections.namedtuple(
    'RawEvent', ['timestamp', 'monotonic', 'event_id', 'uuid', 'name', 'args'])

# Domain event ids the host subscribes to, in registration order.
SUBSCRIBED_EVENT_IDS = (
    ev.VIR_EVENT_ID_LIFECYCLE,
    ev.VIR_EVENT_ID_REBOOT,
    ev.VIR_EVENT_ID_WATCHDOG,
    ev.VIR_EVENT_ID_IO_ERROR,
    ev.VIR_EVENT_ID_IO_ERROR_REASON,
    ev.VIR_EVENT_ID_CONTROL_ERROR,
    ev.VIR_EVENT_ID_AGENT_LIFECYCLE,
    ev.VIR_EVENT_ID_JOB_COMPLETED,
    ev.VIR_EVENT_ID_MIGRATION_ITERATION,
    ev.VIR_EVENT_ID_DEVICE_REMOVED,
)


class MalformedEvent(ValueError):
    """A callback delivered arguments that do not fit its event id."""


def _transition(code, detail):
    if code == ev.VIR_LIFECYCLE_STARTED:
        if detail == 4:  # STARTED_WAKEUP: back from guest PM suspend
            return ev.EVENT_LIFECYCLE_RESUMED
        return ev.EVENT_LIFECYCLE_STARTED
    if code == ev.VIR_LIFECYCLE_SUSPENDED:
        if detail == 7:  # SUSPENDED_POSTCOPY
            return ev.EVENT_LIFECYCLE_POSTCOPY_STARTED
        if detail == 1:  # SUSPENDED_MIGRATED: paused at the end of migration
            return ev.EVENT_LIFECYCLE_MIGRATION_COMPLETED
        return ev.EVENT_LIFECYCLE_PAUSED
    return _SIMPLE_TRANSITIONS.get(code, ev.EVENT_LIFECYCLE_UNKNOWN)


_SIMPLE_TRANSITIONS = {
    ev.VIR_LIFECYCLE_DEFINED: ev.EVENT_LIFECYCLE_DEFINED,
    ev.VIR_LIFECYCLE_UNDEFINED: ev.EVENT_LIFECYCLE_UNDEFINED,
    ev.VIR_LIFECYCLE_RESUMED: ev.EVENT_LIFECYCLE_RESUMED,
    ev.VIR_LIFECYCLE_STOPPED: ev.EVENT_LIFECYCLE_STOPPED,
    ev.VIR_LIFECYCLE_SHUTDOWN: ev.EVENT_LIFECYCLE_SHUTTING_DOWN,
    ev.VIR_LIFECYCLE_PMSUSPENDED: ev.EVENT_LIFECYCLE_SUSPENDED,
    ev.VIR_LIFECYCLE_CRASHED: ev.EVENT_LIFECYCLE_CRASHED,
}


def _ints(raw, count):
    args = raw.args
    if len(args) < count or not all(isinstance(a, int)
                                     for a in args[:count]):
        raise MalformedEvent('%s expects %d integer argument(s), got %r'
                             % (ev.event_id_name(raw.event_id), count, args))
    return args[:count]


def _text(value):
    return value if isinstance(value, str) else str(value)


def build(raw):
    """The typed event for a RawEvent.  Raises MalformedEvent."""
    if not isinstance(raw.uuid, str) or not raw.uuid:
        raise MalformedEvent('event without a domain UUID: %r' % (raw,))
    common = dict(timestamp=raw.timestamp, monotonic=raw.monotonic)
    uuid, name, event_id, args = raw.uuid, raw.name, raw.event_id, raw.args
    if event_id == ev.VIR_EVENT_ID_LIFECYCLE:
        code, detail = _ints(raw, 2)
        transition = _transition(code, detail)
        cls = (ev.CrashedEvent if transition == ev.EVENT_LIFECYCLE_CRASHED
               else ev.LifecycleEvent)
        return cls(uuid, name, code, detail, transition, **common)
    if event_id == ev.VIR_EVENT_ID_REBOOT:
        return ev.RebootEvent(uuid, name, event_id, **common)
    if event_id == ev.VIR_EVENT_ID_WATCHDOG:
        (action,) = _ints(raw, 1)
        return ev.WatchdogEvent(uuid, name, event_id, action, **common)
    if event_id in (ev.VIR_EVENT_ID_IO_ERROR, ev.VIR_EVENT_ID_IO_ERROR_REASON):
        if len(args) < 3 or not isinstance(args[2], int):
            raise MalformedEvent('IO_ERROR expects (path, alias, action, '
                                 '[reason]), got %r' % (args,))
        reason = _text(args[3]) if len(args) > 3 else None
        return ev.IOErrorEvent(uuid, name, event_id, args[2], _text(args[0]),
                               _text(args[1]), reason, **common)
    if event_id == ev.VIR_EVENT_ID_CONTROL_ERROR:
        return ev.ControlErrorEvent(uuid, name, event_id, **common)
    if event_id == ev.VIR_EVENT_ID_AGENT_LIFECYCLE:
        state, reason = _ints(raw, 2)
        return ev.AgentLifecycleEvent(uuid, name, event_id, state, reason,
                                      **common)
    if event_id == ev.VIR_EVENT_ID_JOB_COMPLETED:
        params = args[0] if args else {}
        if not isinstance(params, dict):
            raise MalformedEvent('JOB_COMPLETED expects a dict, got %r'
                                 % (args,))
        return ev.JobCompletedEvent(uuid, name, params, **common)
    if event_id == ev.VIR_EVENT_ID_MIGRATION_ITERATION:
        (iteration,) = _ints(raw, 1)
        return ev.MigrationIterationEvent(uuid, name, iteration, **common)
    if event_id == ev.VIR_EVENT_ID_DEVICE_REMOVED:
        alias = _text(args[0]) if args else ''
        return ev.DeviceRemovedEvent(uuid, name, alias, **common)
    # An id vmha never subscribed to: keep it, readable, for the log.
    return ev.InstanceEvent(uuid, name, event_id, **common)
