"""The agent's RPC API, client to server, over oslo.messaging's fake://.

A real agent (libvirt's test:///default driver, journal, outbox, the
RPC server ``vmha.agent.build`` adds when ``[DEFAULT]
transport_url`` is set) answers ``vmha.rpcapi.AgentAPI``.  fake:// lives
in one transport object, so the client uses the server's.

The agent here runs on the threading backend whatever this run's backend
is: under eventlet, vmha-agent serves RPC only in a monkey patched
process, which a test process must not be.  That configuration is tested
on the real vmha-agent over RabbitMQ
(``tests/integration/test_rpc_rabbitmq.py``).
"""

import json
import logging
import socket
import time
import uuid as uuid_lib

from oslo_config import cfg
import oslo_messaging
import pytest

from tests.fixtures import sinks
from vmha import agent as agent_lib
from vmha import concurrency
from vmha import objects
from vmha import rpcapi
from vmha.api import rpc as rpc_api
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.manager import inventory
from vmha.manager import migration_driver
from vmha.virt.libvirt import api as libvirt_api
from vmha.virt.libvirt import driver as libvirt_driver

pytestmark = pytest.mark.functional
objects.register_all()
# The backend of the in-process agent (see the module's docstring).
BACKEND = 'threading'
HOST = 'compute-1'
CTXT = {}
SHUTOFF = 5  # libvirt's VIR_DOMAIN_SHUTOFF


def make_conf(host=HOST, groups=None, **overrides):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    rpcapi.register_opts(conf)  # [DEFAULT] transport_url
    conf([], project='vmha', default_config_files=[])
    conf.set_override('host', host)
    conf.set_override('concurrency_backend', BACKEND)
    conf.set_override('port', 0, group='health')
    conf.set_override('enabled', False, group='guest_agent')
    conf.set_override('exclude_names', ['rpc-excluded-*'],
                      group='monitoring')
    for name, value in overrides.items():
        conf.set_override(name, value)
    for group, options in (groups or {}).items():
        for name, value in options.items():
            conf.set_override(name, value, group=group)
    return conf


class Agent:
    """A started agent on ``journal_path`` and its RPC client.

    :param client_transport: the client's (default: the server's own,
        as fake:// needs)
    :param groups: ``{group: {option: value}}``
    :param conf_options: [DEFAULT] options (default: transport_url
        fake:/)
    """

    def __init__(self, journal_path, host=HOST, client_transport=None,
                 groups=None, **conf_options):
        conf_options.setdefault('transport_url', 'fake:/')
        self.host = host
        self.journal = db.Journal(str(journal_path))
        self.outbox = outbox_lib.Outbox(self.journal)
        self.sink = sinks.RecordingSink()
        sender = sender_lib.OutboxSender(self.outbox, self.sink, BACKEND)
        driver = libvirt_driver.LibvirtDriver(
            'test:///default', backend=BACKEND, stopped_delay=0)
        self.service = agent_lib.build(
            make_conf(host, groups, **conf_options), driver, self.journal,
            self.outbox, sender)
        [self.rpc] = [surface for surface in self.service.surfaces
                      if isinstance(surface, rpc_api.RpcServer)]
        self.service.start()
        self.client = rpcapi.AgentAPI(
            client_transport or self.rpc.transport, timeout=10)

    def call(self, method, *args, ctxt=CTXT, **kwargs):
        """``AgentAPI.<method>(ctxt, host, ...)``."""
        return getattr(self.client, method)(ctxt, self.host, *args,
                                            **kwargs)

    def monitoring_notifications(self, uuid):
        """The payload data of each instance.monitoring about ``uuid``,
        oldest first (from the outbox: delivered or not)."""
        rows = self.journal.query(
            "SELECT payload FROM outbox WHERE event_type = "
            "'instance.monitoring' ORDER BY seq")
        payloads = [json.loads(row[0])['vmha_object.data'] for row in rows]
        return [p for p in payloads if p['uuid'] == uuid]

    def events(self, name):
        """The vir_domain_event of each notification about ``name``."""
        return [m.payload['vmha_object.data'].get('vir_domain_event')
                for m in self.sink.messages
                if m.payload['vmha_object.data'].get('name') == name]

    def stop(self):
        self.service.stop()
        self.journal.close()


