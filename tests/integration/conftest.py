"""Fixtures for tests against real services: RabbitMQ and masakari-api.

Everything under tests/integration is marked ``integration``; deselect it
with ``-m 'not integration'``.  The services start once per session,
installing what is missing (``apt-get install rabbitmq-server``, a
``.venv-masakari`` virtualenv), and the session stops what it started.
Their logs stay in pytest's basetemp (``rabbitmq0/``, ``masakari0/``).
"""

import pathlib

import pytest

from tests.integration import pipeline
from tests.integration import services
from tests.integration import testbed

HERE = pathlib.Path(__file__).resolve().parent

# Set by the fixtures, read by the terminal summary.
_STARTED = {}


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'integration: needs real RabbitMQ and masakari-api '
        '(started by the session, installed if missing)')
    config.addinivalue_line(
        'markers', 'realvm: boots real QEMU guests under a real libvirtd '
        '(a few seconds per VM; select with -m realvm, skip with '
        "-m 'not realvm')")


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
    _report_realvm(terminalreporter)


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


@pytest.fixture(scope='session')
def masakari_without_bus(tmp_path_factory):
    """A second masakari-api whose RPC stays in its process (``fake:/``).

    For tests that stop RabbitMQ: the shared ``masakari`` casts to the
    broker after storing each notification, and a POST then hangs until
    the broker is back, which would turn every broker outage into a
    Masakari outage as well.
    """
    api = services.MasakariAPI(tmp_path_factory.mktemp('masakari-fake-rpc'),
                               transport_url='fake:/')
    api.ensure_installed()
    api.start()
    _STARTED['masakari (fake:/ RPC)'] = api
    yield api
    api.stop()


@pytest.fixture
def topic(rabbitmq):
    """A notification topic (and exchange) of this test's own, deleted
    from the broker afterwards (see pipeline.py)."""
    name = pipeline.unique_topic()
    yield name
    if rabbitmq.answers():
        pipeline.delete_topic(rabbitmq.transport_url, name)


@pytest.fixture
def start_bridge(rabbitmq, topic, tmp_path):
    """``start_bridge(masakari, **options)``: a running bridge on
    ``topic``; stopped (SIGTERM) at the end of the test, which fails if
    the bridge does not stop cleanly."""
    bridges = []

    def start(masakari, **options):
        bridge = pipeline.Bridge(tmp_path / ('bridge%d' % len(bridges)),
                                 rabbitmq.transport_url, masakari.url,
                                 topic, **options)
        bridges.append(bridge)
        return bridge.start()

    yield start
    for bridge in bridges:
        running = bridge.running()
        status = bridge.stop()
        assert not running or status == 0, (
            'bridge exited %s on SIGTERM\n%s' % (status, bridge.log_tail()))


@pytest.fixture
def make_agent(rabbitmq, topic, tmp_path, backend):
    """``make_agent(hostname)``: an :class:`pipeline.Agent` on ``topic``
    with its own journal, on this run's concurrency backend."""
    def make(hostname, **options):
        return pipeline.Agent(tmp_path / ('agent-%s' % hostname),
                              rabbitmq.transport_url, topic, hostname,
                              backend, **options)
    return make


# -- real VMs (testbed.py) ---------------------------------------------------

# Set by the real-VM fixtures and tests, read by the terminal summary.
_REALVM = {}
_REALVM_MEASURED = {}


