"""vmha's configuration options, one module per group.

``register_opts(conf)`` registers every group on a ``ConfigOpts``;
``validate(conf)`` reads every option once so that a bad value fails at
start-up with one readable line instead of later, mid-run.
"""

from oslo_config import cfg

from vmha.conf import actions
from vmha.conf import audit
from vmha.conf import bridge
from vmha.conf import database
from vmha.conf import default
from vmha.conf import events
from vmha.conf import guest_agent
from vmha.conf import health
from vmha.conf import heartbeat
from vmha.conf import libvirt
from vmha.conf import masakari
from vmha.conf import migration
from vmha.conf import monitoring
from vmha.conf import notifications
from vmha.conf import outbox
from vmha.conf import rpc

_MODULES = (default, libvirt, events, monitoring, audit, guest_agent,
            heartbeat, migration, notifications, masakari, bridge, database,
            outbox, health, rpc, actions)


def register_opts(conf):
    for module in _MODULES:
        module.register_opts(conf)


def list_opts():
    """(group, options) pairs for every vmha option."""
    pairs = []
    for module in _MODULES:
        pairs.extend(module.list_opts().items())
    return pairs


def validate(conf):
    """Read every vmha option; raise ConfigError with a readable message."""
    for group, opts in list_opts():
        name = group if isinstance(group, str) else group.name
        section = conf if name == 'DEFAULT' else conf[name]
        for opt in opts:
            try:
                section[opt.dest]
            except cfg.NoSuchOptError:
                # keystoneauth registers an auth plugin's options only
                # when it loads the plugin; list_opts has them for the
                # sample file.
                continue
            except (ValueError, cfg.Error) as error:
                raise ConfigError('invalid value for [%s] %s%s: %s' % (
                    name, opt.name, _where(conf, opt, name), _reason(error)))
    agent = conf.guest_agent
    if agent.timeout >= agent.interval:
        raise ConfigError('[guest_agent] timeout (%s) must be less than '
                          '[guest_agent] interval (%s)'
                          % (agent.timeout, agent.interval))
    for problem in heartbeat.problems(conf.heartbeat):
        raise ConfigError(problem)


def _where(conf, opt, group):
    try:
        location = conf.get_location(
            opt.dest, None if group == 'DEFAULT' else group)
    except Exception:  # only decoration for the message
        return ''
    return ' in %s' % location.detail if location and location.detail else ''


def _reason(error):
    # oslo.config says "Value for option X from <location> is not valid:
    # <reason>"; the option and location are already in our message.
    return str(error).rpartition(' is not valid: ')[2]


class ConfigError(Exception):
    """The configuration cannot be used."""
