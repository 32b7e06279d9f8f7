"""Prometheus metrics of one agent (prometheus-client).

Two kinds:

* observed as they happen: events by kind and their dispatch latency
  (``listener``, registered on the driver first), guest-agent ping
  latency (``observe_ping``, given to the guest-agent monitor);
* read when scraped (``ServiceCollector``): what the components already
  count or hold (queue depth, reconnects, decisions and the ones held
  back, the outbox, the sender's totals, instances by monitoring and
  guest-agent state), so no component carries a metrics dependency and
  nothing drifts.

Each agent has a registry of its own (no process-global state: tests and
the demo run several agents in one process).
"""

import collections
import logging
import time

import prometheus_client
from prometheus_client import core
from prometheus_client import exposition

from vmha.virt import event as ev

LOG = logging.getLogger(__name__)

# Event dispatch is sub-millisecond when healthy; a hub stalled by a
# blocking call shows up in the tens and hundreds of milliseconds.
DISPATCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A guest agent answers in milliseconds; [guest_agent] timeout is seconds.
PING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.0, 5.0)
# A heartbeat guest answers a challenge in milliseconds (3.5 ms p50 on the
# test bed); the interval is a second.
HEARTBEAT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST


class Metrics:
    """The registry, the observed metrics, and the exposition."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.registry = prometheus_client.CollectorRegistry()
        self.events = prometheus_client.Counter(
            'vmha_events', 'Events dispatched to the listeners, by kind '
            '(event) and libvirt detail.', ['event', 'detail'],
            registry=self.registry)
        self.dispatch_latency = prometheus_client.Histogram(
            'vmha_dispatch_latency_seconds', 'From the libvirt callback to '
            'the listeners; STOPPED events held back on purpose are left '
            'out.', buckets=DISPATCH_BUCKETS, registry=self.registry)
        self.ping_latency = prometheus_client.Histogram(
            'vmha_guest_ping_latency_seconds', 'Guest-agent pings answered, '
            'from submission to answer.', buckets=PING_BUCKETS,
            registry=self.registry)
        self.heartbeat_latency = prometheus_client.Histogram(
            'vmha_heartbeat_response_latency_seconds', 'Heartbeat '
            'challenges answered, from the challenge written to the answer '
            'handled.', buckets=HEARTBEAT_BUCKETS, registry=self.registry)

    def listener(self, event):
        """Count and time one dispatched event (a driver listener)."""
        if isinstance(event, ev.InstanceEvent):
            kind, detail = event.event_name, event.vir_domain_event
        else:  # connection lost or restored, resync
            kind, detail = 'HOST', type(event).__name__
        self.events.labels(kind, detail).inc()
        if not _held_back(event):
            self.dispatch_latency.observe(
                max(0.0, self._clock() - event.monotonic))

    def observe_ping(self, seconds):
        self.ping_latency.observe(seconds)

    def observe_heartbeat(self, seconds):
        self.heartbeat_latency.observe(seconds)

    def watch(self, service):
        """Expose what ``service`` (an ``AgentService``) holds."""
        self.registry.register(ServiceCollector(service))

    def exposition(self):
        """The text format, as bytes."""
        return exposition.generate_latest(self.registry)


def _held_back(event):
    return (isinstance(event, ev.LifecycleEvent)
            and event.transition == ev.EVENT_LIFECYCLE_STOPPED
            and event.detail not in ev.UNDELAYED_STOPPED_DETAILS)


class ServiceCollector:
    """Reads an ``AgentService``'s components at scrape time."""

    def __init__(self, service):
        self._service = service

    def describe(self):
        return []  # no scrape at registration: the service may not run

    def collect(self):
        service = self._service
        dispatch = service.driver.dispatch_stats()
        connection = service.driver.connection_stats()
        yield _gauge('vmha_event_queue_depth',
                     'Events waiting for the dispatcher.',
                     dispatch.queue_depth)
        yield _gauge('vmha_dispatcher_turnover_age_seconds',
                     'Seconds since the event dispatcher last turned over '
                     '(at least once a second when healthy).',
                     dispatch.turnover_age)
        if service.guest_monitor is not None:
            yield _gauge('vmha_guest_agent_turnover_age_seconds',
                         'Seconds since the guest-agent monitor loop last '
                         'turned over (at least once a second when '
                         'healthy).', service.guest_monitor.turnover_age())
        yield _counter('vmha_events_dropped', 'Events dropped because the '
                       'queue was full (an audit follows).', dispatch.dropped)
        yield _gauge('vmha_libvirt_connected', '1 while the libvirt '
                     'connection is up.', int(connection.connected))
        yield _counter('vmha_libvirt_reconnects', 'Times the libvirt '
                       'connection was restored.', connection.reconnects)
        migrations = getattr(service, 'migration_monitor', None)
        if migrations is not None:
            active, remaining = migrations.metrics()
            yield _gauge('vmha_migrations_active', 'Live migrations under '
                         'way on this host, either direction.', active)
            yield _gauge('vmha_migration_bytes_remaining', 'Bytes the '
                         'outgoing live migrations still have to send (at '
                         'their last job-statistics read).', remaining)
        yield from self._decisions()
        yield from self._recoveries()
        yield from self._delivery()
        yield from self._instances()
        yield from self._heartbeat()
        if service.audit is not None:
            yield _counter('vmha_audit_runs', 'Power-state audits run.',
                           service.audit.runs)
        yield from self._actions()

    def _actions(self):
        runner = getattr(self._service, 'actions', None)
        if runner is None:
            return
        family = core.CounterMetricFamily(
            'vmha_actions', 'Lifecycle actions asked for over RPC, by '
            'action and outcome: done, accepted (the caller acts), '
            'rejected (by the guest\'s vote) or failed.',
            labels=['action', 'outcome'])
        for (action, outcome), count in sorted(
                runner.outcomes_total.items()):
            family.add_metric([action, outcome], count)
        yield family
        yield _gauge('vmha_actions_running', 'Lifecycle actions running '
                     'now (at most one per VM).', len(runner.running()))

    def _decisions(self):
        family = core.CounterMetricFamily(
            'vmha_decisions', 'Failures reported, by cause.',
            labels=['cause'])
        reporter = self._service.reporter
        if reporter is not None:
            for cause, count in sorted(reporter.decisions_by_cause.items()):
                family.add_metric([cause], count)
        yield family
        limiter = reporter.limiter if reporter is not None else None
        if limiter is not None:
            family = core.CounterMetricFamily(
                'vmha_notifications_suppressed', 'Failure notifications '
                'Masakari does not act on that were not sent, by reason: '
                'repeat (of a domain and cause within [notifications] '
                'repeat_window) or host_cap.', labels=['reason'])
            for reason, count in sorted(limiter.suppressed_total.items()):
                family.add_metric([reason], count)
            yield family

    def _recoveries(self):
        book = getattr(self._service, 'recoveries', None)
        if book is None:
            return
        family = core.CounterMetricFamily(
            'vmha_recoveries', 'Changes of this host\'s failure recoveries '
            'vmha-masakari-bridge reported from Masakari, by outcome '
            '(accepted, running, finished, failed, ignored, rejected).',
            labels=['outcome'])
        for outcome, count in sorted(book.outcomes.items()):
            family.add_metric([outcome], count)
        yield family

    def _delivery(self):
        sender = self._service.sender
        if sender is None:
            return
        try:
            depth = sender.outbox.depth()
            age = sender.outbox.oldest_age(time.time())
        except Exception as error:  # the journal answers in its own error
            LOG.warning('Metrics: cannot read the outbox: %s', error)
        else:
            yield _gauge('vmha_outbox_depth', 'Notifications waiting in the '
                         'outbox.', depth)
            yield _gauge('vmha_outbox_oldest_age_seconds', 'Age of the '
                         'oldest undelivered notification (0: none).', age)
        yield _counter('vmha_notifications_sent', 'Notifications delivered '
                       'to every sink.', sender.sent_total)
        yield _counter('vmha_notifications_failed', 'Delivery attempts that '
                       'failed (each is retried).', sender.failed_total)

    def _instances(self):
        inventory = self._service.inventory
        if inventory is None:
            return
        try:
            rows = inventory.instances()
        except Exception as error:
            LOG.warning('Metrics: cannot list instances: %s', error)
            return
        monitoring = collections.Counter(
            {'monitored': 0, 'disabled': 0, 'excluded': 0})
        monitoring.update(row['monitoring'] for row in rows)
        family = core.GaugeMetricFamily(
            'vmha_instances', 'Domains on this host, by monitoring state.',
            labels=['monitoring'])
        for state, count in sorted(monitoring.items()):
            family.add_metric([state], count)
        yield family
        guests = collections.Counter(
            row['guest_agent'] for row in rows if row['guest_agent'])
        family = core.GaugeMetricFamily(
            'vmha_guest_agent_instances', 'Guests pinged through their '
            'agent, by guest-agent monitor state.', labels=['state'])
        for state, count in sorted(guests.items()):
            family.add_metric([state], count)
        yield family


    def _heartbeat(self):
        beats = getattr(self._service, 'heartbeat_monitor', None)
        if beats is None:
            return
        yield _gauge('vmha_heartbeat_turnover_age_seconds', 'Seconds since '
                     'the heartbeat monitor loop last turned over (at least '
                     'once a second when healthy).', beats.turnover_age())
        states = collections.Counter(row['state'] for row in beats.status())
        family = core.GaugeMetricFamily(
            'vmha_heartbeat_guests', 'Guests with a heartbeat channel, by '
            'heartbeat state.', labels=['state'])
        for state, count in sorted(states.items()):
            family.add_metric([state], count)
        yield family
        family = core.CounterMetricFamily(
            'vmha_heartbeat_failures', 'Heartbeat failures decided, by '
            'cause (heartbeat_lost, guest_unhealthy).', labels=['cause'])
        for cause, count in sorted(beats.failures_total.items()):
            family.add_metric([cause], count)
        yield family


def _gauge(name, documentation, value):
    return core.GaugeMetricFamily(name, documentation, value=value)


def _counter(name, documentation, value):
    return core.CounterMetricFamily(name, documentation, value=value)
