"""The ``migrate`` verb of vmha-action, as helpers to hook in.

    vmha-action INSTANCE migrate DEST [--block-migration]
                [--bandwidth MIB] [--host H] [--json]
    vmha-action INSTANCE migrate-abort | migrate-force-complete |
                migrate-pause [--host H]

``vmha/cmd/action.py`` owns the binary; this module holds what the
migrate verbs add: the verbs, their options, and one call each through
``rpcapi.AgentAPI`` (``live_migrate``, ``migration_task``) that returns
the line to print and the exit code; ``action.main`` dispatches to it.

The migration runs on after the command returns: its progress and end
are ``instance.migration`` notifications and ``vmha-status``'s
MIGRATING column.
"""

from oslo_config import cfg

EXIT_FAILED = 1
EXIT_CONFIG = 2

MIGRATE = 'migrate'
#: The task verbs and the ``migration_task`` each asks for.
TASK_VERBS = {'migrate-abort': 'abort',
              'migrate-force-complete': 'force_complete',
              'migrate-pause': 'pause'}

cli_opts = [
    cfg.StrOpt('destination',
               positional=True,
               required=False,
               help='With migrate: the destination\'s libvirt URI '
                    '(qemu+tls://compute-2/system).'),
    cfg.BoolOpt('block-migration',
                default=False,
                help='With migrate: copy local disks too.'),
    cfg.IntOpt('bandwidth',
               min=1,
               help='With migrate: the bandwidth limit, MiB/s.'),
]


def handles(verb):
    return verb == MIGRATE or verb in TASK_VERBS


def options(conf):
    """The ``live_migrate`` options from the command line."""
    chosen = {}
    if conf.block_migration:
        chosen['block_migration'] = True
    if conf.bandwidth:
        chosen['bandwidth_mib'] = conf.bandwidth
    return chosen


def run(client, ctxt, host, instance, verb, destination=None,
        migrate_options=None):
    """Ask ``host``'s agent; returns (line, exit code)."""
    import oslo_messaging

    from vmha import rpcapi
    from vmha.manager import inventory
    from vmha.manager import migration_driver
    refused = (inventory.InstanceNotFound, rpcapi.ChangesRefused,
               migration_driver.MigrationRefused, ValueError)
    if verb == MIGRATE:
        if not destination:
            return ('migrate needs a destination URI '
                    '(vmha-action INSTANCE migrate qemu+tls://HOST/system)',
                    EXIT_CONFIG)
        try:
            answer = client.live_migrate(ctxt, host, instance, destination,
                                         migrate_options or None)
        except refused as error:
            return 'migration of %s refused: %s' % (instance, error), \
                EXIT_FAILED
        except oslo_messaging.MessagingException as error:
            return 'cannot ask the agent on %s: %s' % (host, error), \
                EXIT_FAILED
        return ('live migration of %s to %s started (features: %s); '
                'watch it in vmha-status' % (
                    instance, answer['destination'],
                    ', '.join(answer['features']) or 'none'), 0)
    task = TASK_VERBS[verb]
    try:
        client.migration_task(ctxt, host, instance, task)
    except refused as error:
        return '%s of %s refused: %s' % (task, instance, error), EXIT_FAILED
    except oslo_messaging.MessagingException as error:
        return 'cannot ask the agent on %s: %s' % (host, error), EXIT_FAILED
    return '%s queued for the migration of %s' % (task, instance), 0
