"""Client side of the vmha-agent RPC API.

Every agent serves topic ``vmha-agent`` with ``server = [DEFAULT] host``
over ``[DEFAULT] transport_url`` (``vmha.api.rpc``); this module is what
other processes (``vmha-status --rpc``, operators' scripts) call::

    transport = rpcapi.get_transport(conf)
    agent = rpcapi.AgentAPI(transport, timeout=10)
    agent.set_monitoring({}, 'compute-1', 'instance-0000002a', False,
                         reason='maintenance until Friday')

The context is a plain dict, such as oslo.context's ``to_dict()``: for
``set_monitoring`` the agent records who asked from its ``user_id``,
``project_id`` and ``request_id`` (``{}``: anonymous).  A domain the
agent does not have raises ``inventory.InstanceNotFound`` here, as it
does in the agent; a change refused by a read-only agent (``[rpc]
allow_changes`` false) raises ``ChangesRefused``.

The API is versioned as nova's ``compute/rpcapi.py`` is: the server's
endpoint has a ``Target`` version, each client method asks for the
version that introduced it, and ``version_cap`` (or a release alias from
``AgentAPI.VERSION_ALIASES``) keeps a newer client talking to older
agents during an upgrade.
"""

import importlib
import threading

import oslo_messaging

import vmha.conf
from vmha.manager import action_runner
from vmha.manager import inventory
from vmha.manager import migration_driver

#: The topic every agent listens on; the server name is the agent's host.
TOPIC = 'vmha-agent'
#: The endpoint namespace, so that other endpoints (and their versions)
#: can share the topic later.
NAMESPACE = 'agent'

#: Seconds a call may take beyond its own timeout before the client
#: gives up on it (see ``_bounded``).
GRACE = 2.0

# oslo.messaging registers these on the global ``cfg.CONF`` only, but its
# clients, servers and drivers read them from the ``ConfigOpts`` they are
# given (oslo.messaging's own ConfFixture imports them the same way).
# vmha never uses the global CONF, so without them every call fails with
# NoSuchOptError (oslo_messaging_metrics, oslo_messaging_tracing).
_LIBRARY_OPTS = (
    ('oslo_messaging.transport', '_transport_opts', None),
    ('oslo_messaging._metrics.client', 'oslo_messaging_metrics',
     'oslo_messaging_metrics'),
    ('oslo_messaging._tracing.client', 'oslo_messaging_tracing',
     'oslo_messaging_tracing'),
)


class AuditTimeout(Exception):
    """The agent's power-state audit did not finish in time (it may be
    wedged, or libvirt unreachable: the agent then skips audits)."""


class ChangesRefused(Exception):
    """The agent's RPC API is read-only (``[rpc] allow_changes`` false)."""


# Remote exceptions turned back into local ones (by class name): the
# agent marks them expected, so oslo.messaging sends them as RemoteError.
_REMOTE_EXCEPTIONS = {
    'InstanceNotFound': inventory.InstanceNotFound,
    'AuditTimeout': AuditTimeout,
    'ChangesRefused': ChangesRefused,
    'UnknownAction': action_runner.UnknownAction,
    'ActionInProgress': action_runner.ActionInProgress,
    'MigrationRefused': migration_driver.MigrationRefused,
    'ValueError': ValueError,
}


class TooOld(Exception):
    """The agent (or ``version_cap``) is older than the call needs."""


def register_opts(conf):
    """Register the oslo.messaging options vmha reads or needs.

    ``[DEFAULT] transport_url`` and ``control_exchange`` (registered by
    oslo.messaging only once it builds a transport), and the option groups
    it registers only on the global CONF.  Safe to call again.
    """
    for module_name, attribute, group in _LIBRARY_OPTS:
        try:
            opts = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            continue  # another oslo.messaging release: nothing to repair
        conf.register_opts(opts, group=group)


def get_transport(conf):
    """The RPC transport of ``[DEFAULT] transport_url``, on vmha's
    exchange unless ``[DEFAULT] control_exchange`` says otherwise.
    Raises ``vmha.conf.ConfigError`` for a URL it cannot use."""
    oslo_messaging.set_transport_defaults(control_exchange='vmha')
    register_opts(conf)
    try:
        return oslo_messaging.get_rpc_transport(conf)
    except (oslo_messaging.MessagingException, ValueError) as error:
        raise vmha.conf.ConfigError(
            'invalid value for [DEFAULT] transport_url: %s' % error
        ) from error


