"""Object versions are pinned: changing a field without a bump fails here.

When a test below fails, bump the object's VERSION, add a line to its
version history comment, and update the hash here; consumers rely on
the version to know what they are reading.
"""

import datetime

from oslo_versionedobjects import exception as ovo_exception
from oslo_versionedobjects import fixture
import pytest

import vmha.objects
from vmha.objects import base
from vmha.objects import fields
from vmha.objects import instance

vmha.objects.register_all()

EXPECTED_HASHES = {
    'EventType': '1.0-a601b01c1849946ca2d59286fbecaa04',
    'InstanceActionNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceActionPayload': '1.0-385e1ba00d1431c8d39190a724ef0cdd',
    'GuestHealthNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'GuestHealthPayload': '1.0-0c1008decfed58e2f3c0cf67a19bba6d',
    'HostConnectionNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'HostConnectionPayload': '1.0-5cd5379569033ed8cc7bdcfaa85c17ce',
    'InstanceFailureNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceHeartbeatNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceHeartbeatPayload': '1.0-5ca76137826b8303363a237da984fd56',
    'InstanceFailurePayload': '1.4-cbe3059f7a10b48d5e58d50fa692beb5',
    'InstanceLifecycleNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceLifecyclePayload': '1.0-7dd273c553959731ded00ecb96dd57ec',
    'InstanceMigrationNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceMigrationPayload': '1.0-52206216c8b070def9658f0cc748dc5f',
    'InstanceMonitoringNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceMonitoringPayload': '1.0-1fbd713d2913b92dcefca72dc5c96274',
    'InstanceRecoveryNotification': '1.0-a73147b93b520ff0061865849d3dfa56',
    'InstanceRecoveryPayload': '1.0-16c7a019f1e2276cabd875144d2c7a95',
    'NotificationPublisher': '1.0-578ee5fea2922ff32e8917621f140857',
    'RecoveryWorkflowStep': '1.0-52eddef633ab3b7c4e7c271174364540',
}

# A notification's hash does not see which payload class it holds: pin
# the object tree too.
PAYLOAD_VERSIONS = {'GuestHealth': '1.0', 'HostConnection': '1.0',
                    'InstanceAction': '1.0',
                    'InstanceFailure': '1.4', 'InstanceHeartbeat': '1.0',
                    'InstanceLifecycle': '1.0', 'InstanceMigration': '1.0',
                    'InstanceMonitoring': '1.0', 'InstanceRecovery': '1.0'}
EXPECTED_TREE = {
    name + 'Notification': {name + 'Payload': version, 'EventType': '1.0',
                            'NotificationPublisher': '1.0'}
    for name, version in PAYLOAD_VERSIONS.items()
}
# (InstanceRecoveryPayload's list of RecoveryWorkflowStep is no edge of
# oslo's tree; the step's own hash above pins it.)


@pytest.fixture
def checker():
    return fixture.ObjectVersionChecker(base.VmhaObjectRegistry.vmha_classes())


def test_versions(checker):
    expected, actual = checker.test_hashes(EXPECTED_HASHES)
    assert expected == actual, 'an object changed: bump its VERSION'


def test_object_tree(checker):
    assert checker.get_dependency_tree() == EXPECTED_TREE


def test_every_object_has_a_version_history():
    import inspect
    for name, classes in base.VmhaObjectRegistry.vmha_classes().items():
        source = inspect.getsource(classes[0])
        assert '# Version 1.0' in source, name


def test_payload_uses_vmha_serial_namespace():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5,
                             tzinfo=datetime.UTC)
    message = instance.failure_notification(
        'h', '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c', 'vm', 'LIFECYCLE',
        'STOPPED_FAILED', fields.FailureCause.QEMU_DIED, when).to_message()
    assert message.payload['vmha_object.namespace'] == 'vmha'
    assert message.payload['vmha_object.name'] == 'InstanceFailurePayload'
    assert message.event_type == 'instance.failure'
    assert message.priority == 'ERROR'
    assert message.publisher_id == 'vmha-agent:h'
    # Round trip through the serializer a consumer would use.
    payload = base.VmhaObjectSerializer().deserialize_entity(
        {}, message.payload)
    assert payload.vir_domain_event == 'STOPPED_FAILED'
    assert payload.detected_at == when


def test_every_message_gets_its_own_id():
    when = datetime.datetime.now(datetime.UTC)
    note = instance.failure_notification(
        'h', '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c', 'vm', 'LIFECYCLE',
        'STOPPED_FAILED', fields.FailureCause.QEMU_DIED, when)
    assert note.to_message().message_id != note.to_message().message_id


def test_a_bad_cause_is_refused():
    with pytest.raises(ValueError):
        instance.failure_notification(
            'h', '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c', 'vm', 'LIFECYCLE',
            'STOPPED_FAILED', 'cosmic_rays',
            datetime.datetime.now(datetime.UTC))


def test_unknown_object_is_refused_by_the_serializer():
    with pytest.raises(ovo_exception.UnsupportedObjectError):
        base.VmhaObjectSerializer().deserialize_entity({}, {
            'vmha_object.name': 'NoSuchPayload',
            'vmha_object.namespace': 'vmha',
            'vmha_object.version': '1.0', 'vmha_object.data': {}})
