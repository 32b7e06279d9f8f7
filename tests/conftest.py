"""Test set-up shared by every suite.

The concurrency backend comes from ``VMHA_CONCURRENCY_BACKEND``
(``eventlet``, the default, or ``threading``); CI runs the whole suite once
with each.  oslo.service's backend must be chosen before anything imports
oslo_messaging, so it is chosen here, at collection.  Tests never monkey
patch: the eventlet variant must work without it.
"""

import os
import time

from oslo_service import backend as service_backend
import pytest

BACKEND = os.environ.get('VMHA_CONCURRENCY_BACKEND', 'eventlet')
if BACKEND not in ('eventlet', 'threading'):
    raise SystemExit('VMHA_CONCURRENCY_BACKEND must be eventlet or '
                     'threading, not %r' % BACKEND)
service_backend.init_backend(service_backend.BackendType(BACKEND))


def pytest_report_header(config):
    return 'vmha concurrency backend: %s' % BACKEND


def pytest_collection_modifyitems(config, items):
    """Tests marked ``one_backend`` run in the eventlet pass only: they
    exercise the test bed, the bridge (always threading) or the
    services, nothing the agent's backend changes, and they are slow."""
    if BACKEND == 'eventlet':
        return
    skip = pytest.mark.skip(reason='one_backend: runs in the eventlet '
                            'pass only (nothing here uses the agent\'s '
                            'concurrency backend)')
    for item in items:
        if item.get_closest_marker('one_backend') is not None:
            item.add_marker(skip)


@pytest.fixture
def backend():
    """The concurrency backend this run tests."""
    return BACKEND


def backend_sleep(seconds):
    """Sleep so that the backend's dispatcher can run meanwhile."""
    if BACKEND == 'eventlet':
        import eventlet
        eventlet.sleep(seconds)
    else:
        time.sleep(seconds)


@pytest.fixture
def wait_for():
    """``wait_for(predicate, timeout=5)``: poll until true, else fail."""
    def wait(predicate, timeout=5.0, what='condition'):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail('timed out after %.1fs waiting for %s'
                            % (timeout, what))
            backend_sleep(0.005)
    return wait
