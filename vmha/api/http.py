"""The local HTTP endpoint: /healthz, /metrics and /status.

Served by the standard library's threading HTTP server (a thread per
request; green threads under eventlet), on the loopback by default.
Nothing here blocks the event dispatcher: /healthz reads timestamps,
/status and /metrics make one local libvirt call (off the hub).

* ``GET /healthz``: 200 and ``{"status": "ok", ...}`` or 503 and
  ``{"status": "unhealthy", ...}`` (``HealthCheck.report``).
* ``GET /metrics``: Prometheus text exposition.
* ``GET /status``: ``{"host", "health", "instances"}`` for vmha-status.
"""

import http.server
import json
import logging
import socket

from vmha.manager import metrics as metrics_lib

LOG = logging.getLogger(__name__)


class EndpointError(Exception):
    """The endpoint cannot listen (readable, one line)."""


class HttpEndpoint:
    """:param service: the ``AgentService`` (host, health, inventory,
        metrics)
    :param backend: a ``vmha.concurrency`` backend
    :param host: address to listen on
    :param port: TCP port (0: any free port, see ``port`` once started)
    """

    def __init__(self, service, backend, host='127.0.0.1', port=8917):
        self._service = service
        self._backend = backend
        self._address = (host, port)
        self._server = None
        self._task = None

    @property
    def port(self):
        return self._server.server_address[1] if self._server else None

    @property
    def url(self):
        host = self._address[0]
        if ':' in host:
            host = '[%s]' % host
        return 'http://%s:%d' % (host, self.port)

    def start(self):
        handler = type('Handler', (_Handler,), {'service': self._service})
        server_class = _Server
        if ':' in self._address[0]:
            server_class = type('Server6', (_Server,), {
                'address_family': socket.AF_INET6})
        try:
            self._server = server_class(self._address, handler)
        except OSError as error:
            raise EndpointError('cannot listen on %s port %d: %s (see '
                                '[health] listen_host and port)'
                                % (self._address[0], self._address[1],
                                   error.strerror or error)) from error
        self._task = self._backend.spawn(self._server.serve_forever,
                                         name='vmha-http')
        LOG.info('Health, metrics and status on %s', self.url)

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._task is not None:
                self._task.join(5)
            self._server = self._task = None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    service = None  # the AgentService, set per endpoint
    server_version = 'vmha'

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        route = {'/healthz': self._healthz, '/metrics': self._metrics,
                 '/status': self._status}.get(path)
        if route is None:
            self._send(404, {'error': 'not found; try /healthz, /metrics '
                                      'or /status'})
            return
        try:
            route()
        except Exception as error:  # answer, whatever broke
            LOG.exception('GET %s failed', path)
            self._send(500, {'error': str(error)})

    def _healthz(self):
        report = self.service.health_report()
        self._send(200 if report['status'] == 'ok' else 503, report)

    def _metrics(self):
        self._reply(200, self.service.metrics.exposition(),
                    metrics_lib.CONTENT_TYPE)

    def _status(self):
        self._send(200, self.service.status())

    def _send(self, code, body):
        self._reply(code, (json.dumps(body, indent=1) + '\n').encode(),
                    'application/json')

    def _reply(self, code, data, content_type):
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        LOG.debug('%s %s', self.address_string(), format % args)
