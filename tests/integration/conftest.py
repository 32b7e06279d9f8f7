"""Fixtures for tests against real services: RabbitMQ and masakari-api.

Everything under tests/integration is marked ``integration``; deselect it
with ``-m 'not integration'``.  The services start once per session,
installing what is missing (``apt-get install rabbitmq-server``, a
``.venv-masakari`` virtualenv), and the session stops what it started.
Their logs stay in pytest's basetemp (``rabbitmq0/``, ``masakari0/``).
"""

import pathlib

import pytest

from tests.integration import services

HERE = pathlib.Path(__file__).resolve().parent

# Set by the fixtures, read by the terminal summary.
_STARTED = {}


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'integration: needs real RabbitMQ and masakari-api '
        '(started by the session, installed if missing)')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in pathlib.Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter):
    """Say how long installing and starting each service took."""
    for name, service in _STARTED.items():
        timings = ', '.join('%s %.1fs' % item
                            for item in sorted(service.timings.items()))
        reused = ' (reused a running broker)' if getattr(
            service, 'reused', False) else ''
        terminalreporter.write_line('%s: %s%s' % (name, timings or '-',
                                                  reused))


@pytest.fixture(scope='session')
def rabbitmq(tmp_path_factory):
    """A :class:`services.RabbitMQ` that answers on 127.0.0.1:5672."""
    broker = services.RabbitMQ(tmp_path_factory.mktemp('rabbitmq'))
    broker.ensure_installed()
    broker.start()
    _STARTED['rabbitmq'] = broker
    yield broker
    broker.stop()


@pytest.fixture(scope='session')
def masakari(rabbitmq, tmp_path_factory):
    """A :class:`services.MasakariAPI` whose RPC goes to ``rabbitmq``."""
    api = services.MasakariAPI(tmp_path_factory.mktemp('masakari'),
                               transport_url=rabbitmq.transport_url)
    api.ensure_installed()
    api.start()
    _STARTED['masakari'] = api
    yield api
    api.stop()
