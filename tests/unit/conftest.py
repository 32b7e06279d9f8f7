"""Fixtures the Masakari client, sink and bridge tests share.

* ``masakari``: a real HTTP server answering as masakari-api
  (``tests.fixtures.fake_masakari``) that knows host compute-1.
* ``transport``: an oslo.messaging notification transport on ``fake://``.
* ``run_bridge(conf)``: a started ``BridgeService`` on that transport;
  stopped at the end unless the test stopped its listener.
"""

from oslo_config import cfg
import oslo_messaging
import pytest

from tests.fixtures import fake_masakari
from vmha import concurrency
from vmha.bridge import service as bridge_service


@pytest.fixture
def masakari():
    server = fake_masakari.FakeMasakari(hosts=['compute-1']).start()
    yield server
    server.stop()


@pytest.fixture
def transport():
    transport = oslo_messaging.get_notification_transport(
        cfg.ConfigOpts(), url='fake://')
    yield transport
    transport.cleanup()


@pytest.fixture
def run_bridge(transport):
    services = []

    def run(conf):
        service = bridge_service.BridgeService(
            conf, transport, concurrency.get('threading'))
        service.start_http()
        service.start()
        services.append(service)
        return service

    yield run
    for service in services:
        if service.listener.stats().running:
            service.stop()
