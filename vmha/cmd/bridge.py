"""vmha-masakari-bridge: forward failure notifications to Masakari.

Runs on a controller: reads ``[notifications] topics`` from the bus named
by ``[oslo_messaging_notifications] transport_url`` and posts failures to
the Masakari API configured in ``[masakari]``.  Any number of copies may
run; see ``vmha.bridge``.  Always native threads: ``[DEFAULT]
concurrency_backend`` is ignored here.
"""

import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log

from vmha import cmd
import vmha.conf

PROG = 'vmha-masakari-bridge'


def parse_config(argv, prog=PROG):
    """A validated ConfigOpts; raises ConfigError/cfg.Error on bad input."""
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    log.register_options(conf)
    conf(argv, project='vmha', prog=prog)
    vmha.conf.validate(conf)
    return conf


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        conf = parse_config(argv)
    except (cfg.Error, vmha.conf.ConfigError) as error:
        sys.stderr.write('%s: configuration error: %s\n' % (PROG, error))
        return 2
    cmd.select_backend('threading')
    log.setup(conf, 'vmha')

    import oslo_messaging

    from vmha import concurrency
    from vmha.api import http
    from vmha.bridge import recovery_store
    from vmha.bridge import service as bridge_service
    from vmha.masakari import client as masakari_client

    LOG = log.getLogger(PROG)
    try:
        transport = oslo_messaging.get_notification_transport(conf)
    except (oslo_messaging.InvalidTransportURL,
            oslo_messaging.DriverLoadFailure) as error:
        sys.stderr.write('%s: configuration error: message bus: %s\n'
                         % (PROG, error))
        return 2
    try:
        service = bridge_service.BridgeService(
            conf, transport, concurrency.get('threading'))
    except (masakari_client.MasakariConfigError,
            recovery_store.StateFileError) as error:
        sys.stderr.write('%s: configuration error: %s\n' % (PROG, error))
        transport.cleanup()
        return 2
    try:
        service.start_http()
    except http.EndpointError as error:
        sys.stderr.write('%s: %s\n' % (PROG, error))
        transport.cleanup()
        return 1

    stopping = threading.Event()
    started = threading.Event()

    def on_signal(signum, frame):
        LOG.info('Signal %d received; stopping', signum)
        stopping.set()
        if not started.is_set():
            # Still connecting (the broker may be down): nothing taken
            # yet, nothing to finish.
            raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    try:
        service.start()
    except oslo_messaging.ServerListenError as error:
        sys.stderr.write('%s: cannot listen on the message bus: %s\n'
                         % (PROG, error))
        if service.http is not None:
            service.http.stop()
        transport.cleanup()
        return 1
    started.set()
    LOG.info('%s forwarding failures from %s (pool %s) to Masakari',
             PROG, ', '.join(conf.notifications.topics), conf.bridge.pool)
    watchdog = _watchdog(conf, service, stopping)
    try:
        while not stopping.wait(1):
            service.tick()
    finally:
        if watchdog is not None:
            watchdog.stop()
        service.stop()
        transport.cleanup()
    LOG.info('%s stopped', PROG)
    return 0


def _watchdog(conf, service, stopping):
    """Under systemd (Type=notify): READY once listening, WATCHDOG while
    the listener runs and turns over.  None without NOTIFY_SOCKET."""
    from vmha import concurrency
    from vmha import systemd
    notifier = systemd.Notifier.from_environ()
    if notifier is None:
        return None
    watchdog = systemd.Watchdog(
        notifier,
        lambda: not stopping.is_set() and service.health.turning_over(),
        lambda: 'forwarding failures from %s to Masakari'
        % ', '.join(conf.notifications.topics),
        concurrency.get('threading'), period=systemd.watchdog_period(),
        problems=service.health.problems)
    watchdog.start()
    return watchdog


if __name__ == '__main__':
    sys.exit(main())
