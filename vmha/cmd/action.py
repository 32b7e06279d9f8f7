"""vmha-action: ask an agent for a lifecycle action a heartbeat guest
votes on.

    vmha-action INSTANCE ACTION [--vote-only] [--host H] [--json]
    vmha-action INSTANCE migrate DEST [--block-migration] [--bandwidth MIB]
    vmha-action INSTANCE migrate-abort|migrate-force-complete|migrate-pause

``ACTION`` is one of stop, reboot, pause, unpause, suspend, resume,
resize-begin, resize-end, live-migrate-begin, live-migrate-end,
cold-migrate-begin, cold-migrate-end (``vmha.manager.lifecycle_actions``).
The agent of ``--host`` (default ``[DEFAULT] host``) is reached over the
RPC API (``[DEFAULT] transport_url``, ``[rpc] enabled``).  The guest
votes first: a rejection is printed with the guest's reason, in one
line.  With ``--vote-only`` the agent votes and notifies the guest, and
the caller performs the action.

Exit codes: 0 done, or accepted where the caller acts; 3 rejected by the
guest; 1 the action failed or the agent could not be asked (unreachable,
no such instance, another action running, read-only API); 2 bad
configuration or arguments.
"""

import json
import logging
import sys

from oslo_config import cfg

from vmha import cmd
from vmha.cmd import migrate
import vmha.conf

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_REJECTED = 3

# Positional arguments in order; ``migrate DEST`` (issue 13) adds a
# third, optional one here.
cli_opts = [
    cfg.StrOpt('instance',
               positional=True,
               required=True,
               help='The instance: its UUID or its libvirt name.'),
    cfg.StrOpt('action',
               positional=True,
               required=True,
               help='stop, reboot, pause, unpause, suspend, resume, or the '
                    '-begin/-end of resize, live-migrate, cold-migrate.'),
    cfg.BoolOpt('vote-only',
                default=False,
                help='Only ask the guest (vote and pre-notification); the '
                     'caller performs the action.'),
    # The flag is --host; [DEFAULT] host (a config-file option) stays
    # this host's own name, the default.
    cfg.StrOpt('host',
               dest='agent_host',
               help='The agent\'s host (default: [DEFAULT] host).'),
    cfg.BoolOpt('json',
                default=False,
                help='Print the agent\'s whole answer as JSON.'),
    cfg.FloatOpt('timeout',
                 min=1.0,
                 help='Seconds to wait for the agent (default: long enough '
                      'for a vote, the notices and a graceful stop).'),
]
# DEST, --block-migration, --bandwidth (vmha/cmd/migrate.py).
cli_opts += migrate.cli_opts


def parse_config(argv):
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    conf(argv, project='vmha', prog='vmha-action')
    vmha.conf.validate(conf)
    return conf


def describe(answer):
    """One line for the agent's answer, and the exit code."""
    name = answer.get('name') or answer.get('instance')
    action = answer.get('action')
    phases = answer.get('phases') or []
    reason = answer.get('reason') or ''
    if answer.get('verdict') == 'rejected':
        return ('%s of %s rejected by the guest: %s' % (action, name, reason),
                EXIT_REJECTED)
    vote = next((p for p in phases if p.get('phase') == 'vote'), None)
    said = ''
    if vote is not None and vote.get('result') == 'accepted':
        said = ' (guest: %s)' % vote.get('reason')
    if phases and phases[-1].get('result') == 'failed':
        return ('%s of %s accepted%s but failed: %s'
                % (action, name, said, reason), EXIT_FAILED)
    if answer.get('done'):
        return '%s of %s done%s: %s' % (action, name, said, reason), 0
    return ('%s of %s accepted%s: %s' % (action, name, said, reason), 0)


def main(argv=None, out=None, err=None, transport=None):
    """:param transport: an RPC transport to use instead of one from the
        configuration (tests, over oslo.messaging's fake://)"""
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        conf = parse_config(argv)
    except (cfg.Error, vmha.conf.ConfigError) as error:
        err.write('vmha-action: configuration error: %s\n' % error)
        return EXIT_CONFIG
    # One line is the output: oslo.messaging's reconnect chatter would
    # bury it.
    logging.getLogger().addHandler(logging.NullHandler())
    if transport is None:
        cmd.select_backend('threading')
    import oslo_messaging

    from vmha import rpcapi
    from vmha.manager import action_runner
    from vmha.manager import inventory
    from vmha.manager import lifecycle_actions
    host = conf.agent_host or conf.host
    if migrate.handles(conf.action):
        return _migrate(conf, host, transport, out, err)
    try:
        lifecycle_actions.row(conf.action)
    except lifecycle_actions.UnknownAction as error:
        err.write('vmha-action: %s\n' % error)
        return EXIT_CONFIG
    own_transport = transport is None
    try:
        if own_transport:
            transport = rpcapi.get_transport(conf)
    except vmha.conf.ConfigError as error:
        err.write('vmha-action: configuration error: %s\n' % error)
        return EXIT_CONFIG
    api = rpcapi.AgentAPI(transport)
    try:
        answer = api.request_action({}, host, conf.instance, conf.action,
                                    vote_only=conf.vote_only,
                                    timeout=conf.timeout)
    except oslo_messaging.MessagingTimeout:
        err.write('vmha-action: no vmha-agent answered for host %s in time; '
                  'is it running with [rpc] enabled and the same '
                  'transport_url? (the action may still be running)\n'
                  % host)
        return EXIT_FAILED
    except (inventory.InstanceNotFound, rpcapi.ChangesRefused,
            rpcapi.TooOld, action_runner.ActionInProgress,
            action_runner.UnknownAction) as error:
        err.write('vmha-action: %s\n' % error)
        return EXIT_FAILED
    except oslo_messaging.MessagingException as error:
        err.write('vmha-action: RPC to vmha-agent on %s failed: %s\n'
                  % (host, error))
        return EXIT_FAILED
    finally:
        if own_transport:
            rpcapi.cleanup(transport)
    if not isinstance(answer, dict) or 'verdict' not in answer:
        err.write('vmha-action: the agent\'s answer is not a verdict: '
                  '%.200r\n' % (answer,))
        return EXIT_FAILED
    line, code = describe(answer)
    if conf.json:
        out.write(json.dumps(answer, indent=2, sort_keys=True) + '\n')
    else:
        out.write(line + '\n')
    return code


def _migrate(conf, host, transport, out, err):
    """``migrate DEST`` and the migration tasks (vmha/cmd/migrate.py)."""
    from vmha import rpcapi
    own_transport = transport is None
    try:
        if own_transport:
            transport = rpcapi.get_transport(conf)
    except vmha.conf.ConfigError as error:
        err.write('vmha-action: configuration error: %s\n' % error)
        return EXIT_CONFIG
    try:
        line, code = migrate.run(
            rpcapi.AgentAPI(transport, timeout=conf.timeout), {}, host,
            conf.instance, conf.action, conf.destination,
            migrate.options(conf))
    finally:
        if own_transport:
            rpcapi.cleanup(transport)
    (out if code == 0 else err).write(
        ('' if code == 0 else 'vmha-action: ') + line + '\n')
    return code


if __name__ == '__main__':
    sys.exit(main())