def _report_realvm(terminalreporter):
    """Timings of the test bed and what the real-VM tests measured."""
    for name, part in _REALVM.items():
        timings = ', '.join('%s %.2fs' % item
                            for item in sorted(part.timings.items()))
        reused = ' (reused a running libvirtd)' if getattr(
            part, 'reused', False) else ''
        terminalreporter.write_line('%s: %s%s' % (name, timings or '-',
                                                  reused))
    for label, values in sorted(_REALVM_MEASURED.items()):
        values = sorted(values)
        terminalreporter.write_line(
            'realvm %s: %s (n=%d)' % (label, ', '.join(
                '%.2fs' % v for v in values) if len(values) <= 6 else
                'min %.2fs median %.2fs max %.2fs' % (
                    values[0], values[len(values) // 2], values[-1]),
                len(values)))


@pytest.fixture(scope='session')
def libvirtd(tmp_path_factory):
    """A :class:`testbed.Libvirtd` answering on ``qemu:///system``.

    Installs the test bed's Debian packages if missing, starts virtlogd
    and libvirtd by hand (or reuses running ones), stops them by PID at
    the end of the session.  One session at a time holds the test bed
    (tests kill and hang libvirtd): a second one waits for the first.
    """
    daemon = testbed.Libvirtd(tmp_path_factory.mktemp('libvirtd'))
    with testbed.exclusive_session(daemon.timings):
        daemon.ensure_installed()
        daemon.start()
        _REALVM['libvirtd'] = daemon
        yield daemon
        daemon.stop()


@pytest.fixture(scope='session')
def guest_image():
    """The :class:`testbed.GuestImage` (kernel + initramfs), built or
    taken from its cache (/var/cache/vmha-testbed)."""
    image = testbed.GuestImage().build()
    _REALVM['guest image'] = image
    return image


@pytest.fixture(scope='session')
def heartbeat_image():
    """The :class:`testbed.GuestImage` with Python and the heartbeat
    daemon of guest/ (``python=True``), built or taken from its cache.
    ``define_guest(heartbeat=True)`` boots the same image."""
    image = testbed.GuestImage(python=True).build()
    _REALVM['heartbeat guest image'] = image
    return image


@pytest.fixture(scope='session')
def domains(libvirtd, guest_image, tmp_path_factory):
    """The session's :class:`testbed.Domains`.  Removes domains that dead
    sessions left first, and every domain it defined at the end."""
    domains = testbed.Domains(libvirtd, guest_image,
                              tmp_path_factory.mktemp('domains'))
    domains.purge_stale()
    yield domains
    errors = domains.cleanup()
    assert not errors, '\n'.join(map(str, errors))


@pytest.fixture
def vm_factory(domains, request):
    """``vm_factory(name=None, wait_for_agent=True, **define_guest_args)``
    defines and starts a guest; returns its :class:`testbed.Guest`.

    ``name`` defaults to the test's name.  With ``wait_for_agent`` it
    returns once the guest answers guest-ping (about 6 s under TCG).
    Every guest defined during the test is destroyed and undefined after
    it, whatever state it is in.
    """
    before = set(domains.defined)
    default = request.node.name.removeprefix('test_')
    default = ''.join(c if c.isalnum() else '-' for c in default)[:24]

    def create(name=None, wait_for_agent=True, **kwargs):
        guest = domains.create(name or default, **kwargs)
        if wait_for_agent and kwargs.get('start', True):
            seconds = guest.wait_for_agent()
            _REALVM_MEASURED.setdefault('start -> first guest-ping',
                                        []).append(seconds)
        return guest

    yield create
    errors = []
    for name in [n for n in domains.defined if n not in before]:
        try:
            domains.remove(name)
        except testbed.TestbedError as error:
            errors.append(error)
    assert not errors, '\n'.join(map(str, errors))


@pytest.fixture
def realvm_measure():
    """``realvm_measure(label, seconds)``: report a measurement in the
    terminal summary (min/median/max per label over the session)."""
    def measure(label, seconds):
        _REALVM_MEASURED.setdefault(label, []).append(seconds)
        return seconds
    return measure


@pytest.fixture(scope='module')
def recovery_services(rabbitmq, libvirtd, tmp_path_factory):
    """masakari-api (duplicate window 0), masakari-engine and the nova
    stand-in on the test bed's libvirtd (:class:`recovery.Recovery`),
    for the tests of a module that asks for the whole recovery loop.

    Only those start an engine: with none, notifications stay ``new``,
    which the other tests rely on.
    """
    import uuid

    from tests.integration import recovery

    host = 'compute-loop-%s' % uuid.uuid4().hex[:6]
    services_ = recovery.Recovery(tmp_path_factory.mktemp('recovery'),
                                  rabbitmq.transport_url, host).start()
    _STARTED['masakari-engine'] = services_.engine
    yield services_
    services_.stop()