@pytest.fixture
def libvirt_conn():
    """A connection of the test's own to test:///default: the driver's
    domains live as long as one connection is open, so they outlive an
    agent restart."""
    conn = libvirt_api.LibvirtAPI().open('test:///default')
    yield conn
    conn.close()


@pytest.fixture
def agents(tmp_path, libvirt_conn):
    """``agents()``: a started agent on this test's journal file."""
    started = []

    def start():
        if started:
            started[-1].stop()
        started.append(Agent(tmp_path / 'vmha.sqlite'))
        return started[-1]

    yield start
    started[-1].stop()


@pytest.fixture
def boot(libvirt_conn):
    """``boot(prefix)``: a defined, running domain with a unique name;
    destroyed and undefined at the end of the test."""
    domains = []

    def create(prefix='rpc'):
        name = '%s-%s' % (prefix, uuid_lib.uuid4().hex[:8])
        domain = libvirt_conn.define_domain(
            "<domain type='test'><name>%s</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>" % name)
        domain.start()
        domains.append(domain)
        return domain

    yield create
    for domain in domains:
        if domain.state()[0] != SHUTOFF:
            domain.destroy()
        domain.undefine()


def test_list_instances_shows_each_domain_with_its_state(agents, boot):
    agent = agents()
    running = boot()
    paused = boot()
    paused.suspend()

    rows = {row['name']: row for row in agent.call('list_instances')}

    assert rows[running.name]['uuid'] == running.uuid
    assert rows[running.name]['power_state'] == 'running'
    assert rows[paused.name]['power_state'] == 'paused'
    assert rows[running.name]['monitoring'] == 'monitored'
    assert rows['test']['power_state'] == 'running'  # the driver's own


def test_get_instance_by_uuid_and_by_name(agents, boot):
    agent = agents()
    domain = boot()

    by_uuid = agent.call('get_instance', domain.uuid)
    by_name = agent.call('get_instance', domain.name)

    assert by_uuid['name'] == domain.name
    assert by_name['uuid'] == domain.uuid
    assert by_uuid == by_name


def test_unknown_instance_raises_instance_not_found_in_the_client(agents):
    agent = agents()
    with pytest.raises(inventory.InstanceNotFound, match='no-such-vm'):
        agent.call('get_instance', 'no-such-vm')
    with pytest.raises(inventory.InstanceNotFound):
        agent.call('set_monitoring', 'no-such-vm', False)


def test_run_audit_returns_once_the_audit_ran(agents, wait_for):
    agent = agents()
    audit = agent.service.audit
    wait_for(lambda: audit.runs >= 1, what='the start-up audit')
    before = audit.runs

    result = agent.call('run_audit', timeout=30)

    assert audit.runs > before
    assert result['runs'] == audit.runs
    assert result['reported'] == 0
    assert result['duration'] >= 0


def test_get_status_is_the_status_body(agents, boot):
    agent = agents()
    domain = boot()

    status = agent.call('get_status')

    assert status['host'] == HOST
    assert status['health']['host'] == HOST
    assert domain.uuid in {row['uuid'] for row in status['instances']}


def test_disabled_domain_is_not_reported_and_the_choice_survives_restart(
        agents, boot, wait_for):
    agent = agents()
    quiet = boot()
    watched = boot()

    row = agent.call('set_monitoring', quiet.uuid, False,
                     reason='maintenance until Friday')

    assert row['monitoring'] == 'disabled'
    assert row['override']['enabled'] is False
    assert row['override']['reason'] == 'maintenance until Friday'
    # Events are dispatched in order: once the watched domain's STOPPED
    # is out, the quiet one's (earlier) was handled and dropped.
    quiet.destroy()
    watched.destroy()
    wait_for(lambda: 'STOPPED_DESTROYED' in agent.events(watched.name),
             what="the watched domain's STOPPED notification")
    assert 'STOPPED_DESTROYED' not in agent.events(quiet.name)

    agent = agents()  # a new agent on the same journal file

    row = agent.call('get_instance', quiet.name)
    assert row['monitoring'] == 'disabled'
    assert row['override']['reason'] == 'maintenance until Friday'


