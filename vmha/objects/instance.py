"""Notifications about one instance: lifecycle transitions and failures."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class InstanceLifecyclePayload(notification.NotificationPayloadBase):
    """A power-state transition, operator-made or not."""

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(),
        'host': fields.StringField(),
        'power_state': fields.StringField(),
        'transition': fields.StringField(),
        # libvirt's names, as Masakari spells them: 'LIFECYCLE',
        # 'STOPPED_DESTROYED'.
        'event': fields.StringField(),
        'vir_domain_event': fields.StringField(),
        'occurred_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class InstanceLifecycleNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceLifecyclePayload'),
    }


@base.VmhaObjectRegistry.register
class InstanceFailurePayload(notification.NotificationPayloadBase):
    """vmha decided the instance failed.

    ``event`` and ``vir_domain_event`` are exactly what Masakari's engine
    acts on (e.g. 'LIFECYCLE' / 'STOPPED_FAILED'); ``cause`` and
    ``evidence`` keep the true story (a guest panic is reported to
    Masakari as a failed stop, since that is what it recovers).

    ``episode`` names the failure episode a recoverable failure opened
    (None for one Masakari does not act on): a resend of the notification
    carries the same id, a new failure of the same instance a new one.
    ``suppressed`` counts the repeats of this instance's (non-recoverable)
    cause left unsent since the last one sent.
    """

    # Version 1.0: Initial version
    # Version 1.1: episode; cause 'crashed' (crashed, cause unknown)
    # Version 1.2: suppressed
    # Version 1.3: causes 'heartbeat_lost', 'guest_unhealthy' (the guest
    #              heartbeat)
    # Version 1.4: cause 'postcopy_failed' (a live migration lost the VM)
    VERSION = '1.4'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(),
        'host': fields.StringField(),
        'event': fields.StringField(),
        'vir_domain_event': fields.StringField(),
        'cause': fields.FailureCauseField(),
        'evidence': fields.StringField(nullable=True),
        'detected_at': fields.DateTimeField(),
        'episode': fields.StringField(nullable=True),
        'suppressed': fields.IntegerField(),
    }


@base.VmhaObjectRegistry.register
class InstanceFailureNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceFailurePayload'),
    }


def failure_notification(host, uuid, name, event, vir_domain_event, cause,
                         detected_at, evidence=None, episode=None,
                         suppressed=0):
    """An ``instance.failure`` notification at ERROR priority."""
    return InstanceFailureNotification(
        priority=fields.NotificationPriority.ERROR,
        event_type=notification.EventType('instance', 'failure'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceFailurePayload(
            uuid=uuid, name=name, host=host, event=event,
            vir_domain_event=vir_domain_event, cause=cause,
            evidence=evidence, detected_at=detected_at, episode=episode,
            suppressed=suppressed))


def lifecycle_notification(host, uuid, name, power_state, transition, event,
                           vir_domain_event, occurred_at):
    """An ``instance.lifecycle`` notification at INFO priority."""
    return InstanceLifecycleNotification(
        priority=fields.NotificationPriority.INFO,
        event_type=notification.EventType('instance', 'lifecycle'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceLifecyclePayload(
            uuid=uuid, name=name, host=host, power_state=power_state,
            transition=transition, event=event,
            vir_domain_event=vir_domain_event, occurred_at=occurred_at))
