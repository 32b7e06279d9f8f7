"""The composition of vmha-agent: every part, wired in one place.

``build`` makes the ``AgentService`` (``vmha.manager.service``) with the
monitors ``conf`` asks for and the surfaces operators reach it by (the
HTTP endpoint and the RPC server of ``vmha.api``).  It lives above both
packages so that the arrows run one way: ``vmha.api`` knows the manager,
the manager knows nothing of the API.  ``vmha-agent`` (``vmha.cmd``),
the demo, the functional tests and the benchmarks all build the agent
here, so they run the same wiring.
"""

import logging

from vmha import concurrency
from vmha.api import http as http_api
from vmha.api import rpc as rpc_api
from vmha.manager import action_runner
from vmha.manager import actions as actions_lib
from vmha.manager import audit as audit_lib
from vmha.manager import failure_monitor
from vmha.manager import guest_monitor
from vmha.manager import health as health_lib
from vmha.manager import heartbeat_monitor
from vmha.manager import inventory as inventory_lib
from vmha.manager import metrics as metrics_lib
from vmha.manager import migration_driver as migration_driver_lib
from vmha.manager import migration_monitor
from vmha.manager import overrides
from vmha.manager import rate_limit
from vmha.manager import recoveries as recoveries_lib
from vmha.manager import selection
from vmha.manager import service as service_lib
from vmha.manager import state

LOG = logging.getLogger(__name__)

# Worker threads of libvirt's daemon left for nova-compute and the rest.
DAEMON_HEADROOM = 20


def check_daemon_limits(conf, driver):
    """Warn when libvirt's daemon cannot run the guest-agent calls vmha
    may have in flight (both ping budgets) beside nova's: the calls
    beyond its limits wait inside it, and then hung guests delay healthy
    ones again.  Returns the warning (None: none)."""
    found = driver.daemon_limits()
    if found is None or not conf.guest_agent.enabled:
        return None
    path, limits = found
    agent = conf.guest_agent
    calls = agent.max_concurrent_pings + agent.max_suspect_pings
    if limits is None:
        warning = ('cannot read %s: make sure its max_workers is at least '
                   '%d ([guest_agent] max_concurrent_pings + '
                   'max_suspect_pings + %d for nova)'
                   % (path, calls + DAEMON_HEADROOM, DAEMON_HEADROOM))
        LOG.info('libvirt daemon limits: %s', warning)
        return warning
    problems = []
    if limits['max_workers'] < calls + DAEMON_HEADROOM:
        problems.append('max_workers = %d, vmha needs at least %d '
                        '([guest_agent] max_concurrent_pings + '
                        'max_suspect_pings + %d for nova)' % (
                            limits['max_workers'], calls + DAEMON_HEADROOM,
                            DAEMON_HEADROOM))
    if limits['max_client_requests'] != agent.max_client_requests:
        problems.append('max_client_requests = %d, [guest_agent] '
                        'max_client_requests = %d: set the same value' % (
                            limits['max_client_requests'],
                            agent.max_client_requests))
    if not problems:
        return None
    warning = '%s: %s; until then guest-agent calls beyond its limits wait ' \
        'inside libvirt, and hung guests delay the pings of healthy ' \
        'ones' % (path, '; '.join(problems))
    LOG.warning('libvirt daemon limits: %s', warning)
    return warning


