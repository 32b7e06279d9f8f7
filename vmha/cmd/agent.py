"""vmha-agent: watch every domain on this host and report failures.

``vmha-agent --demo`` runs the whole agent through a short scripted story
(a crash, a hang, a shutdown, a libvirtd restart) on libvirt's
daemon-less ``test:///default`` driver and prints it as it happens
(``vmha.demo``).  ``tools/demo.sh --real`` plays it on the real-VM test
bed of a checkout, through ``main``'s ``demo_fleet``.
"""

import logging
import os
import sys
import tempfile

from oslo_config import cfg
from oslo_log import log

from vmha import cmd
import vmha.conf

cli_opts = [
    cfg.BoolOpt('demo',
                default=False,
                help='Run the built-in demo and exit: five domains on '
                     'test:///default; one crashes, one hangs, one is shut '
                     'down, libvirtd restarts. Every event and notification '
                     'is printed; exit 0 only if exactly the crash and the '
                     'hang were reported, once each.'),
]


def parse_config(argv, prog='vmha-agent'):
    """A validated ConfigOpts; raises ConfigError/cfg.Error on bad input."""
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    log.register_options(conf)
    conf(argv, project='vmha', prog=prog)
    if conf.demo:
        _demo_defaults(conf)
    vmha.conf.validate(conf)
    return conf


def main(argv=None, demo_fleet=None):
    """:param demo_fleet: with ``--demo``, ``callable(backend name)``
        returning the fleet the story plays on (default: the embedded
        one, ``vmha.demo.make_fleet``)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        conf = parse_config(argv)
    except (cfg.Error, vmha.conf.ConfigError) as error:
        sys.stderr.write('vmha-agent: configuration error: %s\n' % error)
        return 2
    cmd.select_backend(conf.concurrency_backend)
    log.setup(conf, 'vmha')

    from vmha import agent as agent_lib
    from vmha import concurrency
    from vmha import objects
    from vmha import systemd
    from vmha.api import http as http_api
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.notify import sinks
    from vmha.virt import exception
    from vmha.virt.libvirt import driver as libvirt_driver

    objects.register_all()
    if conf.demo:
        return _demo(conf, demo_fleet)
    driver = libvirt_driver.LibvirtDriver.from_conf(conf)
    try:
        journal = db.Journal.from_conf(conf)
    except db.JournalError as error:
        return _fail(str(error))
    try:
        sink = sinks.load_sink(conf)
    except ValueError as error:
        return _fail('configuration error: %s' % error, 2)
    outbox = outbox_lib.Outbox(journal)
    sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
    try:
        agent = agent_lib.build(conf, driver, journal, outbox, sender)
    except vmha.conf.ConfigError as error:
        return _fail('configuration error: %s' % error, 2)
    agent_lib.check_daemon_limits(conf, driver)
    agent.handle_signals()
    try:
        agent.start()
    except exception.ConnectionFailed as error:
        agent.stop()
        return _fail('cannot connect to %s: %s'
                     % (conf.libvirt.connection_uri, error))
    except http_api.EndpointError as error:
        agent.stop()
        return _fail(str(error))
    notifier = systemd.Notifier.from_environ()
    if notifier is not None:
        watchdog = systemd.Watchdog(
            notifier, agent.health.turning_over, agent.describe,
            concurrency.get(conf.concurrency_backend),
            period=systemd.watchdog_period(),
            problems=agent.health.problems)
        watchdog.start()
        agent.surfaces.append(watchdog)
    agent.wait()
    journal.close()
    return 0


def _demo_defaults(conf):
    """Short settings for the demo; explicit settings still win."""
    conf.set_default('connection_uri', 'test:///default', group='libvirt')
    conf.set_default('host', 'compute-1')  # Masakari's name for the host
    conf.set_default('stopped_delay', 1.0, group='events')
    # No HTTP endpoint or RPC server unless asked: a real agent on this
    # host holds the port and serves the same RPC queue.
    conf.set_default('port', 0, group='health')
    conf.set_default('enabled', False, group='rpc')
    conf.set_default('path', os.path.join(
        tempfile.mkdtemp(prefix='vmha-demo-'), 'vmha.sqlite'),
        group='database')
    # A hang is reported within seconds (a fleet of real guests sets
    # longer times in its conf_defaults).
    conf.set_default('interval', 1.0, group='guest_agent')
    conf.set_default('timeout', 0.5, group='guest_agent')
    conf.set_default('failure_threshold', 2, group='guest_agent')
    conf.set_default('discovery_timeout', 5.0, group='guest_agent')


def _demo(conf, make_fleet=None):
    """The --demo branch: the agent, with the demo's driver and a sink
    that prints, through the story of ``vmha.demo``.

    :param make_fleet: ``callable(backend name)`` returning the fleet
        (default ``vmha.demo.make_fleet``)
    """
    from vmha import agent as agent_lib
    from vmha import demo
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.virt import exception

    if not conf.debug:
        # The demo prints its own story; the agent's log lines would say
        # everything twice.
        logging.getLogger('vmha').setLevel(logging.ERROR)
    try:
        fleet = (make_fleet or demo.make_fleet)(conf.concurrency_backend)
        fleet.prepare()
    except demo.FleetUnavailable as error:
        return _fail('--demo: %s' % error)
    for (group, name), value in fleet.conf_defaults().items():
        conf.set_default(name, value, group=group)
    try:
        journal = db.Journal.from_conf(conf)
    except db.JournalError as error:
        fleet.close()
        return _fail(str(error))

    def make_agent(driver, sink):
        outbox = outbox_lib.Outbox(journal)
        sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
        return agent_lib.build(conf, driver, journal, outbox, sender)
    try:
        return demo.run(conf, fleet, make_agent)
    except exception.ConnectionFailed as error:
        return _fail('cannot connect to %s: %s'
                     % (conf.libvirt.connection_uri, error))
    finally:
        journal.close()


def _fail(message, code=1):
    sys.stderr.write('vmha-agent: %s\n' % message)
    return code


if __name__ == '__main__':
    sys.exit(main())