def test_set_monitoring_none_gives_the_domain_back_to_the_rules(
        agents, boot):
    agent = agents()
    excluded = boot('rpc-excluded')
    assert agent.call('get_instance', excluded.uuid)['monitoring'] == \
        'excluded'

    row = agent.call('set_monitoring', excluded.uuid, True, reason='keep')
    assert row['monitoring'] == 'monitored'

    row = agent.call('set_monitoring', excluded.uuid, None)
    assert row['monitoring'] == 'excluded'
    assert row['override'] is None
    agent = agents()
    assert agent.call('get_instance', excluded.uuid)['monitoring'] == \
        'excluded'


def test_set_monitoring_refuses_what_is_not_a_choice(agents, boot):
    agent = agents()
    domain = boot()
    with pytest.raises(ValueError, match='enabled must be'):
        agent.call('set_monitoring', domain.uuid, 'false')
    with pytest.raises(ValueError, match='reason must be text'):
        agent.call('set_monitoring', domain.uuid, False, {'why': 'x'})
    assert agent.call('get_instance', domain.uuid)['override'] is None


def test_rpc_server_is_off_unless_the_operator_set_a_transport_url(
        caplog):
    caplog.set_level(logging.INFO, logger='vmha.api.rpc')
    # oslo.messaging's own default ('rabbit://') is no operator's choice.
    assert rpc_api.RpcServer.from_conf(make_conf(), service=None) is None
    assert 'transport_url is not set' in caplog.text

    conf = make_conf(transport_url='fake:/')
    conf.set_override('enabled', False, group='rpc')
    assert rpc_api.RpcServer.from_conf(conf, service=None) is None
    assert '[rpc] enabled is false' in caplog.text


def test_unusable_transport_url_is_a_configuration_error():
    conf = make_conf(transport_url='rabbbit://guest:secret@broker/')
    with pytest.raises(vmha.conf.ConfigError) as raised:
        rpc_api.RpcServer.from_conf(conf, service=None)
    assert 'transport_url' in str(raised.value)
    assert 'rabbbit' in str(raised.value)
    assert 'secret' not in str(raised.value)


def closed_port():
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_client_gives_up_on_an_unreachable_broker():
    """oslo.messaging's rabbit driver retries opening the reply queue for
    ever, whatever the call's timeout: vmha-status --rpc must not hang."""
    conf = make_conf(transport_url='rabbit://guest:guest@127.0.0.1:%d/'
                     % closed_port())
    transport = rpcapi.get_transport(conf)
    client = rpcapi.AgentAPI(transport, timeout=1)
    started = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client.get_status(CTXT, HOST)
    assert time.monotonic() - started < 1 + 2 * rpcapi.GRACE
    assert rpcapi.cleanup(transport) is False


def test_agent_starts_and_stops_promptly_while_the_broker_is_down(
        tmp_path, caplog, wait_for):
    """oslo.messaging's rabbit driver retries creating the listener for
    ever; the agent must neither wait for it at start nor at stop.  (The
    abandoned attempt retries until this process exits.)"""
    started = time.monotonic()
    agent = Agent(tmp_path / 'vmha.sqlite',
                  transport_url='rabbit://guest:guest@127.0.0.1:%d/'
                  % closed_port())
    try:
        assert time.monotonic() - started < 5
        # The agent works meanwhile.
        wait_for(lambda: agent.service.audit.runs >= 1,
                 what='the start-up audit')
        assert not agent.rpc.listening
    finally:
        stopping = time.monotonic()
        agent.stop()
    assert time.monotonic() - stopping < 5
    assert 'never reached the message bus' in caplog.text


# An oslo.context RequestContext.to_dict() holds these (and more).
OPERATOR = {'user_id': 'alice', 'project_id': 'ops',
            'request_id': 'req-5c2b1d7e', 'roles': ['admin']}


