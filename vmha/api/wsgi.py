"""Serving a WSGI application on the agent's concurrency backend.

``serve(backend, app, host, port)`` listens and serves until ``stop()``:
under ``threading`` wsgiref, a native thread per request; under
``eventlet`` eventlet.wsgi, a greenthread per request on eventlet's own
sockets (no monkey patching needed).  The HTTP endpoints of the agent and
the bridge (``vmha.api.http``) use it; HTTP lives with the API, the
backend only provides threads.
"""

import logging
import socket
import socketserver

LOG = logging.getLogger(__name__)


class WSGIServer:
    """A running HTTP server: its ``port`` and ``stop()``."""

    def __init__(self, port, stop):
        self.port = port
        self.stop = stop


def serve(backend, app, host, port):
    """Serve ``app`` on (host, port); returns a ``WSGIServer``.  Raises
    OSError when it cannot listen."""
    if backend.name == 'eventlet':
        return _serve_eventlet(app, host, port)
    return _serve_threads(backend, app, host, port)


def _serve_threads(backend, app, host, port):
    from wsgiref import simple_server

    class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
        daemon_threads = True
        address_family = _family(host)

    class Handler(simple_server.WSGIRequestHandler):
        def log_message(self, format, *args):
            LOG.debug('%s %s', self.address_string(), format % args)

    server = simple_server.make_server(host, port, app, Server, Handler)
    thread = backend.native_thread(server.serve_forever, 'vmha-http')

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(5)
    return WSGIServer(server.server_address[1], stop)


def _serve_eventlet(app, host, port):
    import eventlet
    from eventlet import wsgi
    sock = eventlet.listen((host, port), family=_family(host))
    greenthread = eventlet.spawn(
        wsgi.server, sock, app, log=_EventletLog(), log_output=False,
        debug=False)

    def stop():
        greenthread.kill()
        sock.close()
    return WSGIServer(sock.getsockname()[1], stop)


class _EventletLog:
    """eventlet.wsgi's log, into ours at DEBUG."""

    def write(self, text):
        LOG.debug('%s', text.rstrip())

    def info(self, text, *args):
        LOG.debug(text, *args)

    def debug(self, text, *args):
        LOG.debug(text, *args)

    def error(self, text, *args):
        LOG.error(text, *args)

    def exception(self, text, *args):
        LOG.exception(text, *args)


def _family(host):
    return socket.AF_INET6 if ':' in host else socket.AF_INET
