"""Which events and states are failures, and how each is reported.

Pure functions, no I/O: ``from_event`` looks at one event, ``from_state``
at a domain's current state during the audit.  A ``Verdict`` says whether
the domain failed, why (``cause``), and the (event, vir_domain_event)
pair the failure notification carries.  Failures Masakari should recover
use the three pairs its engine acts on; failures it should not touch
(a watchdog that already reset the guest, a control error on a domain
that still runs) keep their own libvirt names, which Masakari ignores.

Operator and nova actions (shutdown, destroy, pause, save, migration)
are never failures: they are only recorded as lifecycle notifications.
"""

import collections

from vmha.objects import fields
from vmha.virt import event as ev
from vmha.virt import power_state

# The pairs of a failure that calls for recovery.  They are the three
# Masakari's engine acts on (``vmha.masakari.translate.RECOVERABLE``, a
# unit test keeps the two equal); policy names them here and does not
# import the delivery side.
QEMU_DIED = ('LIFECYCLE', 'STOPPED_FAILED')
IO_ERROR = ('IO_ERROR', 'IO_ERROR_REPORT')
GUEST_HUNG = ('QEMU_GUEST_AGENT_ERROR', 'STOPPED_FAILED')
RECOVERY = frozenset([QEMU_DIED, IO_ERROR, GUEST_HUNG])

Verdict = collections.namedtuple(
    'Verdict', ['cause', 'event', 'vir_domain_event', 'evidence',
                'needs_stopped'])
Verdict.__doc__ = """A failure decision.

``needs_stopped``: the decision only holds if the domain is not running
again by the time it is sent (a crash that nova already restarted is
history, not a failure to recover).
"""

Cause = fields.FailureCause


def recoverable(verdict):
    """True if this verdict's pair calls for recovery (Masakari acts on
    it)."""
    return (verdict.event, verdict.vir_domain_event) in RECOVERY


def _verdict(cause, pair, evidence, needs_stopped=False):
    return Verdict(cause, pair[0], pair[1], evidence, needs_stopped)


def from_event(event):
    """The Verdict for a dispatched event, or None if it is no failure."""
    evidence = 'libvirt event %s %s' % (event.event_name,
                                        event.vir_domain_event)
    if isinstance(event, ev.CrashedEvent):
        if event.vir_domain_event != 'CRASHED_PANICKED':
            # CRASHLOADED: the guest's own crash kernel took over (kdump);
            # stopping it now would lose the dump.
            return None
        # With on_crash=restart the guest is back at once: no failure.
        return _verdict(Cause.GUEST_PANIC, QEMU_DIED, evidence,
                        needs_stopped=True)
    if isinstance(event, ev.LifecycleEvent):
        return _LIFECYCLE_FAILURES.get(event.vir_domain_event, _none)(
            evidence)
    if isinstance(event, ev.IOErrorEvent):
        if event.action in ('PAUSE', 'REPORT'):
            return _verdict(Cause.IO_ERROR, IO_ERROR,
                            '%s on %s (%s)%s' % (
                                evidence, event.dev_alias, event.src_path,
                                ' reason %s' % event.reason
                                if event.reason else ''))
        return None  # the hypervisor ignored the error: the guest runs on
    if isinstance(event, ev.WatchdogEvent):
        if event.action in ('PAUSE', 'POWEROFF', 'SHUTDOWN'):
            # The guest is stuck or off until someone recovers it.
            return _verdict(Cause.WATCHDOG, QEMU_DIED, evidence)
        # RESET already restarted the guest; NONE/DEBUG/INJECTNMI leave
        # it to the guest: worth knowing, not for Masakari to act on.
        return _verdict(Cause.WATCHDOG,
                        (event.event_name, event.vir_domain_event), evidence)
    if isinstance(event, ev.ControlErrorEvent):
        # Decided by the domain's state: see from_control_error.
        return _verdict(Cause.CONTROL_ERROR,
                        (event.event_name, event.vir_domain_event), evidence)
    return None


def _none(evidence):
    return None


_LIFECYCLE_FAILURES = {
    'STOPPED_FAILED': lambda evidence: _verdict(
        Cause.QEMU_DIED, QEMU_DIED, evidence, needs_stopped=True),
    # With pvpanic, CRASHED_PANICKED came first and opened a guest_panic
    # episode; alone, this says only that the domain crashed.
    'STOPPED_CRASHED': lambda evidence: _verdict(
        Cause.CRASHED, QEMU_DIED, evidence, needs_stopped=True),
    'SUSPENDED_IOERROR': lambda evidence: _verdict(
        Cause.IO_ERROR, IO_ERROR, evidence),
    'SUSPENDED_WATCHDOG': lambda evidence: _verdict(
        Cause.WATCHDOG, QEMU_DIED, evidence),
}


def from_control_error(verdict, info):
    """A control error is a death when the domain no longer runs.

    Like a STOPPED_FAILED, the death holds only while the domain stays
    down (``needs_stopped``), and it is none for an incoming live
    migration that never resumed here: when the source aborts one, the
    destination's QEMU closes its monitor and libvirt may send the
    control error before it stops the domain."""
    if info is None or info.power_state != power_state.RUNNING:
        state = info.state_reason if info else 'gone'
        return _verdict(Cause.QEMU_DIED, QEMU_DIED,
                        '%s; domain now %s' % (verdict.evidence, state),
                        needs_stopped=True)
    return verdict


# Domain states (as the audit reads them) that mean a failure.
_STATE_FAILURES = {
    'SHUTOFF_FAILED': (Cause.QEMU_DIED, QEMU_DIED),
    # libvirtd found the QEMU process gone when it started again.
    'SHUTOFF_DAEMON': (Cause.QEMU_DIED, QEMU_DIED),
    # Shut off "crashed" is not known to be a panic: a QEMU killed while
    # libvirtd restarted ends so too, with no CRASHED event before it.
    'SHUTOFF_CRASHED': (Cause.CRASHED, QEMU_DIED),
    'CRASHED_PANICKED': (Cause.GUEST_PANIC, QEMU_DIED),
    'CRASHED_UNKNOWN': (Cause.CRASHED, QEMU_DIED),
    'PAUSED_CRASHED': (Cause.GUEST_PANIC, QEMU_DIED),
    'PAUSED_IOERROR': (Cause.IO_ERROR, IO_ERROR),
    'PAUSED_WATCHDOG': (Cause.WATCHDOG, QEMU_DIED),
}

# What vmha reports for a running domain that vanished unseen.
VANISHED = ('LIFECYCLE', 'UNDEFINED_UNSEEN')


def from_state(state_reason):
    """The Verdict for a domain found in ``state_reason``, or None."""
    failure = _STATE_FAILURES.get(state_reason)
    if failure is None:
        return None
    cause, pair = failure
    return _verdict(cause, pair, 'power-state audit: domain is %s'
                    % state_reason)


def vanished():
    """A domain the journal knew running is gone: nobody saw it stop."""
    return _verdict(Cause.VANISHED, VANISHED,
                    'power-state audit: the domain no longer exists')


def postcopy_failed(evidence):
    """A live migration failed after its switch to post-copy: the guest's
    memory is split between the hosts and it runs on neither, so it is
    reported with the pair Masakari recovers (a stopped, failed VM)."""
    return _verdict(Cause.POSTCOPY_FAILED, QEMU_DIED, evidence)
