"""vmha-agent: watch every domain on this host and report failures.

``vmha-agent --demo`` runs a short scenario on libvirt's daemon-less
``test:///default`` driver and prints every event it dispatches.
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
                help='Run the built-in scenario on test:///default, print '
                     'each dispatched event, and exit.'),
]


def parse_config(argv, prog='vmha-agent'):
    """A validated ConfigOpts; raises ConfigError/cfg.Error on bad input."""
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    log.register_options(conf)
    conf(argv, project='vmha', prog=prog)
    if conf.demo:
        # Explicit settings still win: these only change defaults.
        conf.set_default('connection_uri', 'test:///default', group='libvirt')
        conf.set_default('stopped_delay', 1.0, group='events')
        # No HTTP endpoint unless asked: a real agent may hold the port.
        conf.set_default('port', 0, group='health')
        conf.set_default('path', os.path.join(
            tempfile.mkdtemp(prefix='vmha-demo-'), 'vmha.sqlite'),
            group='database')
    vmha.conf.validate(conf)
    return conf


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        conf = parse_config(argv)
    except (cfg.Error, vmha.conf.ConfigError) as error:
        sys.stderr.write('vmha-agent: configuration error: %s\n' % error)
        return 2
    cmd.select_backend(conf.concurrency_backend)
    log.setup(conf, 'vmha')

    from vmha import concurrency
    from vmha import objects
    from vmha import systemd
    from vmha.api import http as http_api
    from vmha.journal import db
    from vmha.journal import outbox as outbox_lib
    from vmha.journal import sender as sender_lib
    from vmha.manager import service
    from vmha.notify import sinks
    from vmha.virt import exception
    from vmha.virt.libvirt import driver as libvirt_driver

    objects.register_all()
    driver = libvirt_driver.LibvirtDriver.from_conf(conf)
    try:
        journal = db.Journal.from_conf(conf)
    except db.JournalError as error:
        return _fail(str(error))
    if conf.demo:
        from vmha import demo
        if not conf.debug:
            # The demo prints its own story; the agent's INFO lines would
            # say everything twice.
            logging.getLogger('vmha').setLevel(logging.WARNING)

        def make_agent(demo_driver, sink):
            demo_driver = (demo_driver
                           or libvirt_driver.LibvirtDriver.from_conf(conf))
            outbox = outbox_lib.Outbox(journal)
            sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
            return service.AgentService.from_conf(conf, demo_driver, journal,
                                                  outbox, sender)
        try:
            return demo.run(driver, conf.events.stopped_delay,
                            make_agent=make_agent)
        except exception.ConnectionFailed as error:
            return _fail('cannot connect to %s: %s'
                         % (conf.libvirt.connection_uri, error))
    try:
        sink = sinks.load_sink(conf)
    except ValueError as error:
        return _fail('configuration error: %s' % error, 2)
    outbox = outbox_lib.Outbox(journal)
    sender = sender_lib.OutboxSender.from_conf(conf, outbox, sink)
    agent = service.AgentService.from_conf(conf, driver, journal, outbox,
                                           sender)
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


def _fail(message, code=1):
    sys.stderr.write('vmha-agent: %s\n' % message)
    return code


if __name__ == '__main__':
    sys.exit(main())
