"""vmha-status: what the local vmha-agent sees, as a table or JSON.

By default it reads ``/status`` from the agent's local HTTP endpoint
(``[health] listen_host`` and ``port`` of the same configuration files);
``--rpc`` asks over the RPC API instead (``[DEFAULT] transport_url``),
which also reaches an agent on another host (``--agent-host``).

Exit codes: 0 healthy, 3 reachable but unhealthy, 1 unreachable or
failing, 2 bad configuration or arguments.
"""

import json
import logging
import sys
import urllib.error
import urllib.parse
import urllib.request

from oslo_config import cfg

from vmha import cmd
import vmha.conf

EXIT_UNREACHABLE = 1
EXIT_CONFIG = 2
EXIT_UNHEALTHY = 3

cli_opts = [
    cfg.StrOpt('url',
               help='Base URL of the agent\'s endpoint (default: from '
                    '[health] listen_host and port).'),
    cfg.BoolOpt('rpc',
                dest='use_rpc',  # conf.rpc is the [rpc] group
                default=False,
                help='Ask over the RPC API ([DEFAULT] transport_url) '
                     'instead of the local HTTP endpoint.'),
    cfg.StrOpt('agent-host',
               help='With --rpc: the agent\'s host (default: [DEFAULT] '
                    'host).'),
    cfg.BoolOpt('json',
                default=False,
                help='Print the status as JSON.'),
    cfg.FloatOpt('timeout',
                 default=10.0,
                 min=0.1,
                 help='Seconds to wait for the agent.'),
]


class Unreachable(Exception):
    """The agent did not answer (readable, one line)."""


def parse_config(argv):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    conf(argv, project='vmha', prog='vmha-status')
    vmha.conf.validate(conf)
    return conf


def endpoint_url(conf):
    """The agent's base URL; raises ConfigError for one that is not
    http(s)://host[:port]."""
    if conf.url:
        url = conf.url.rstrip('/')
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ('http', 'https') or not parsed.netloc:
            raise vmha.conf.ConfigError(
                '--url must look like http://127.0.0.1:8917, not %r'
                % conf.url)
        return url
    host = conf.health.listen_host
    if host in ('0.0.0.0', '::', ''):
        host = '127.0.0.1'  # listening everywhere: ask the loopback
    if ':' in host:
        host = '[%s]' % host
    return 'http://%s:%d' % (host, conf.health.port)


def fetch_http(url, timeout):
    """The /status body from ``url``; raises Unreachable."""
    try:
        with urllib.request.urlopen(url + '/status',
                                    timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise Unreachable('vmha-agent at %s answered %d %s' % (
            url, error.code, error.reason)) from error
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            why = 'connection refused'
        elif isinstance(reason, TimeoutError):
            why = 'no answer within %gs' % timeout
        else:
            why = str(getattr(reason, 'strerror', None) or reason)
        raise Unreachable(
            'cannot reach vmha-agent at %s (%s); is it running, and are '
            '[health] listen_host and port the same as the agent\'s?'
            % (url, why)) from error
    except TimeoutError as error:
        raise Unreachable('vmha-agent at %s did not answer within %gs; it '
                          'may be wedged (see /healthz)' % (url, timeout)
                          ) from error
    except ValueError as error:
        raise Unreachable('vmha-agent at %s sent something that is not '
                          'JSON: %s' % (url, error)) from error


def fetch_rpc(conf, host, timeout):
    """The status over the RPC API; raises Unreachable."""
    import oslo_messaging

    from vmha import rpcapi
    transport = rpcapi.get_transport(conf)  # or ConfigError
    try:
        return rpcapi.AgentAPI(transport, timeout=timeout).get_status(
            {}, host)
    except oslo_messaging.MessagingTimeout as error:
        raise Unreachable(
            'no vmha-agent answered on topic %s for host %s within %gs; '
            'is it running with [rpc] enabled and the same transport_url?'
            % (rpcapi.TOPIC, host, timeout)) from error
    except oslo_messaging.MessagingException as error:
        raise Unreachable('RPC to vmha-agent on %s failed: %s'
                          % (host, error)) from error
    finally:
        # Bounded: after a call gave up on a broker that is down, a plain
        # cleanup() waits for ever on the abandoned attempt.
        rpcapi.cleanup(transport)


def main(argv=None, out=None, err=None):
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        conf = parse_config(argv)
    except (cfg.Error, vmha.conf.ConfigError) as error:
        err.write('vmha-status: configuration error: %s\n' % error)
        return EXIT_CONFIG
    # The table and one error line are the output: oslo.messaging's
    # reconnect chatter would bury them (no log setup, no lastResort).
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        if conf.use_rpc:
            cmd.select_backend('threading')
            status = fetch_rpc(conf, conf.agent_host or conf.host,
                               conf.timeout)
        else:
            status = fetch_http(endpoint_url(conf), conf.timeout)
    except vmha.conf.ConfigError as error:
        err.write('vmha-status: configuration error: %s\n' % error)
        return EXIT_CONFIG
    except Unreachable as error:
        err.write('vmha-status: %s\n' % error)
        return EXIT_UNREACHABLE
    if not isinstance(status, dict) or \
            not isinstance(status.get('instances', []), list):
        err.write('vmha-status: the agent\'s answer is not a status: %.200r\n'
                  % (status,))
        return EXIT_UNREACHABLE
    from vmha.api import table
    if conf.json:
        out.write(json.dumps(status, indent=2, sort_keys=True) + '\n')
    else:
        out.write(table.render(status))
    healthy = (status.get('health') or {}).get('status') == 'ok'
    return 0 if healthy else EXIT_UNHEALTHY


if __name__ == '__main__':
    sys.exit(main())
