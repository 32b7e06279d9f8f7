"""Console entry points.  Only this package reads configuration globally."""

import warnings

# eventlet warns on import that it is deprecated; vmha supports it on
# purpose (see [DEFAULT] concurrency_backend), so the warning is only noise
# in front of an operator's error messages.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')


def select_backend(name):
    """Commit the process to a concurrency backend, before anything imports
    oslo_messaging (which would pick oslo.service's eventlet backend), and
    set vmha's default message exchange."""
    from oslo_service import backend
    if name == 'eventlet':
        import eventlet
        eventlet.monkey_patch()
        backend.init_backend(backend.BackendType.EVENTLET)
    else:
        backend.init_backend(backend.BackendType.THREADING)
    # vmha's notifications go to an exchange of its own (as nova's go to
    # 'nova'): another service that declared 'openstack' with other
    # durability would make every publish fail (PRECONDITION_FAILED).
    import oslo_messaging
    oslo_messaging.set_transport_defaults(control_exchange='vmha')
