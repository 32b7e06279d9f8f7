"""One running bridge: listener, endpoint, metrics, health and the local
HTTP endpoint, started and stopped together.

The HTTP endpoint (``[bridge] listen_host``, ``port``; 0 turns it off)
is the agent's ``vmha.api.http.HttpEndpoint``, served the same way:

* ``GET /healthz``: 200 ``{"status": "ok", "checks": {...}}`` or 503
  ``"unhealthy"`` (``health.BridgeHealth``);
* ``GET /metrics``: Prometheus text (``metrics.BridgeMetrics``);
* ``GET /status``: the pool, the topics, the health report, how many
  message ids the bridge remembers, and the recoveries it follows.

The ``follow.Follower`` runs on a thread of its own (``FOLLOW_TICK``):
it polls Masakari, publishes ``instance.recovery`` through the
``messaging`` sink (on ``[notifications] topics``, the transport the
bridge listens on) and, with ``[bridge] tell_agents``, casts each change
to the failed VM's agent.
"""

import logging
import threading
import uuid as uuid_lib

from vmha import bridge
from vmha.api import http
from vmha.bridge import endpoint as bridge_endpoint
from vmha.bridge import follow
from vmha.bridge import health as bridge_health
from vmha.bridge import logs
from vmha.bridge import metrics as bridge_metrics
from vmha.bridge import recovery_store
from vmha.masakari import client as masakari_client
from vmha.notify.sinks import messaging as messaging_sink
import vmha.objects

LOG = logging.getLogger(__name__)

#: Seconds between two turns of the follower's loop.
FOLLOW_TICK = 0.2
# instance.recovery message ids: the same (instance, episode, status)
# always gets the same id, so a re-publication after a restart is a
# duplicate consumers can drop.
_RECOVERY_NAMESPACE = uuid_lib.UUID('5d0f3c0e-6b7a-4f5e-9a51-8a3c2b1d7e40')


class BridgeService:
    """:param conf: the bridge's ConfigOpts
    :param transport: an oslo.messaging notification transport
    :param backend: a ``vmha.concurrency`` backend (threading)
    :param tell_agent: ``callable(host, recovery)``, or None for none;
        by default (``[bridge] tell_agents``) an RPC cast through
        ``vmha.rpcapi.AgentAPI.recovery_changed`` on ``[DEFAULT]
        transport_url``
    :raises vmha.masakari.client.MasakariConfigError: bad [masakari]
    :raises vmha.bridge.recovery_store.StateFileError: the state file
        cannot be used (or another bridge holds it)
    """

    def __init__(self, conf, transport, backend, tell_agent=False):
        options = conf.bridge
        self._conf = conf
        vmha.objects.register_all()
        self.metrics = bridge_metrics.BridgeMetrics()
        self.masakari = bridge_health.MasakariReachability()
        self.drops = logs.Drops(options.bad_message_log_rate, self.metrics)
        client = masakari_client.MasakariClient.from_conf(
            conf, on_request=self._on_request,
            on_get=self.metrics.observe_poll)
        self._forwarded_ids = bridge_endpoint.ForwardedIds(
            options.dedupe_size, options.dedupe_window)
        self.store = recovery_store.RecoveryStore(options.state_file)
        self._sink = messaging_sink.MessagingSink(conf, transport)
        self._rpc_transport = None
        if tell_agent is False:
            tell_agent = self._agent_caster() if options.tell_agents else None
        self.follower = follow.Follower(
            self.store, client, self._publish, follow.policy_from_conf(conf),
            conf.host, tell_agent=tell_agent,
            on_status=self.metrics.observe_recovery)
        self._following = threading.Event()
        self._follow_thread = None
        self.endpoint = bridge_endpoint.MasakariEndpoint(
            client, self._forwarded_ids, self.drops, self.metrics,
            follower=self.follower)
        self.listener = bridge.get_listener(conf, transport, self.endpoint,
                                            self.drops)
        self.health = bridge_health.BridgeHealth(
            self.listener, self.masakari, options.stall_timeout,
            options.masakari_failing_timeout)
        self.metrics.watch(self.health)
        self._log_filter = logs.OsloLogFilter(self.drops)
        self.http = None
        if options.port:
            self.http = http.HttpEndpoint(
                self, backend, options.listen_host, options.port,
                options='[bridge] listen_host and port')

    def _publish(self, notification):
        payload = notification.payload
        message_id = str(uuid_lib.uuid5(_RECOVERY_NAMESPACE, '%s/%s/%s' % (
            payload.uuid, payload.episode, payload.status)))
        self._sink.send(notification.to_message(message_id=message_id))

    def _agent_caster(self):
        """An RPC cast to the agents, or None without [DEFAULT]
        transport_url (logged)."""
        from oslo_config import cfg

        from vmha import rpcapi
        rpcapi.register_opts(self._conf)
        location = self._conf.get_location('transport_url')
        if location is None or location.location is cfg.Locations.opt_default:
            LOG.info('Not telling agents about recoveries: [DEFAULT] '
                     'transport_url is not set')
            return None
        self._rpc_transport = rpcapi.get_transport(self._conf)
        api = rpcapi.AgentAPI(self._rpc_transport)
        return lambda host, recovery: api.recovery_changed({}, host, recovery)

    def _follow(self):
        while not self._following.wait(FOLLOW_TICK):
            try:
                self.follower.step()
            except Exception:
                LOG.exception('Following recoveries failed; trying again')

    def _on_request(self, status, seconds, attempt):
        self.metrics.observe_request(status, seconds, attempt)
        self.masakari.observe(status)

    def start_http(self):
        """Listen on the HTTP endpoint, if there is one.

        :raises vmha.api.http.EndpointError: the address is taken
        """
        if self.http is not None:
            self.http.start()

    def start(self):
        """Consume from the bus.

        :raises oslo_messaging.ServerListenError: the bus refused
        """
        self._log_filter.install()
        try:
            self.listener.start(
                override_pool_size=self._conf.bridge.executor_threads)
        except Exception:
            self._log_filter.remove()
            raise
        self._following.clear()
        self._follow_thread = threading.Thread(
            target=self._follow, name='vmha-bridge-follow', daemon=True)
        self._follow_thread.start()

    def tick(self):
        """Once a second or so: log what the rate limits left out."""
        self.drops.flush()

    def stop(self):
        """Stop taking messages, let the ones in hand finish (ack or
        requeue), then close the HTTP endpoint."""
        self.listener.stop()
        self.listener.wait()
        self._following.set()
        if self._follow_thread is not None:
            self._follow_thread.join(30)
        if self.http is not None:
            self.http.stop()
        self.store.close()
        if self._rpc_transport is not None:
            from vmha import rpcapi
            rpcapi.cleanup(self._rpc_transport)
        self.drops.flush(final=True)
        self._log_filter.remove()

    # What vmha.api.http.HttpEndpoint asks its service.

    def health_report(self):
        return self.health.report()

    def status(self):
        return {'pool': self._conf.bridge.pool,
                'topics': list(self._conf.notifications.topics),
                'health': self.health.report(),
                'remembered_message_ids': len(self._forwarded_ids),
                'recoveries': [follow.as_dict(record)
                               for record in self.store.all()]}
