"""Writes what the hypervisor reports as notifications into the outbox.

Every lifecycle transition becomes an ``instance.lifecycle`` notification
(operator and nova actions are recorded, never reported as failures), and
the libvirt connection going away or coming back a ``host.connection``
one.  Failure decisions come from the failure monitor, not from here.
"""

import datetime
import logging

from vmha.objects import fields
from vmha.objects import host_connection
from vmha.objects import instance
from vmha.virt import event as ev

LOG = logging.getLogger(__name__)

# The power state a transition leaves the domain in (nova's names).
_POWER_STATE_AFTER = {
    ev.EVENT_LIFECYCLE_STARTED: 'running',
    ev.EVENT_LIFECYCLE_RESUMED: 'running',
    ev.EVENT_LIFECYCLE_SHUTTING_DOWN: 'running',
    ev.EVENT_LIFECYCLE_STOPPED: 'shutdown',
    ev.EVENT_LIFECYCLE_PAUSED: 'paused',
    ev.EVENT_LIFECYCLE_POSTCOPY_STARTED: 'paused',
    ev.EVENT_LIFECYCLE_MIGRATION_COMPLETED: 'paused',
    ev.EVENT_LIFECYCLE_SUSPENDED: 'suspended',
    ev.EVENT_LIFECYCLE_CRASHED: 'crashed',
}


def _utc(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


class EventRecorder:
    """A driver listener that queues notifications in the outbox.

    :param journal: the ``vmha.journal.db.Journal``
    :param outbox: its ``Outbox``
    :param host: this compute host's name
    :param uri: the libvirt URI (for host.connection notifications)
    """

    def __init__(self, journal, outbox, host, uri):
        self._journal = journal
        self._outbox = outbox
        self._host = host
        self._uri = uri

    def __call__(self, event):
        notification = self._notification_for(event)
        if notification is None:
            return
        with self._journal.transaction() as tx:
            self._outbox.add(tx, notification.to_message())

    def _notification_for(self, event):
        if isinstance(event, ev.LifecycleEvent):
            return instance.lifecycle_notification(
                self._host, event.uuid, event.name,
                _POWER_STATE_AFTER.get(event.transition, 'pending'),
                event.transition_name, event.event_name,
                event.vir_domain_event, _utc(event.timestamp))
        if isinstance(event, ev.ConnectionLostEvent):
            return host_connection.host_connection_notification(
                self._host, self._uri, fields.ConnectionState.LOST,
                _utc(event.timestamp), reason=event.reason)
        if isinstance(event, ev.ConnectionRestoredEvent):
            return host_connection.host_connection_notification(
                self._host, self._uri, fields.ConnectionState.RESTORED,
                _utc(event.timestamp), outage_seconds=event.outage_seconds,
                attempts=event.attempts)
        return None
