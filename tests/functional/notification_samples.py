"""The notification of each sample under doc/notification_samples/.

Each builder makes the notification the sample documents, with fixed
values; the functional test checks the sample file is exactly what vmha
sends.  Regenerate the files after a deliberate change with::

    python -m tests.functional.notification_samples
"""

import datetime
import json
import pathlib

from vmha.objects import action
from vmha.objects import fields
from vmha.objects import guest_health
from vmha.objects import heartbeat
from vmha.objects import host_connection
from vmha.objects import instance
from vmha.objects import migration
from vmha.objects import monitoring
from vmha.objects import recovery

SAMPLE_DIR = pathlib.Path(__file__).parents[2] / 'doc' / 'notification_samples'
HOST = 'compute-1'
UUID = '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c'
WHEN = datetime.datetime(2026, 11, 23, 16, 0, 5, 250000,
                         tzinfo=datetime.UTC)
MESSAGE_ID = '2d8a4f7e-9c1b-4e6a-8f3d-5b7c9e1a2f40'

BUILDERS = {
    'instance-action': lambda: action.action_notification(
        HOST, UUID, 'web-1', '0b1c9e7d2a4f4c3e8d5b6a7f8e9d0c1b', 'stop',
        'stop', fields.ActionPhase.VOTE, fields.ActionResult.REJECTED,
        'database resync in progress', 412,
        requested_by='user=alice project=ops request_id=req-5c2b1d7e'),
    'instance-failure': lambda: instance.failure_notification(
        HOST, UUID, 'web-1', 'LIFECYCLE', 'STOPPED_FAILED',
        fields.FailureCause.QEMU_DIED, WHEN,
        evidence='libvirt: LIFECYCLE STOPPED_FAILED; domain now '
                 'SHUTOFF_FAILED',
        episode='4c1e7d2a9b3f4e6d8a0b1c2d3e4f5a6b'),
    'instance-lifecycle': lambda: instance.lifecycle_notification(
        HOST, UUID, 'web-1', 'shutdown', 'STOPPED', 'LIFECYCLE',
        'STOPPED_DESTROYED', WHEN),
    'guest-health': lambda: guest_health.guest_health_notification(
        HOST, UUID, 'web-1', fields.GuestHealthState.HEALTHY,
        fields.GuestHealthState.ERROR, 'guest-ping timed out after 2s', 1,
        WHEN, priority=fields.NotificationPriority.WARN),
    'instance-heartbeat': lambda: heartbeat.heartbeat_notification(
        HOST, UUID, 'web-1', fields.HeartbeatState.ENABLED,
        fields.HeartbeatState.FAILED,
        'heartbeat lost: 2 challenge(s) unanswered, last answer 2.1s ago',
        2, WHEN, interval=1.0, action='reboot', action_taken='reboot',
        priority=fields.NotificationPriority.ERROR),
    'host-connection': lambda: host_connection.host_connection_notification(
        HOST, 'qemu:///system', fields.ConnectionState.LOST, WHEN,
        reason='EOF'),
    'instance-monitoring': lambda: monitoring.monitoring_notification(
        HOST, UUID, 'web-1', False, None, 'maintenance until Friday',
        'user=alice project=ops request_id=req-5c2b1d7e',
        fields.MonitoringChangeSource.RPC, WHEN),
    'instance-recovery': lambda: recovery.recovery_notification(
        'controller-1', UUID, HOST, '4c1e7d2a9b3f4e6d8a0b1c2d3e4f5a6b',
        '0b9e3c6a-2d4f-4e8a-9c1b-7f5d3e2a1c40',
        fields.RecoveryStatus.FINISHED, WHEN, 41.3,
        workflow_details=[
            {'name': 'StopInstanceTask', 'state': 'SUCCESS',
             'progress': 1.0, 'progress_details': [
                 {'timestamp': '2026-11-23 16:00:08.109876',
                  'message': 'Stopping instance: 6f1b8c2e-3f1e-4a47-9a8e-'
                             '0d4c1f2b3a4c', 'progress': '0.0'},
                 {'timestamp': '2026-11-23 16:00:09.534121',
                  'message': "Stopped instance: '6f1b8c2e-3f1e-4a47-9a8e-"
                             "0d4c1f2b3a4c'", 'progress': '1.0'}]},
            {'name': 'StartInstanceTask', 'state': 'SUCCESS',
             'progress': 1.0, 'progress_details': [
                 {'timestamp': '2026-11-23 16:00:10.771032',
                  'message': "Starting instance: '6f1b8c2e-3f1e-4a47-9a8e-"
                             "0d4c1f2b3a4c'", 'progress': '0.0'}]},
            {'name': 'ConfirmInstanceActiveTask', 'state': 'SUCCESS',
             'progress': 1.0, 'progress_details': [
                 {'timestamp': '2026-11-23 16:00:46.552210',
                  'message': "Instance '6f1b8c2e-3f1e-4a47-9a8e-"
                             "0d4c1f2b3a4c' is successfully recovered.",
                  'progress': '1.0'}]},
        ]),
    'instance-migration': lambda: migration.migration_notification(
        HOST, UUID, 'web-1', fields.MigrationPhase.PROGRESS,
        fields.MigrationDirection.OUTGOING, WHEN,
        destination='qemu+tls://compute-2/system', driven=True,
        stats={'data_total': 4294967296, 'data_processed': 2705326080,
               'data_remaining': 1589641216,
               'memory_dirty_rate': 52428800, 'iteration': 3},
        downtime_ms=95, action='set_downtime', reason='downtime_step'),
}


def render(name):
    """The sample text for ``name``, as the notification is sent."""
    message = BUILDERS[name]().to_message(timestamp=WHEN.replace(tzinfo=None),
                                          message_id=MESSAGE_ID)
    return json.dumps(message._asdict(), indent=4, sort_keys=True) + '\n'


if __name__ == '__main__':
    for sample in BUILDERS:
        (SAMPLE_DIR / ('%s.json' % sample)).write_text(render(sample))
        print('wrote', sample)
