"""Notifications of the migration monitor: a live migration started,
progressed, ended or failed (``instance.migration``)."""

from vmha.objects import base
from vmha.objects import fields
from vmha.objects import notification


@base.VmhaObjectRegistry.register
class InstanceMigrationPayload(notification.NotificationPayloadBase):
    """One look at a live migration of the instance, seen from this host.

    ``phase``: start, progress, end (completed) or error (failed,
    aborted).  ``direction``: outgoing (this host is the source) or
    incoming.  ``destination``: the URI vmha migrates to, when vmha drives
    it (None when another tool does: libvirt does not say).  ``driven``:
    vmha started it (and applies its downtime steps).  The figures are
    libvirt's job statistics of the source (bytes, bytes per second);
    None where there are none (an incoming migration's side).
    ``downtime_ms``: the maximum downtime vmha last set.  ``action``:
    what vmha did at this look (``set_downtime``, ``abort``,
    ``force_complete_postcopy``, ``pause_guest``, ``resume_source``, an
    operator's task), with ``reason`` saying why.
    """

    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'uuid': fields.UUIDField(),
        'name': fields.StringField(),
        'host': fields.StringField(),
        'phase': fields.MigrationPhaseField(),
        'direction': fields.MigrationDirectionField(),
        'destination': fields.StringField(nullable=True),
        'driven': fields.BooleanField(),
        'data_total': fields.IntegerField(nullable=True),
        'data_processed': fields.IntegerField(nullable=True),
        'data_remaining': fields.IntegerField(nullable=True),
        'memory_dirty_rate': fields.IntegerField(nullable=True),
        'iteration': fields.IntegerField(nullable=True),
        'downtime_ms': fields.IntegerField(nullable=True),
        'postcopy': fields.BooleanField(),
        'action': fields.StringField(nullable=True),
        'reason': fields.StringField(nullable=True),
        'occurred_at': fields.DateTimeField(),
    }


@base.VmhaObjectRegistry.register
class InstanceMigrationNotification(notification.NotificationBase):
    # Version 1.0: Initial version
    VERSION = '1.0'

    fields = {
        'payload': fields.ObjectField('InstanceMigrationPayload'),
    }


_PRIORITY = {
    fields.MigrationPhase.ERROR: fields.NotificationPriority.ERROR,
}


def migration_notification(host, uuid, name, phase, direction, occurred_at,
                           destination=None, driven=False, stats=None,
                           downtime_ms=None, postcopy=False, action=None,
                           reason=None):
    """An ``instance.migration`` notification; ``stats`` is the driver's
    job-stats dict (or None).  ERROR priority for an error, else INFO."""
    stats = stats or {}
    return InstanceMigrationNotification(
        priority=_PRIORITY.get(phase, fields.NotificationPriority.INFO),
        event_type=notification.EventType('instance', 'migration'),
        publisher=notification.NotificationPublisher(host),
        payload=InstanceMigrationPayload(
            uuid=uuid, name=name, host=host, phase=phase,
            direction=direction, destination=destination, driven=driven,
            data_total=stats.get('data_total'),
            data_processed=stats.get('data_processed'),
            data_remaining=stats.get('data_remaining'),
            memory_dirty_rate=stats.get('memory_dirty_rate'),
            iteration=stats.get('iteration'), downtime_ms=downtime_ms,
            postcopy=bool(postcopy), action=action, reason=reason,
            occurred_at=occurred_at))
