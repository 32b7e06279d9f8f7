"""The agent's RPC server: topic ``vmha-agent``, server ``[DEFAULT] host``.

``AgentEndpoint`` answers ``vmha.rpcapi.AgentAPI``: the inventory rows,
an audit on demand, an operator's monitoring choice, the status, and
(1.1) a lifecycle action a heartbeat guest votes on.  It shows and
switches; the monitors and the action runner decide.

``RpcServer`` is one of the service's surfaces.  It is off unless the
operator set ``[DEFAULT] transport_url`` (oslo.messaging's default,
``rabbit://`` on localhost, is not a choice anyone made) and
``[rpc] enabled`` is true.  It never holds up the agent: with the broker
down, oslo.messaging's rabbit driver retries creating the listener for
ever, so the server starts on a task of its own, and ``stop`` waits a
bounded time.

Where endpoint methods run, in the two configurations ``vmha-agent``
runs in:

* ``threading``: oslo.messaging's threading executor (native threads).
* ``eventlet``: its eventlet executor, greenthreads on the hub, like
  every other task of the agent.  ``vmha-agent`` monkey patches the
  process (``vmha.cmd.select_backend``) before anything opens a socket;
  an unpatched process cannot serve RPC under eventlet (kombu's sockets
  would block the hub), and ``RpcServer`` refuses it.
"""

import logging
import time

from oslo_config import cfg
import oslo_messaging

from vmha import concurrency
from vmha import rpcapi
from vmha.manager import action_runner
from vmha.manager import inventory
from vmha.manager import lifecycle_actions
from vmha.manager import migration_driver
from vmha.manager import overrides

LOG = logging.getLogger(__name__)

#: Seconds ``RpcServer.stop`` waits for calls in progress to finish.
STOP_TIMEOUT = 10.0
#: Seconds between two looks at the audit (``run_audit``) or at a
#: background start/stop.
POLL = 0.02