def test_set_monitoring_is_a_notification_naming_who_asked(agents, boot):
    """Regression (issue 11 item 7): a change of monitoring left nothing
    but a log line."""
    agent = agents()
    domain = boot()

    row = agent.call('set_monitoring', domain.uuid, False,
                     reason='maintenance until Friday', ctxt=OPERATOR)
    agent.call('set_monitoring', domain.uuid, None)

    who = 'user=alice project=ops request_id=req-5c2b1d7e'
    assert row['override']['requested_by'] == who
    disabled, cleared = agent.monitoring_notifications(domain.uuid)
    assert disabled == dict(
        disabled, uuid=domain.uuid, name=domain.name, host=HOST,
        enabled=False, previous=None, reason='maintenance until Friday',
        requested_by=who, source='rpc')
    assert (cleared['enabled'], cleared['previous'],
            cleared['requested_by']) == (None, False, 'rpc (anonymous)')


def test_allow_changes_false_makes_the_rpc_api_read_only(tmp_path, boot):
    agent = Agent(tmp_path / 'vmha.sqlite',
                  groups={'rpc': {'allow_changes': False}})
    try:
        domain = boot()
        with pytest.raises(rpcapi.ChangesRefused, match='read-only'):
            agent.call('set_monitoring', domain.uuid, False,
                       ctxt=OPERATOR)
        row = agent.call('get_instance', domain.uuid)
        assert row['override'] is None
        assert row['monitoring'] == 'monitored'
        assert agent.call('get_status')['host'] == HOST
        assert agent.monitoring_notifications(domain.uuid) == []
    finally:
        agent.stop()


def migration_notifications(agent, uuid):
    rows = agent.journal.query(
        "SELECT payload FROM outbox WHERE event_type = "
        "'instance.migration' ORDER BY seq")
    payloads = [json.loads(row[0])['vmha_object.data'] for row in rows]
    return [(p['phase'], p['direction'], p['driven'])
            for p in payloads if p['uuid'] == uuid]


def test_live_migrate_that_libvirt_refuses_is_an_error_not_a_failure(
        agents, boot, wait_for):
    """test:///default cannot migrate: the call fails, the domain runs
    on, the error is notified, and nothing calls it a failure."""
    agent = agents()
    domain = boot('mig')
    answer = agent.call('live_migrate', domain.name, 'test:///default',
                        ctxt=OPERATOR)
    assert answer['instance'] == domain.uuid
    wait_for(lambda: migration_notifications(agent, domain.uuid)[-1:] ==
             [('error', 'outgoing', True)], what='the error notification')
    assert migration_notifications(agent, domain.uuid)[0] == (
        'start', 'outgoing', True)
    assert domain.state()[0] == 1  # running
    assert agent.call('run_audit')['reported'] == 0
    rows = agent.journal.query(
        "SELECT count(*) FROM outbox WHERE event_type = 'instance.failure'")
    assert rows[0][0] == 0


def test_migration_rpc_refuses_what_it_cannot_do(agents, boot):
    agent = agents()
    domain = boot('mig')
    with pytest.raises(migration_driver.MigrationRefused, match='URI'):
        agent.call('live_migrate', domain.uuid, 'compute-2', ctxt=OPERATOR)
    with pytest.raises(ValueError, match='not migrating'):
        agent.call('migration_task', domain.uuid, 'abort', ctxt=OPERATOR)
    with pytest.raises(inventory.InstanceNotFound):
        agent.call('live_migrate', 'no-such-vm', 'test:///default')


def test_the_migrate_verbs_of_vmha_action(agents, boot, wait_for):
    from vmha.cmd import migrate
    agent = agents()
    domain = boot('mig')
    line, code = migrate.run(agent.client, OPERATOR, HOST, domain.name,
                             'migrate', 'test:///default')
    assert code == 0 and line.startswith('live migration of %s to '
                                         'test:///default started'
                                         % domain.name)
    wait_for(lambda: migration_notifications(agent, domain.uuid)[-1:] ==
             [('error', 'outgoing', True)], what='the error notification')
    line, code = migrate.run(agent.client, OPERATOR, HOST, domain.name,
                             'migrate-abort')
    assert code == migrate.EXIT_FAILED and 'not migrating' in line
    assert migrate.run(agent.client, OPERATOR, HOST, domain.name,
                       'migrate')[1] == migrate.EXIT_CONFIG


