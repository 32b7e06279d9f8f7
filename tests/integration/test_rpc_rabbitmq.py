"""The agent's RPC API over a real RabbitMQ.

The agent (libvirt's test:///default driver, as in the functional tests)
and the client live in this process, each with a transport of its own,
so every call goes through the broker: a request queue per server,
a reply queue per client.  The in-process agent runs on the threading
backend (``tests.functional.test_rpc_api``); the real ``vmha-agent``
process answers too, on this run's backend (under eventlet a monkey
patched process and oslo.messaging's eventlet executor, as operators run
it).  Each test uses an exchange and a host name of its own, and deletes
what it declared.
"""

import contextlib
import signal
import subprocess
import sys
import time
import uuid as uuid_lib

import oslo_messaging
import pytest

from tests.functional.test_rpc_api import Agent
from tests.functional.test_rpc_api import make_conf
from tests.integration import pipeline
from vmha import rpcapi
from vmha.manager import inventory
from vmha.virt.libvirt import api as libvirt_api


@pytest.fixture
def bus(rabbitmq):
    """(exchange, host) of this test's own; their queue and exchange are
    deleted from the broker afterwards."""
    suffix = uuid_lib.uuid4().hex[:10]
    exchange, host = 'vmha_it_rpc_%s' % suffix, 'rpc-it-%s' % suffix
    # A topic queue left durable by another test's agent would refuse
    # this test's non-durable one; no other agent runs now.
    pipeline.delete_rpc_queues(rabbitmq.transport_url, host,
                               if_unused=False)
    yield exchange, host
    if rabbitmq.answers():
        _delete(rabbitmq.transport_url, exchange, host)


def _delete(transport_url, exchange, host):
    import kombu

    url = transport_url.replace('rabbit://', 'amqp://')
    pipeline.delete_rpc_queues(transport_url, host)
    with kombu.Connection(url, connect_timeout=5) as connection:
        with contextlib.suppress(Exception), connection.channel() as channel:
            channel.exchange_delete(exchange)


@pytest.fixture
def libvirt_conn():
    """test:///default's domains live as long as a connection is open:
    this one keeps them across agent restarts."""
    conn = libvirt_api.LibvirtAPI().open('test:///default')
    yield conn
    conn.close()


@pytest.fixture
def agents(rabbitmq, bus, tmp_path, libvirt_conn, wait_for):
    """``agents()``: an agent on this test's journal file and exchange,
    listening on the broker, with a client of its own transport."""
    exchange, host = bus
    client_conf = make_conf(host, transport_url=rabbitmq.transport_url,
                            control_exchange=exchange)
    client_transport = rpcapi.get_transport(client_conf)
    started = []

    def start():
        if started:
            started[-1].stop()
        agent = Agent(tmp_path / 'vmha.sqlite', host=host,
                      client_transport=client_transport,
                      transport_url=rabbitmq.transport_url,
                      control_exchange=exchange)
        started.append(agent)
        wait_for(lambda: agent.rpc.listening, timeout=30,
                 what='the RPC server to consume from RabbitMQ')
        return agent

    yield start
    if started:
        started[-1].stop()
    client_transport.cleanup()


def _define(conn, prefix):
    name = '%s-%s' % (prefix, uuid_lib.uuid4().hex[:8])
    domain = conn.define_domain(
        "<domain type='test'><name>%s</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>" % name)
    domain.start()
    return domain


def test_round_trips_over_rabbitmq(agents, libvirt_conn):
    agent = agents()
    domain = _define(libvirt_conn, 'rpc-it')
    try:
        rows = {row['name']: row for row in agent.call('list_instances')}
        assert rows[domain.name]['uuid'] == domain.uuid
        assert rows[domain.name]['power_state'] == 'running'

        assert agent.call('get_instance', domain.uuid)['name'] == \
            domain.name
        with pytest.raises(inventory.InstanceNotFound):
            agent.call('get_instance', 'no-such-vm')

        before = agent.service.audit.runs
        result = agent.call('run_audit', timeout=30)
        assert result['runs'] > before
        assert result['reported'] == 0

        status = agent.call('get_status')
        assert status['host'] == agent.host
        assert domain.uuid in {row['uuid'] for row in status['instances']}
    finally:
        domain.destroy()
        domain.undefine()


def test_disabled_over_rabbitmq_stays_disabled_after_restart(
        agents, libvirt_conn):
    agent = agents()
    domain = _define(libvirt_conn, 'rpc-it')
    try:
        row = agent.call('set_monitoring', domain.uuid, False,
                         reason='disk replacement')
        assert row['monitoring'] == 'disabled'
        assert row['override']['reason'] == 'disk replacement'

        agent = agents()  # restarted on the same journal file
        row = agent.call('get_instance', domain.name)
        assert row['monitoring'] == 'disabled'
        assert row['override']['reason'] == 'disk replacement'

        row = agent.call('set_monitoring', domain.uuid, None)
        assert row['monitoring'] == 'monitored'
    finally:
        domain.destroy()
        domain.undefine()