class AgentEndpoint:
    """The RPC API of one agent (``vmha.rpcapi.AgentAPI`` is the client).

    :param service: the ``AgentService`` (inventory, audit, status)
    :param backend: the ``vmha.concurrency`` backend
    :param allow_changes: whether ``set_monitoring`` and
        ``request_action`` may change anything (``[rpc] allow_changes``)
    """

    # The newest version this endpoint serves (history in
    # rpcapi.AgentAPI); it serves every 1.x before it too.
    target = oslo_messaging.Target(namespace=rpcapi.NAMESPACE,
                                   version='1.3')

    def __init__(self, service, backend, allow_changes=True):
        self._service = service
        self._backend = backend
        self._allow_changes = allow_changes

    def list_instances(self, ctxt):
        return self._service.inventory.instances()

    @oslo_messaging.expected_exceptions(inventory.InstanceNotFound)
    def get_instance(self, ctxt, instance):
        return self._service.inventory.instance(instance)

    @oslo_messaging.expected_exceptions(rpcapi.AuditTimeout)
    def run_audit(self, ctxt, timeout=60):
        return self._run_audit(timeout)

    @oslo_messaging.expected_exceptions(inventory.InstanceNotFound,
                                        ValueError, rpcapi.ChangesRefused)
    def set_monitoring(self, ctxt, instance, enabled, reason=None):
        who = overrides.requested_by(ctxt)
        if not self._allow_changes:
            LOG.warning('set_monitoring of %s refused (asked by %s): '
                        '[rpc] allow_changes is false', instance, who)
            raise rpcapi.ChangesRefused(
                'the RPC API of %s is read-only ([rpc] allow_changes is '
                'false): monitoring of %s not changed'
                % (self._service.host, instance))
        if enabled not in (True, False, None):
            raise ValueError('enabled must be true, false or null, not %r'
                             % (enabled,))
        if reason is not None and not isinstance(reason, str):
            raise ValueError('reason must be text or null, not %r'
                             % (reason,))
        return self._service.inventory.set_monitoring(instance, enabled,
                                                      reason, who)

    def get_status(self, ctxt):
        return self._service.status()

    @oslo_messaging.expected_exceptions(
        inventory.InstanceNotFound, rpcapi.ChangesRefused,
        action_runner.UnknownAction, action_runner.ActionInProgress,
        ValueError)
    def request_action(self, ctxt, instance, action, vote_only=False):
        """API 1.1: run ``action`` on ``instance`` after the guest's vote
        (``ActionRunner.request``); returns its verdict and phases."""
        who = overrides.requested_by(ctxt)
        if not self._allow_changes:
            LOG.warning('request_action %s of %s refused (asked by %s): '
                        '[rpc] allow_changes is false', action, instance,
                        who)
            raise rpcapi.ChangesRefused(
                'the RPC API of %s is read-only ([rpc] allow_changes is '
                'false): no %s of %s' % (self._service.host, action,
                                         instance))
        if not isinstance(vote_only, bool):
            raise ValueError('vote_only must be true or false, not %r'
                             % (vote_only,))
        runner = self._service.actions
        if runner is None:
            raise ValueError('lifecycle actions are not available on %s'
                             % self._service.host)
        row = lifecycle_actions.row(action)  # or UnknownAction
        found = self._service.inventory.instance(instance)
        return runner.request(found['uuid'], found['name'], row.action,
                              vote_only=vote_only, requested_by=who)

    def recovery_changed(self, ctxt, recovery):
        """1.2: what the bridge learnt from Masakari about a failure of
        this host (a cast); bad input is logged and dropped."""
        recoveries = getattr(self._service, 'recoveries', None)
        if recoveries is None:
            return
        recoveries.changed(recovery)

    def _refuse_changes(self, what, instance, ctxt):
        if not self._allow_changes:
            LOG.warning('%s of %s refused (asked by %s): [rpc] '
                        'allow_changes is false', what, instance,
                        overrides.requested_by(ctxt))
            raise rpcapi.ChangesRefused(
                'the RPC API of %s is read-only ([rpc] allow_changes is '
                'false): %s of %s refused'
                % (self._service.host, what, instance))

    def _migrations(self):
        driver = getattr(self._service, 'migration_driver', None)
        if driver is None:
            raise migration_driver.MigrationRefused(
                'the migration monitor is off on %s' % self._service.host)
        return driver

    @oslo_messaging.expected_exceptions(
        inventory.InstanceNotFound, rpcapi.ChangesRefused,
        migration_driver.MigrationRefused)
    def live_migrate(self, ctxt, instance, destination_uri, options=None):
        self._refuse_changes('live_migrate', instance, ctxt)
        row = self._service.inventory.instance(instance)
        LOG.info('live_migrate of %s (%s) to %s asked by %s', row['name'],
                 row['uuid'], destination_uri, overrides.requested_by(ctxt))
        return self._migrations().live_migrate(row['uuid'], row['name'],
                                               destination_uri, options)

    @oslo_messaging.expected_exceptions(
        inventory.InstanceNotFound, rpcapi.ChangesRefused, ValueError,
        migration_driver.MigrationRefused)
    def migration_task(self, ctxt, instance, task):
        self._refuse_changes('migration_task', instance, ctxt)
        row = self._service.inventory.instance(instance)
        LOG.info('migration task %s for %s (%s) asked by %s', task,
                 row['name'], row['uuid'], overrides.requested_by(ctxt))
        return self._migrations().task(row['uuid'], task)

    def _run_audit(self, timeout):
        """Request an audit and wait until one that started after the
        request has finished."""
        audit = self._service.audit
        before = audit.runs
        asked_at = time.time()  # the audit's clock (last_run_at)
        LOG.info('Power-state audit requested over RPC')
        audit.request()
        deadline = time.monotonic() + timeout
        previous = None
        while True:
            seen = (audit.runs, audit.last_run_at, audit.last_duration,
                    audit.last_reported)
            # run_once sets these one after the other: a snapshot that
            # stayed the same for one poll belongs to one run.
            if seen[0] > before and (seen[1] or 0) >= asked_at and \
                    seen == previous:
                return {'runs': seen[0], 'duration': seen[2],
                        'reported': seen[3]}
            if time.monotonic() > deadline:
                raise rpcapi.AuditTimeout(
                    'the power-state audit on %s did not finish within '
                    '%gs (libvirt unreachable, or the audit wedged: see '
                    '/healthz)' % (self._service.host, timeout))
            previous = seen
            self._backend.sleep(POLL)


