"""The local HTTP endpoint: /healthz, /metrics and /status.

A small WSGI application served on the concurrency backend
(``vmha.api.wsgi``: wsgiref threads, or eventlet.wsgi greenthreads), on the
loopback by default.  Nothing here waits on the event dispatcher:
/healthz reads timestamps; /status and /metrics make one local libvirt
call, off the eventlet hub.

* ``GET /healthz``: 200 and ``{"status": "ok", ...}`` or 503 and
  ``{"status": "unhealthy", ...}`` (``HealthCheck.report``).
* ``GET /metrics``: Prometheus text exposition.
* ``GET /status``: ``{"host", "health", "instances"}`` for vmha-status.

/metrics uses prometheus_client's exposition helpers on the agent's own
registry, not its ``make_wsgi_app``: that app answers HEAD with 405, sends
no Content-Length, and switches to gzip or the OpenMetrics format when
the scraper's Accept headers ask, which would change what vmha serves.
"""

import http
import json
import logging

from vmha.api import wsgi
from vmha.manager import metrics as metrics_lib

LOG = logging.getLogger(__name__)


class EndpointError(Exception):
    """The endpoint cannot listen (readable, one line)."""


class HttpEndpoint:
    """:param service: the ``AgentService`` (health_report, status,
        metrics)
    :param backend: a ``vmha.concurrency`` backend
    :param host: address to listen on
    :param port: TCP port (0: any free port, see ``port`` once started)
    :param options: the options that set host and port, for errors
    """

    def __init__(self, service, backend, host='127.0.0.1', port=8917,
                 options='[health] listen_host and port'):
        self._service = service
        self._options = options
        self._backend = backend
        self._address = (host, port)
        self._server = None

    @property
    def port(self):
        return self._server.port if self._server else None

    @property
    def url(self):
        host = self._address[0]
        return 'http://%s:%d' % ('[%s]' % host if ':' in host else host,
                                 self.port)

    def start(self):
        try:
            self._server = wsgi.serve(self._backend, self.app,
                                       *self._address)
        except OSError as error:
            raise EndpointError('cannot listen on %s port %d: %s (see %s)'
                                % (self._address[0], self._address[1],
                                   error.strerror or error,
                                   self._options)) from error
        LOG.info('Health, metrics and status on %s', self.url)

    def stop(self):
        if self._server is not None:
            self._server.stop()
            self._server = None

    def app(self, environ, start_response):
        """The WSGI application."""
        if environ.get('REQUEST_METHOD') not in ('GET', 'HEAD'):
            return _reply(start_response, 405, _json(
                {'error': 'only GET'}), 'application/json')
        path = environ.get('PATH_INFO', '')
        route = {'/healthz': self._healthz, '/metrics': self._metrics,
                 '/status': self._status}.get(path)
        if route is None:
            return _reply(start_response, 404, _json(
                {'error': 'not found; try /healthz, /metrics or /status'}),
                'application/json')
        try:
            code, body, content_type = route()
        except Exception as error:  # answer, whatever broke
            LOG.exception('GET %s failed', path)
            code, body, content_type = (500, _json({'error': str(error)}),
                                        'application/json')
        return _reply(start_response, code, body, content_type)

    def _healthz(self):
        report = self._service.health_report()
        return (200 if report['status'] == 'ok' else 503, _json(report),
                'application/json')

    def _metrics(self):
        return (200, self._service.metrics.exposition(),
                metrics_lib.CONTENT_TYPE)

    def _status(self):
        return 200, _json(self._service.status()), 'application/json'


def _json(body):
    return (json.dumps(body, indent=1) + '\n').encode()


def _reply(start_response, code, data, content_type):
    start_response('%d %s' % (code, http.HTTPStatus(code).phrase),
                   [('Content-Type', content_type),
                    ('Content-Length', str(len(data)))])
    return [data]
