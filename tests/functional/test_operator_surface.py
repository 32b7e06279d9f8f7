"""What an operator sees of a running agent: /healthz, /metrics, /status,
vmha-status and the systemd watchdog.

The agent is the real service over libvirt's test:///default driver (or
the fake libvirt where a test needs an exact fleet), its HTTP endpoint on
a free port.  A "wedged dispatcher" is a listener that blocks on an event
of the backend, the way a listener stuck on a hung call would.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid as uuid_lib

from oslo_config import cfg
from prometheus_client import parser
import pytest

from tests.conftest import BACKEND
from tests.conftest import backend_sleep
from tests.fixtures import fakelibvirt
from tests.fixtures import sinks
from tests.fixtures import virt
from vmha import agent as agent_lib
from vmha import concurrency
from vmha import objects
from vmha import systemd
from vmha.api import http as http_api
from vmha.cmd import status as status_cmd
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional
objects.register_all()
RUN_BLOCKING = concurrency.get(BACKEND).run_blocking


def start_agent(tmp_path, driver, **health):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[])
    conf.set_override('host', 'compute-1')
    conf.set_override('concurrency_backend', BACKEND)
    conf.set_override('enabled', False, group='guest_agent')
    conf.set_override('port', 0, group='health')
    for option, value in health.items():
        conf.set_override(option, value, group='health')
    journal = db.Journal(str(tmp_path / 'vmha.sqlite'))
    outbox = outbox_lib.Outbox(journal)
    sender = sender_lib.OutboxSender(outbox, sinks.RecordingSink(), BACKEND)
    agent = agent_lib.build(conf, driver, journal, outbox, sender)
    endpoint = http_api.HttpEndpoint(agent, concurrency.get(BACKEND),
                                     '127.0.0.1', 0)
    agent.surfaces.append(endpoint)
    agent.start()
    agent.url = endpoint.url
    agent.journal = journal
    return agent


@pytest.fixture
def agents(tmp_path):
    started = []

    def make(driver, **health):
        agent = start_agent(tmp_path / str(len(started)), driver, **health)
        started.append(agent)
        return agent
    (tmp_path / '0').mkdir()
    (tmp_path / '1').mkdir()
    yield make
    for agent in started:
        agent.stop()
        agent.journal.close()


def get(url):
    """(status code, body) of GET ``url``, off the eventlet hub."""
    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
    return RUN_BLOCKING(fetch)


def test_domain_xml(name):
    return ("<domain type='test'><name>%s</name><uuid>%s</uuid>"
            "<memory>65536</memory><os><type>hvm</type></os></domain>"
            % (name, uuid_lib.uuid4()))


test_domain_xml.__test__ = False


def wedge(agent, name):
    """Block the dispatcher on the next event of domain ``name``;
    returns the gate that releases it."""
    gate = concurrency.get(BACKEND).event()
    agent.driver.register_event_listener(
        lambda event: getattr(event, 'name', None) == name and gate.wait())
    return gate


@pytest.fixture
def test_driver():
    return libvirt_driver.LibvirtDriver('test:///default', backend=BACKEND,
                                        stopped_delay=0)


def test_healthz_turns_unhealthy_while_a_listener_wedges_the_dispatcher(
        agents, test_driver, wait_for):
    agent = agents(test_driver, stall_timeout=2.5)
    backend_sleep(3.5)  # idle longer than the bound: the loops still turn
    code, body = get(agent.url + '/healthz')
    assert code == 200, body
    assert json.loads(body)['status'] == 'ok'

    name = 'wedge-%s' % uuid_lib.uuid4().hex[:8]
    gate = wedge(agent, name)
    dom = agent.driver.host.get_connection().create_domain(
        test_domain_xml(name))
    try:
        wait_for(lambda: get(agent.url + '/healthz')[0] == 503, timeout=10,
                 what='/healthz to answer 503')
        report = json.loads(get(agent.url + '/healthz')[1])
        assert report['status'] == 'unhealthy'
        assert not report['checks']['dispatcher']['ok']
        assert report['checks']['dispatcher']['age'] > 2.5
        assert report['checks']['libvirt']['ok']  # only the dispatcher
    finally:
        gate.set()
    wait_for(lambda: get(agent.url + '/healthz')[0] == 200, timeout=10,
             what='/healthz to recover')
    dom.destroy()


class NotifySocket:
    """What systemd listens on: a datagram socket in a temp dir."""

    def __init__(self, path):
        self.path = str(path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.setblocking(False)
        self.datagrams = []

    def drain(self):
        while True:
            try:
                self.datagrams.append(self.socket.recv(4096).decode())
            except BlockingIOError:
                return self.datagrams

    def fields(self):
        """Every datagram so far, each as {KEY: value}."""
        self.drain()
        return self.parsed()

    def parsed(self):
        return [dict(line.split('=', 1) for line in datagram.splitlines())
                for datagram in self.datagrams]

    def close(self):
        self.socket.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / 'notify')
    yield sock
    sock.close()


def test_watchdog_is_fed_only_while_the_dispatcher_turns_over(
        agents, test_driver, notify_socket, wait_for):
    agent = agents(test_driver, stall_timeout=2.5)
    watchdog = systemd.Watchdog(
        systemd.Notifier(notify_socket.path), agent.health.turning_over,
        agent.describe, concurrency.get(BACKEND), period=0.4,
        problems=agent.health.problems)
    watchdog.start()
    agent.surfaces.append(watchdog)
    wait_for(lambda: sum('WATCHDOG' in f for f in notify_socket.fields())
             >= 3, what='three WATCHDOG=1')
    sent = notify_socket.parsed()
    assert sent[0]['READY'] == '1'
    assert sum('READY' in f for f in sent) == 1
    assert 'watching on compute-1' in sent[0]['STATUS']

    name = 'wedge-%s' % uuid_lib.uuid4().hex[:8]
    gate = wedge(agent, name)
    dom = agent.driver.host.get_connection().create_domain(
        test_domain_xml(name))
    try:
        wait_for(lambda: any(f.get('STATUS', '').startswith('unhealthy')
                             for f in notify_socket.fields()), timeout=10,
                 what='an unhealthy STATUS')
        notify_socket.datagrams.clear()
        backend_sleep(1.0)  # five watchdog intervals
        silent = notify_socket.fields()
        assert silent, 'the watchdog loop itself should still report'
        assert not any('WATCHDOG' in f for f in silent)
        assert 'event dispatcher has not turned over' in silent[-1]['STATUS']
    finally:
        gate.set()
    notify_socket.datagrams.clear()
    wait_for(lambda: any('WATCHDOG' in f for f in notify_socket.fields()),
             timeout=10, what='WATCHDOG=1 again')
    dom.destroy()
    watchdog.stop()
    agent.surfaces.remove(watchdog)
    assert notify_socket.fields()[-1]['STOPPING'] == '1'


def test_metrics_parse_and_count_what_happened(agents, test_driver,
                                               wait_for):
    agent = agents(test_driver)
    name = 'metrics-%s' % uuid_lib.uuid4().hex[:8]
    dom = agent.driver.host.get_connection().create_domain(
        test_domain_xml(name))
    dom.suspend()
    wait_for(lambda: agent.driver.dispatch_stats().dispatched >= 2)
    wait_for(lambda: agent.sender.outbox.depth() == 0, what='delivery')

    code, body = get(agent.url + '/metrics')
    assert code == 200
    families = {f.name: f for f in
                parser.text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[('vmha_events_total', (('detail', 'STARTED_BOOTED'),
                                          ('event', 'LIFECYCLE')))] >= 1
    assert samples[('vmha_events_total', (('detail', 'SUSPENDED_PAUSED'),
                                          ('event', 'LIFECYCLE')))] >= 1
    assert samples[('vmha_dispatch_latency_seconds_count', ())] >= 2
    assert samples[('vmha_notifications_sent_total', ())] >= 2
    assert samples[('vmha_outbox_depth', ())] == 0
    assert samples[('vmha_libvirt_connected', ())] == 1
    # The migration monitor watches test:///default too (it cannot
    # migrate: nothing under way).
    assert samples[('vmha_migrations_active', ())] == 0
    assert samples[('vmha_migration_bytes_remaining', ())] == 0
    assert samples[('vmha_instances', (('monitoring', 'monitored'),))] >= 2
    assert ('vmha_event_queue_depth', ()) in samples
    assert ('vmha_outbox_oldest_age_seconds', ()) in samples
    assert ('vmha_libvirt_reconnects_total', ()) in samples
    assert ('vmha_notifications_failed_total', ()) in samples
    assert 'vmha_decisions' in families
    assert 'vmha_guest_ping_latency_seconds' in families
    dom.destroy()


def fake_driver(*domains):
    """A driver over the fake libvirt holding ``domains`` (name, state,
    reason); the dispatcher is driven by hand."""
    fake = fakelibvirt.FakeLibvirt()
    for name, state, reason in domains:
        fake.add_domain(name, state=state, reason=reason)
    return virt.make_driver(stopped_delay=0, fake=fake)


def vmha_status(tmp_path, *args):
    """Run vmha-status in-process: (exit code, stdout, stderr)."""
    config = tmp_path / 'empty.conf'
    config.write_text('')
    out, err = io.StringIO(), io.StringIO()
    code = RUN_BLOCKING(status_cmd.main, ['--config-file', str(config)]
                        + list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def test_vmha_status_of_an_empty_agent(agents, tmp_path):
    agent = agents(fake_driver())
    code, out, err = vmha_status(tmp_path, '--url', agent.url)
    assert (code, err) == (0, '')
    assert out.splitlines() == [
        out.splitlines()[0], 'no domains on this host']
    assert out.startswith('vmha-agent on compute-1: healthy (')

    code, out, _ = vmha_status(tmp_path, '--url', agent.url, '--json')
    assert code == 0
    assert json.loads(out)['instances'] == []


def test_vmha_status_of_a_busy_agent(agents, tmp_path, wait_for):
    running = fakelibvirt.VIR_DOMAIN_RUNNING
    driver = fake_driver(('web-1', running, 1), ('db-1', running, 1),
                         ('batch-1', running, 1))
    agent = agents(driver)
    wait_for(lambda: agent.audit.runs >= 1, what='the start-up audit')
    fake = driver.fake
    db_1 = next(d for d in fake.domains.values() if d.name() == 'db-1')
    db_1.state_value = (fakelibvirt.VIR_DOMAIN_SHUTOFF, 6)  # FAILED
    fake.fire_lifecycle(db_1, 5, 5)  # libvirt's STOPPED, FAILED
    RUN_BLOCKING(driver.host.handler.dispatch_pending)
    row = agent.inventory.set_monitoring('batch-1', False, 'maintenance')
    assert row['monitoring'] == 'disabled'
    # What vmha-masakari-bridge would cast: Masakari's recovery failed,
    # and db-1 is still down.
    episode = agent.inventory.instance('db-1')['recovery']['episode']
    assert agent.recoveries.changed({
        'uuid': db_1.UUIDString(), 'episode': episode, 'status': 'failed',
        'reason': 'Masakari reports the recovery failed', 'took': 61.5,
        'notification_uuid': 'n-1', 'changed_at': 0})

    code, out, err = vmha_status(tmp_path, '--url', agent.url)
    assert (code, err) == (0, '')
    lines = out.splitlines()
    assert lines[0].startswith('vmha-agent on compute-1: healthy')
    assert lines[1].split() == ['NAME', 'UUID', 'POWER', 'MONITORING',
                                'GUEST', 'AGENT', 'LAST', 'PING',
                                'HEARTBEAT', 'LAST', 'DECISION', 'RECOVERY',
                                'MIGRATING']
    rows = {line.split()[0]: line for line in lines[2:]}
    assert sorted(rows) == ['batch-1', 'db-1', 'web-1']
    assert 'disabled (maintenance)' in rows['batch-1']
    assert 'shutoff_failed' in rows['db-1']
    assert 'qemu_died' in rows['db-1'] and ', open' in rows['db-1']
    # RECOVERY, then MIGRATING (nothing migrates here).
    assert rows['db-1'].endswith(
        'failed: Masakari reports the recovery failed  -')
    assert rows['web-1'].endswith(' -')
    assert rows['web-1'].split()[2:4] == ['running', 'monitored']

    code, out, _ = vmha_status(tmp_path, '--url', agent.url, '--json')
    by_name = {r['name']: r for r in json.loads(out)['instances']}
    assert by_name['db-1']['last_decision'] == 'qemu_died'
    assert by_name['batch-1']['override']['reason'] == 'maintenance'


def test_vmha_status_says_when_the_agent_is_down(tmp_path):
    port = free_port()  # nothing listens there
    code, out, err = vmha_status(tmp_path, '--url',
                                 'http://127.0.0.1:%d' % port)
    assert code == 1 and out == ''
    assert err == ('vmha-status: cannot reach vmha-agent at '
                   'http://127.0.0.1:%d (connection refused); is it '
                   "running, and are [health] listen_host and port the same "
                   "as the agent's?\n" % port)


def test_vmha_status_exits_3_when_the_agent_is_unhealthy(
        agents, test_driver, tmp_path, wait_for):
    agent = agents(test_driver, stall_timeout=2.5)
    name = 'wedge-%s' % uuid_lib.uuid4().hex[:8]
    gate = wedge(agent, name)
    dom = agent.driver.host.get_connection().create_domain(
        test_domain_xml(name))
    try:
        wait_for(lambda: get(agent.url + '/healthz')[0] == 503, timeout=10)
        code, out, _ = vmha_status(tmp_path, '--url', agent.url)
        assert code == 3
        assert 'UNHEALTHY' in out.splitlines()[0]
        assert 'STALLED' in out.splitlines()[0]
    finally:
        gate.set()
    dom.destroy()


def test_notifier_speaks_to_abstract_and_path_sockets(notify_socket):
    assert systemd.Notifier.from_environ({}) is None
    notifier = systemd.Notifier.from_environ(
        {'NOTIFY_SOCKET': notify_socket.path})
    assert notifier.send(READY=1, STATUS='two\nlines')
    assert notify_socket.drain() == ['READY=1\nSTATUS=two lines']
    assert systemd.Notifier('@vmha-test-%d' % os.getpid()).address \
        .startswith('\0vmha-test-')


def test_watchdog_period_is_for_this_process_only():
    assert systemd.watchdog_period({}) is None
    assert systemd.watchdog_period({'WATCHDOG_USEC': '30000000'}) == 30.0
    assert systemd.watchdog_period({'WATCHDOG_USEC': '30000000',
                                    'WATCHDOG_PID': '1'}, pid=2) is None
    assert systemd.watchdog_period({'WATCHDOG_USEC': 'x'}) is None


def free_port():
    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_the_agent_binary_under_a_systemd_like_supervisor(tmp_path,
                                                          notify_socket):
    """vmha-agent as systemd runs it: READY once up, WATCHDOG=1 every half
    period, /healthz and vmha-status answer, STOPPING=1 on SIGTERM."""
    port = free_port()
    config = tmp_path / 'vmha.conf'
    config.write_text(
        '[DEFAULT]\nconcurrency_backend = %s\nhost = compute-7\n'
        '[libvirt]\nconnection_uri = test:///default\n'
        '[database]\npath = %s\n[notifications]\nsinks = log\n'
        '[health]\nport = %d\n' % (BACKEND, tmp_path / 'vmha.sqlite', port))
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.path,
               WATCHDOG_USEC='1000000')
    agent = subprocess.Popen(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(config)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum('WATCHDOG' in f for f in notify_socket.fields()) < 2:
            assert agent.poll() is None, agent.communicate()
            assert time.monotonic() < deadline, notify_socket.datagrams
            time.sleep(0.05)
        sent = notify_socket.parsed()
        assert sent[0]['READY'] == '1'
        assert sent[0]['STATUS'].startswith('watching on compute-7')

        with urllib.request.urlopen('http://127.0.0.1:%d/healthz' % port,
                                    timeout=10) as response:
            assert json.load(response)['status'] == 'ok'
        status = subprocess.run(
            [sys.executable, '-m', 'vmha.cmd.status', '--config-file',
             str(config)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith('vmha-agent on compute-7: healthy')
        # test:///default always holds its running domain "test".
        assert any(line.split()[:1] == ['test'] and 'running' in line
                   for line in lines[2:]), status.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr
    assert notify_socket.fields()[-1]['STOPPING'] == '1'


def test_vmha_status_over_rpc_says_when_the_bus_is_down(tmp_path):
    """No broker answers: one line and exit 1 within the timeout (and a
    little grace), not oslo.messaging retrying for ever."""
    config = tmp_path / 'vmha.conf'
    config.write_text('[DEFAULT]\nhost = compute-3\ntransport_url = '
                      'rabbit://guest:guest@127.0.0.1:%d/\n' % free_port())
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.status', '--config-file',
         str(config), '--rpc', '--timeout', '1'],
        capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    assert result.stdout == ''
    assert result.stderr.startswith('vmha-status: ')
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert 'compute-3' in result.stderr


def test_vmha_status_says_a_bad_url_is_a_configuration_error(tmp_path):
    code, out, err = vmha_status(tmp_path, '--url', 'localhost:8917')
    assert (code, out) == (2, '')
    assert err == ("vmha-status: configuration error: --url must look like "
                   "http://127.0.0.1:8917, not 'localhost:8917'\n")