def test_the_real_agent_answers_over_rabbitmq(rabbitmq, bus, tmp_path,
                                              backend, wait_for):
    exchange, host = bus
    config = tmp_path / 'agent.conf'
    config.write_text(
        '[DEFAULT]\nhost = %s\nconcurrency_backend = %s\n'
        'transport_url = %s\ncontrol_exchange = %s\nlog_file = %s\n'
        '[libvirt]\nconnection_uri = test:///default\n'
        '[database]\npath = %s\n[notifications]\nsinks = log\n'
        '[health]\nport = 0\n[guest_agent]\nenabled = false\n'
        % (host, backend, rabbitmq.transport_url, exchange,
           tmp_path / 'agent.log', tmp_path / 'vmha.sqlite'))
    agent = subprocess.Popen(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(config)], cwd=str(pipeline.REPO_ROOT),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    client_transport = rpcapi.get_transport(make_conf(
        host, transport_url=rabbitmq.transport_url,
        control_exchange=exchange))
    client = rpcapi.AgentAPI(client_transport, timeout=2)
    ctxt = {}
    try:
        def answers():
            assert agent.poll() is None, agent.stderr.read()
            try:
                return client.get_status(ctxt, host)['host'] == host
            except oslo_messaging.MessagingTimeout:
                return False
        wait_for(answers, timeout=60, what='vmha-agent to answer over RPC')

        rows = {row['name']: row for row in
                client.list_instances(ctxt, host)}
        # test:///default's own domain, in the agent's process.
        assert rows['test']['power_state'] == 'running'
        assert client.get_instance(ctxt, host, 'test')['uuid'] == \
            rows['test']['uuid']
        with pytest.raises(inventory.InstanceNotFound):
            client.get_instance(ctxt, host, 'no-such-vm')
        result = rpcapi.AgentAPI(client_transport, timeout=30).run_audit(
            ctxt, host, timeout=20)
        assert result['runs'] >= 2  # the start-up audit, then this one
        row = client.set_monitoring(ctxt, host, 'test', False,
                                    reason='disk replacement')
        assert row['monitoring'] == 'disabled'
        assert client.get_instance(ctxt, host, 'test')['monitoring'] == \
            'disabled'

        agent.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert agent.wait(timeout=30) == 0, agent.stderr.read()
        assert time.monotonic() - stopping < 15
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        client_transport.cleanup()


def test_the_real_agent_runs_vmha_action_over_rabbitmq(
        rabbitmq, bus, tmp_path, backend, wait_for):
    """vmha-action, a process of its own, asks the real vmha-agent (this
    run's backend: under eventlet a monkey patched process) to pause and
    unpause test:///default's own domain, through the broker."""
    exchange, host = bus
    config = tmp_path / 'agent.conf'
    config.write_text(
        '[DEFAULT]\nhost = %s\nconcurrency_backend = %s\n'
        'transport_url = %s\ncontrol_exchange = %s\nlog_file = %s\n'
        '[libvirt]\nconnection_uri = test:///default\n'
        '[database]\npath = %s\n[notifications]\nsinks = log\n'
        '[health]\nport = 0\n[guest_agent]\nenabled = false\n'
        % (host, backend, rabbitmq.transport_url, exchange,
           tmp_path / 'agent.log', tmp_path / 'vmha.sqlite'))
    agent = subprocess.Popen(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(config)], cwd=str(pipeline.REPO_ROOT),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    client_transport = rpcapi.get_transport(make_conf(
        host, transport_url=rabbitmq.transport_url,
        control_exchange=exchange))
    client = rpcapi.AgentAPI(client_transport, timeout=2)

    def vmha_action(*argv):
        return subprocess.run(
            [sys.executable, '-m', 'vmha.cmd.action', '--config-file',
             str(config), '--timeout', '30'] + list(argv),
            cwd=str(pipeline.REPO_ROOT), capture_output=True, text=True,
            timeout=60)

    try:
        def answers():
            assert agent.poll() is None, agent.stderr.read()
            try:
                return client.get_status({}, host)['host'] == host
            except oslo_messaging.MessagingTimeout:
                return False
        wait_for(answers, timeout=60, what='vmha-agent to answer over RPC')

        paused = vmha_action('test', 'pause')
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith('pause of test done')
        assert client.get_instance({}, host, 'test')['power_state'] == \
            'paused'

        unpaused = vmha_action('test', 'unpause', '--json')
        assert unpaused.returncode == 0, unpaused.stderr
        assert '"verdict": "accepted"' in unpaused.stdout
        assert client.get_instance({}, host, 'test')['power_state'] == \
            'running'

        missing = vmha_action('no-such-vm', 'stop')
        assert missing.returncode == 1
        assert 'no-such-vm' in missing.stderr
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        client_transport.cleanup()
