"""One running bridge: listener, endpoint, metrics, health and the local
HTTP endpoint, started and stopped together.

The HTTP endpoint (``[bridge] listen_host``, ``port``; 0 turns it off)
is the agent's ``vmha.api.http.HttpEndpoint``, served the same way:

* ``GET /healthz``: 200 ``{"status": "ok", "checks": {...}}`` or 503
  ``"unhealthy"`` (``health.BridgeHealth``);
* ``GET /metrics``: Prometheus text (``metrics.BridgeMetrics``);
* ``GET /status``: the pool, the topics, the health report and how many
  message ids the bridge remembers.
"""

import logging

from vmha import bridge
from vmha.api import http
from vmha.bridge import endpoint as bridge_endpoint
from vmha.bridge import health as bridge_health
from vmha.bridge import logs
from vmha.bridge import metrics as bridge_metrics
from vmha.masakari import client as masakari_client

LOG = logging.getLogger(__name__)


class BridgeService:
    """:param conf: the bridge's ConfigOpts
    :param transport: an oslo.messaging notification transport
    :param backend: a ``vmha.concurrency`` backend (threading)
    :raises vmha.masakari.client.MasakariConfigError: bad [masakari]
    """

    def __init__(self, conf, transport, backend):
        options = conf.bridge
        self._conf = conf
        self.metrics = bridge_metrics.BridgeMetrics()
        self.masakari = bridge_health.MasakariReachability()
        self.drops = logs.Drops(options.bad_message_log_rate, self.metrics)
        client = masakari_client.MasakariClient.from_conf(
            conf, on_request=self._on_request)
        self._forwarded_ids = bridge_endpoint.ForwardedIds(
            options.dedupe_size, options.dedupe_window)
        self.endpoint = bridge_endpoint.MasakariEndpoint(
            client, self._forwarded_ids, self.drops, self.metrics)
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

    def tick(self):
        """Once a second or so: log what the rate limits left out."""
        self.drops.flush()

    def stop(self):
        """Stop taking messages, let the ones in hand finish (ack or
        requeue), then close the HTTP endpoint."""
        self.listener.stop()
        self.listener.wait()
        if self.http is not None:
            self.http.stop()
        self.drops.flush(final=True)
        self._log_filter.remove()

    # What vmha.api.http.HttpEndpoint asks its service.

    def health_report(self):
        return self.health.report()

    def status(self):
        return {'pool': self._conf.bridge.pool,
                'topics': list(self._conf.notifications.topics),
                'health': self.health.report(),
                'remembered_message_ids': len(self._forwarded_ids)}
