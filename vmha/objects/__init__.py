"""Versioned objects and notification payloads, one module per subject.

Importing oslo.versionedobjects imports oslo_messaging, which commits the
process to oslo.service's eventlet backend unless one was chosen before:
``vmha.cmd.select_backend`` must run first (it does in every command).
"""


def register_all():
    """Import every object module so the registry knows every class."""
    __import__('vmha.objects.action')
    __import__('vmha.objects.guest_health')
    __import__('vmha.objects.heartbeat')
    __import__('vmha.objects.host_connection')
    __import__('vmha.objects.instance')
    __import__('vmha.objects.migration')
    __import__('vmha.objects.monitoring')
    __import__('vmha.objects.notification')
    __import__('vmha.objects.recovery')