def build(conf, driver, journal, outbox, sender):
    """The agent service with its monitors and surfaces wired as ``conf``
    says.  Raises ``vmha.conf.ConfigError`` for settings it cannot use.

    :param driver: a ``vmha.virt.driver.VirtDriver``
    :param journal: the open ``vmha.journal.db.Journal``
    :param outbox: the ``Outbox`` on ``journal``
    :param sender: the ``OutboxSender``, or None for no notifications
    """
    store = state.StateStore(journal)
    reporter = failure_monitor.Reporter(
        outbox, store, conf.host,
        limiter=rate_limit.NotificationLimiter.from_conf(conf))
    backend = concurrency.get(conf.concurrency_backend)
    selector = selection.Selector.from_conf(conf, driver,
                                            backend.run_blocking)
    audit = audit_lib.PowerStateAudit(
        driver, journal, reporter, selector, backend,
        conf.audit.interval, settle_time=conf.audit.settle_time,
        settle_interval=conf.audit.settle_interval, store=store)
    monitor = failure_monitor.FailureMonitor(
        driver, journal, reporter, selector,
        conf.libvirt.connection_uri, on_resync=audit.request_settling,
        run_blocking=backend.run_blocking, store=store, outbox=outbox)
    audit.events_waiting = monitor.events_waiting
    metrics = metrics_lib.Metrics()
    listeners = [metrics.listener, monitor]
    guests = None
    beats = None
    monitors = []  # each a monitor.Monitor
    # One budget and one ledger of corrective actions per VM for every
    # monitor: a reset by one counts for the other.
    agent = conf.guest_agent
    action_policy = actions_lib.ActionPolicy(
        driver, agent.action_budget, agent.action_window,
        agent.action_min_uptime)
    if agent.enabled:
        guests = guest_monitor.GuestAgentMonitor.from_conf(
            conf, driver, journal, reporter, selector, backend,
            action_policy=action_policy)
        guests.observe_ping = metrics.observe_ping
        listeners.append(guests)
        monitors.append(guests)
    if conf.heartbeat.enabled:
        beats = heartbeat_monitor.HeartbeatMonitor.from_conf(
            conf, driver, journal, reporter, selector, backend,
            action_policy)
        beats.observe_latency = metrics.observe_heartbeat
        listeners.append(beats)
        monitors.append(beats)
    # Every live migration on the host is watched (it only reads job
    # statistics of domains that migrate, and acts per [migration]).
    migrations = migration_monitor.MigrationMonitor.from_conf(
        conf, driver, journal, reporter, backend)
    listeners.append(migrations)
    monitors.append(migrations)
    # Last: the failure monitor still sees an undefined domain's
    # choice when it handles the UNDEFINED event.
    keeper = overrides.OverrideKeeper(
        driver, overrides.OverrideStore(journal, outbox, conf.host),
        selector, state_store=store,
        run_blocking=backend.run_blocking)
    listeners.append(keeper)
    recoveries = recoveries_lib.RecoveryBook(journal)
    inventory = inventory_lib.Inventory(
        driver, store, keeper, selector, guest_monitor=guests,
        audit=audit, run_blocking=backend.run_blocking,
        heartbeat_monitor=beats, recoveries=recoveries,
        migration_monitor=migrations)
    # The start-up audit goes first (what happened while the agent was
    # down); the guest-agent and heartbeat monitors read every domain's
    # XML when they first list the host, so they start listing after it.
    for held in (guests, beats):
        if held is not None:
            held.hold_first_listing = True
            audit.after_first_run.append(held.release_listing)
    # Every loop /healthz watches, in the order of its checks.
    loops = [audit] + monitors + ([beats.hub] if beats else []) + (
        [sender] if sender else [])
    health = health_lib.HealthCheck(
        driver, loops, conf.health.stall_timeout,
        conf.health.disconnected_timeout, journal=journal,
        writers=[monitor] + monitors)
    # Lifecycle actions over RPC: the heartbeat guests vote through the
    # heartbeat monitor (without one, NoHeartbeat: every vote accepts).
    actions = action_runner.ActionRunner.from_conf(
        conf, driver, beats, journal, outbox, backend)
    # Events the journal refused are retried on the dispatcher, and so
    # are operator choices adopted from metadata it could not record.
    driver.register_turnover_callback(monitor.retry_pending)
    driver.register_turnover_callback(keeper.retry_adoptions)
    service = service_lib.AgentService(
        driver, conf.host, sender=sender, listeners=listeners, audit=audit,
        guest_monitor=guests, reporter=reporter, inventory=inventory,
        health=health, metrics=metrics, monitors=monitors,
        heartbeat_monitor=beats, actions=actions,
        recoveries=recoveries)
    service.migration_monitor = migrations
    migrate_pool = concurrency.NativePool(
        backend, migration_driver_lib.MAX_CONCURRENT, name='vmha-migrate')
    migrations.also_close.append(migrate_pool)
    service.migration_driver = migration_driver_lib.MigrationDriver(
        driver, migrations, migrate_pool, migrations.settings)
    metrics.watch(service)
    if conf.health.port:
        service.surfaces.append(http_api.HttpEndpoint(
            service, backend, conf.health.listen_host, conf.health.port))
    rpc_server = rpc_api.RpcServer.from_conf(conf, service)
    if rpc_server is not None:
        service.surfaces.append(rpc_server)
    return service