class RpcServer:
    """The oslo.messaging RPC server of one agent; a service surface.

    :param transport: the RPC transport (``rpcapi.get_transport``)
    :param service: the ``AgentService``
    :param backend: the ``vmha.concurrency`` backend
    :param allow_changes: ``[rpc] allow_changes``
    :raises RuntimeError: under eventlet without monkey patching
    """

    def __init__(self, transport, service, backend, allow_changes=True):
        if backend.name == 'eventlet' and not _monkey_patched():
            raise RuntimeError(
                'the RPC API under the eventlet backend needs a monkey '
                'patched process, as vmha-agent makes it')
        self.transport = transport
        self._service = service
        self._backend = backend
        self.endpoint = AgentEndpoint(service, backend,
                                      allow_changes=allow_changes)
        self.target = oslo_messaging.Target(topic=rpcapi.TOPIC,
                                            server=service.host)
        self._server = oslo_messaging.get_rpc_server(
            transport, self.target, [self.endpoint], executor=backend.name,
            access_policy=oslo_messaging.DefaultRPCAccessPolicy)
        self._starting = None

    @classmethod
    def from_conf(cls, conf, service):
        """The server, or None when the RPC API is off (logged).  Raises
        ``vmha.conf.ConfigError`` for a transport_url it cannot use."""
        if not conf.rpc.enabled:
            LOG.info('RPC API off: [rpc] enabled is false')
            return None
        rpcapi.register_opts(conf)
        location = conf.get_location('transport_url')
        if location is None or \
                location.location is cfg.Locations.opt_default:
            LOG.info('RPC API off: [DEFAULT] transport_url is not set')
            return None
        if not conf.rpc.allow_changes:
            LOG.info('RPC API read-only: [rpc] allow_changes is false')
        return cls(rpcapi.get_transport(conf), service,
                   concurrency.get(conf.concurrency_backend),
                   allow_changes=conf.rpc.allow_changes)

    @property
    def listening(self):
        """Whether the server consumes from the broker yet."""
        return bool(self._starting and self._starting.done
                    and self._starting.error is None)

    def start(self):
        self._starting = _Background(self._backend, self._start_server,
                                     'vmha-rpc-start')
        LOG.info('RPC API on topic %s, server %s: connecting to the '
                 'message bus in the background', self.target.topic,
                 self.target.server)

    def _start_server(self):
        try:
            self._server.start()
        except Exception:
            LOG.exception('RPC API on topic %s, server %s failed to start; '
                          'the agent goes on without it', self.target.topic,
                          self.target.server)
            raise
        LOG.info('RPC API listening on topic %s, server %s',
                 self.target.topic, self.target.server)

    def stop(self, timeout=STOP_TIMEOUT):
        starting, self._starting = self._starting, None
        if starting is None:
            return
        if not starting.done:
            # oslo.messaging's stop() waits for start() to return, which
            # it may never do while the broker is down.
            LOG.warning('RPC API never reached the message bus; its '
                        'connection attempts are abandoned')
            return
        if starting.error is None:
            stopping = _Background(self._backend, self._stop_server,
                                   'vmha-rpc-stop')
            if not stopping.wait(timeout):
                LOG.warning('RPC API did not stop within %gs (calls still '
                            'running, or the message bus unreachable); '
                            'going on without it', timeout)
                return
        self.transport.cleanup()

    def _stop_server(self):
        try:
            self._server.stop()
            self._server.wait()
        except Exception:
            LOG.exception('RPC API on topic %s, server %s did not stop '
                          'cleanly', self.target.topic, self.target.server)
            raise


class _Background:
    """``function()`` on a task of the backend, where it may block;
    ``wait`` polls, so the hub goes on meanwhile."""

    def __init__(self, backend, function, name):
        self._backend = backend
        self._function = function
        self.done = False
        self.error = None
        backend.spawn(self._run, name=name)

    def _run(self):
        try:
            self._function()
        except Exception as error:  # the function logged it
            self.error = error
        finally:
            self.done = True

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.done and time.monotonic() < deadline:
            self._backend.sleep(POLL)
        return self.done


def _monkey_patched():
    from eventlet import patcher
    return patcher.is_monkey_patched('thread') and \
        patcher.is_monkey_patched('socket')