def cleanup(transport, timeout=GRACE):
    """``transport.cleanup()``, given up after ``timeout`` seconds.

    After a call gave up on an unreachable broker (``AgentAPI``), the
    abandoned attempt holds the driver's reply-queue lock, and
    ``transport.cleanup()`` would wait for it for ever.  Returns whether
    the cleanup finished.
    """
    try:
        _bounded(transport.cleanup, timeout)
    except oslo_messaging.MessagingTimeout:
        return False
    return True


class AgentAPI:
    """Client side of the vmha-agent RPC API.

    API version history:

        * 1.0 - initial: list_instances, get_instance, run_audit,
                set_monitoring, get_status
        * 1.1 - request_action
        * 1.2 - recovery_changed (a cast, from vmha-masakari-bridge)
        * 1.3 - live_migrate, migration_task

    :param transport: an oslo.messaging RPC transport (``get_transport``)
    :param timeout: seconds to wait for an answer (default:
        ``[DEFAULT] rpc_response_timeout``)
    :param version_cap: the newest API version the agents understand, or
        a release name from ``VERSION_ALIASES`` (default: this client's)
    """

    VERSION = '1.3'

    # The newest API version each vmha release serves, for version_cap
    # while agents are upgraded host by host.
    VERSION_ALIASES = {
        '0.1': '1.0',
    }

    #: Seconds ``request_action`` waits for the agent by default: a vote
    #: (8 s), a notice (8 s), a graceful stop (60 s) and a post-notice
    #: (13 s) with the defaults, and the time to boot again after a cold
    #: migration (the guest's restart_secs, 300 s by default).
    ACTION_TIMEOUT = 420.0

    def __init__(self, transport, timeout=None, version_cap=None):
        register_opts(transport.conf)
        target = oslo_messaging.Target(topic=TOPIC, namespace=NAMESPACE,
                                       version=self.VERSION)
        version_cap = self.VERSION_ALIASES.get(version_cap, version_cap)
        self._client = oslo_messaging.get_rpc_client(
            transport, target, version_cap=version_cap)
        self._version_cap = version_cap
        self._timeout = (timeout if timeout is not None
                         else transport.conf.rpc_response_timeout)

    def list_instances(self, ctxt, host):
        """One row per domain of ``host`` (``Inventory.instances``)."""
        return self._call(ctxt, host, 'list_instances')

    def get_instance(self, ctxt, host, instance):
        """The row of the domain with UUID or name ``instance``; raises
        ``inventory.InstanceNotFound``."""
        return self._call(ctxt, host, 'get_instance', {'instance': instance})

    def run_audit(self, ctxt, host, timeout=60):
        """Run the power-state audit on ``host`` now and wait (up to
        ``timeout`` seconds) until it ran: ``{'runs', 'duration',
        'reported'}``.  Raises ``AuditTimeout``."""
        return self._call(ctxt, host, 'run_audit', {'timeout': timeout},
                          call_timeout=max(self._timeout, timeout + GRACE))

    def set_monitoring(self, ctxt, host, instance, enabled, reason=None):
        """Monitor the domain (``enabled`` True), stop monitoring it
        (False), or give it back to metadata and name patterns (None).
        The agent keeps the choice in its journal and in the domain's
        metadata, with an ``instance.monitoring`` notification naming who
        asked (from ``ctxt``).  Returns the row; raises
        ``inventory.InstanceNotFound``, ``ChangesRefused``."""
        return self._call(ctxt, host, 'set_monitoring', {
            'instance': instance, 'enabled': enabled, 'reason': reason})

    def get_status(self, ctxt, host):
        """What ``GET /status`` of ``host``'s agent says."""
        return self._call(ctxt, host, 'get_status')

    def request_action(self, ctxt, host, instance, action, vote_only=False,
                       timeout=None):
        """Ask ``host``'s agent to run the lifecycle ``action`` ('stop',
        'reboot', 'pause', 'unpause', 'suspend', 'resume', and the
        '-begin'/'-end' of 'resize', 'live-migrate', 'cold-migrate') on
        ``instance`` (UUID or name), after the heartbeat guest's vote; with
        ``vote_only`` the agent votes and notifies, and the caller acts.

        Returns ``{instance, name, action, action_id, verdict ('accepted'
        | 'rejected'), reason, done, phases: [{phase, event, result,
        reason, took_ms}]}``.  Raises ``inventory.InstanceNotFound``,
        ``ChangesRefused``, ``action_runner.UnknownAction``,
        ``action_runner.ActionInProgress``, and ``TooOld`` when the agents
        (``version_cap``) are older than 1.1.  Waits up to ``timeout``
        seconds (default ``ACTION_TIMEOUT``).
        """
        if not self._client.can_send_version('1.1'):
            raise TooOld('request_action needs agent RPC API 1.1; '
                         'version_cap is %s' % self._version_cap)
        timeout = self.ACTION_TIMEOUT if timeout is None else timeout
        return self._call(ctxt, host, 'request_action', {
            'instance': instance, 'action': action, 'vote_only': vote_only},
            version='1.1', call_timeout=timeout)
    def live_migrate(self, ctxt, host, instance, destination_uri,
                     options=None):
        """Migrate ``instance`` live from ``host`` to the libvirt URI
        ``destination_uri`` with vmha's policy (``[migration]`` of that
        agent); returns once it started (its progress and end are
        ``instance.migration`` notifications).  ``options``:
        ``block_migration`` (bool), ``bandwidth_mib`` (MiB/s).  Raises
        ``inventory.InstanceNotFound``, ``ChangesRefused``,
        ``MigrationRefused``."""
        return self._call(ctxt, host, 'live_migrate', {
            'instance': instance, 'destination_uri': destination_uri,
            'options': options}, version='1.3')

    def migration_task(self, ctxt, host, instance, task):
        """Queue ``task`` (``force_complete``, ``abort``, ``pause``) for
        the outgoing migration of ``instance``.  Raises ValueError (not
        migrating, unknown task), ``ChangesRefused``."""
        return self._call(ctxt, host, 'migration_task', {
            'instance': instance, 'task': task}, version='1.3')

    def recovery_changed(self, ctxt, host, recovery):
        """Tell ``host``'s agent what became of one of its failures (a
        cast: no answer; an agent that is down misses it, and the
        ``instance.recovery`` notifications stay the record).

        :param recovery: ``{'uuid', 'episode', 'notification_uuid',
            'status', 'reason', 'took', 'changed_at'}``
            (``vmha.bridge.follow.as_dict``)
        """
        cctxt = self._client.prepare(server=host, version='1.2')
        _bounded(lambda: cctxt.cast(ctxt, 'recovery_changed',
                                    recovery=recovery),
                 self._timeout + GRACE)

    def _call(self, ctxt, host, method, kwargs=None, version='1.0',
              call_timeout=None):
        call_timeout = call_timeout or self._timeout
        cctxt = self._client.prepare(server=host, version=version,
                                     timeout=call_timeout)
        try:
            return _bounded(
                lambda: cctxt.call(ctxt, method, **(kwargs or {})),
                call_timeout + GRACE)
        except oslo_messaging.RemoteError as error:
            local = _REMOTE_EXCEPTIONS.get(error.exc_type)
            if local is None:
                raise
            raise local(error.value) from error


def _bounded(call, seconds):
    """``call()``, given up after ``seconds``.

    With the broker down, oslo.messaging's rabbit driver retries
    opening the reply queue (and publishing) for ever, whatever the
    call's timeout.  The call runs on a thread of its own so that the
    caller gets MessagingTimeout instead of hanging; the abandoned
    thread goes on retrying until the process exits.
    """
    outcome = {}
    done = threading.Event()

    def run():
        try:
            outcome['result'] = call()
        except BaseException as error:  # handed to the caller
            outcome['error'] = error
        finally:
            done.set()

    threading.Thread(target=run, name='vmha-rpc-call',
                     daemon=True).start()
    if not done.wait(seconds):
        raise oslo_messaging.MessagingTimeout(
            'no answer within %gs; is the message bus reachable?'
            % seconds)
    if 'error' in outcome:
        raise outcome['error']
    return outcome['result']
