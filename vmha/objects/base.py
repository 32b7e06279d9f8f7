"""The base of vmha's versioned objects: registry, namespace, serializer.

vmha's objects serialize under their own keys (``vmha_object.name``,
``vmha_object.namespace`` = 'vmha', ``vmha_object.version``,
``vmha_object.data``), so a consumer can tell them from nova's.
"""

from oslo_versionedobjects import base as ovo_base


class VmhaObjectRegistry(ovo_base.VersionedObjectRegistry):
    """Registers vmha's objects (oslo.versionedobjects keeps one registry
    for the process; ``vmha_classes`` picks out vmha's own)."""

    @classmethod
    def vmha_classes(cls):
        return {name: classes
                for name, classes in cls.obj_classes().items()
                if classes[0].OBJ_PROJECT_NAMESPACE == VmhaObject.
                OBJ_PROJECT_NAMESPACE}


class VmhaObject(ovo_base.VersionedObject):
    """Base of every vmha object."""

    OBJ_SERIAL_NAMESPACE = 'vmha_object'
    OBJ_PROJECT_NAMESPACE = 'vmha'


class VmhaObjectSerializer(ovo_base.VersionedObjectSerializer):
    """(De)serializes vmha objects in oslo.messaging payloads."""

    OBJ_BASE_CLASS = VmhaObject