def test_allow_changes_false_refuses_migrations(tmp_path, boot):
    agent = Agent(tmp_path / 'vmha.sqlite',
                  groups={'rpc': {'allow_changes': False}})
    try:
        domain = boot()
        with pytest.raises(rpcapi.ChangesRefused, match='read-only'):
            agent.call('live_migrate', domain.uuid, 'test:///default')
        with pytest.raises(rpcapi.ChangesRefused, match='read-only'):
            agent.call('migration_task', domain.uuid, 'abort')
        assert migration_notifications(agent, domain.uuid) == []
    finally:
        agent.stop()


def define(conn, name, uuid=None):
    return conn.define_domain(
        "<domain type='test'><name>%s</name>%s<memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
        % (name, '<uuid>%s</uuid>' % uuid if uuid else ''))


def test_an_undefined_domain_defined_again_is_monitored_again(
        agents, libvirt_conn, wait_for):
    """Regression (issue 11 item 7): the choice outlived the domain, so
    a VM defined again with the same UUID was silently unmonitored."""
    agent = agents()
    name = 'rpc-again-%s' % uuid_lib.uuid4().hex[:8]
    domain = define(libvirt_conn, name)
    domain.start()
    uuid = domain.uuid
    agent.call('set_monitoring', uuid, False, reason='retiring')

    domain.destroy()
    domain.undefine()
    wait_for(lambda: [n['source'] for n in agent.monitoring_notifications(
        uuid)] == ['rpc', 'undefined'], what='the choice dropped')

    domain = define(libvirt_conn, name, uuid)  # fresh XML, same UUID
    try:
        domain.start()
        wait_for(lambda: agent.call('get_instance', uuid)['monitoring']
                 == 'monitored', what='monitored again')
        assert agent.call('get_instance', uuid)['override'] is None
        agent = agents()  # and after a restart
        assert agent.call('get_instance', uuid)['monitoring'] == \
            'monitored'
    finally:
        domain.destroy()
        domain.undefine()


def test_a_choice_made_while_the_agent_was_down_is_dropped_by_the_audit(
        agents, libvirt_conn, wait_for):
    agent = agents()
    domain = define(libvirt_conn, 'rpc-gone-%s' % uuid_lib.uuid4().hex[:8])
    domain.start()
    agent.call('set_monitoring', domain.uuid, False)
    agent.stop()
    domain.destroy()
    domain.undefine()

    agent = agents()

    wait_for(lambda: [n['source'] for n in agent.monitoring_notifications(
        domain.uuid)] == ['rpc', 'vanished'], what='the audit dropping it')


def test_the_choice_follows_the_domain_to_another_agent(agents, boot,
                                                        tmp_path):
    """The choice is in the domain's metadata: the agent of the host a
    domain migrates to (here: a second agent, with a journal of its own,
    on the same test driver) adopts it."""
    source = agents()
    domain = boot()
    source.call('set_monitoring', domain.uuid, False,
                reason='maintenance until Friday', ctxt=OPERATOR)
    source.stop()

    destination = Agent(tmp_path / 'destination.sqlite', host='compute-2')
    try:
        row = destination.call('get_instance', domain.uuid)
        assert row['monitoring'] == 'disabled'
        assert row['override']['reason'] == 'maintenance until Friday'
        who = 'user=alice project=ops request_id=req-5c2b1d7e'
        assert row['override']['requested_by'] == who
        [adopted] = destination.monitoring_notifications(domain.uuid)
        assert (adopted['source'], adopted['requested_by'],
                adopted['host'], adopted['enabled']) == (
            'metadata', who, 'compute-2', False)
    finally:
        destination.stop()


def test_rpc_under_eventlet_needs_a_monkey_patched_process():
    # A test process is never patched: its calls would block the hub on
    # kombu's sockets, so the server refuses to start that way.
    transport = rpcapi.get_transport(make_conf(transport_url='fake:/'))
    try:
        with pytest.raises(RuntimeError, match='monkey patched process'):
            rpc_api.RpcServer(transport, service=None,
                              backend=concurrency.get('eventlet'))
    finally:
        transport.cleanup()
