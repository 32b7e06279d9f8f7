"""Prometheus metrics of one bridge (prometheus-client).

Counted as they happen: Masakari's answers (``observe_request``, given to
the ``MasakariClient`` as its ``on_request``), requeues, bad messages and
duplicates.  Read when scraped (``HealthCollector``): notifications in
the bridge's hands and how long Masakari has been failing, from the
``BridgeHealth`` behind /healthz, so the two never disagree.

Each bridge has a registry of its own (tests run several in one process).
"""

import prometheus_client
from prometheus_client import core
from prometheus_client import exposition

# One POST to Masakari takes tens of milliseconds; [masakari] timeout is
# 10 s by default.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
#: Masakari's answers that end a notification: refused for good.
REJECTED_STATUSES = (400, 409)
#: ``vmha_bridge_bad_messages_total`` kinds.
BAD_MESSAGE_KINDS = ('undecodable', 'invalid', 'malformed')

#: ``vmha_bridge_recoveries_total`` outcomes (``RecoveryStatus.ALL``).
RECOVERY_OUTCOMES = ('accepted', 'running', 'finished', 'failed', 'ignored',
                     'rejected')

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST


class BridgeMetrics:
    """The registry, the counters, and the exposition."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        self.forwarded = prometheus_client.Counter(
            'vmha_bridge_forwarded', 'Failures Masakari accepted (2xx).',
            registry=self.registry)
        self.rejected = prometheus_client.Counter(
            'vmha_bridge_rejected', 'Failures Masakari refused for good, '
            'by HTTP status (400: host in no failover segment; 409: '
            'duplicate or host in maintenance).', ['status'],
            registry=self.registry)
        self.requeued = prometheus_client.Counter(
            'vmha_bridge_requeued', 'Failures handed back to the broker: '
            'Masakari did not take them after every retry.',
            registry=self.registry)
        self.retries = prometheus_client.Counter(
            'vmha_bridge_masakari_retries', 'Requests to Masakari that '
            'retried a failed one.', registry=self.registry)
        self.request_latency = prometheus_client.Histogram(
            'vmha_bridge_masakari_request_seconds', 'Requests to Masakari, '
            'from sending to its answer or the failure (timeouts too).',
            buckets=REQUEST_BUCKETS, registry=self.registry)
        self.bad_messages = prometheus_client.Counter(
            'vmha_bridge_bad_messages', 'Bad messages dropped, by kind '
            '(undecodable: not an oslo.messaging message; invalid: no '
            'valid priority or message id; malformed: an instance.failure '
            'that is not a valid vmha failure).', ['kind'],
            registry=self.registry)
        self.duplicates = prometheus_client.Counter(
            'vmha_bridge_duplicates', 'Redeliveries of a message already '
            'handled, skipped.', registry=self.registry)
        self.recoveries = prometheus_client.Counter(
            'vmha_bridge_recoveries', 'Changes of a followed recovery '
            'published as instance.recovery, by outcome (accepted, '
            'running, finished, failed, ignored, rejected).', ['outcome'],
            registry=self.registry)
        self.polls = prometheus_client.Counter(
            'vmha_bridge_recovery_polls', 'Looks at a recovery '
            '(GET /v1/notifications/{id}), by answer (ok, or the HTTP '
            'status, or none).', ['answer'], registry=self.registry)
        for outcome in RECOVERY_OUTCOMES:
            self.recoveries.labels(outcome)
        # Every series from the start: a rate() over a counter that
        # appears on its first increment misses that increment.
        for status in REJECTED_STATUSES:
            self.rejected.labels(str(status))
        for kind in BAD_MESSAGE_KINDS:
            self.bad_messages.labels(kind)

    def observe_request(self, status, seconds, attempt):
        """One request to Masakari (``MasakariClient``'s ``on_request``)."""
        self.request_latency.observe(max(0.0, seconds))
        if attempt > 1:
            self.retries.inc()
        if status is not None and 200 <= status < 300:
            self.forwarded.inc()
        elif status in REJECTED_STATUSES:
            self.rejected.labels(str(status)).inc()

    def observe_recovery(self, status):
        """One published change of a followed recovery."""
        self.recoveries.labels(status).inc()

    def observe_poll(self, status, seconds):
        """One ``GET /v1/notifications/{id}`` (the client's ``on_get``)."""
        self.polls.labels('ok' if status is not None and 200 <= status < 300
                          else str(status or 'none')).inc()

    def watch(self, health):
        """Expose what ``health`` (a ``BridgeHealth``) reads."""
        self.registry.register(HealthCollector(health))

    def exposition(self):
        """The text format, as bytes."""
        return exposition.generate_latest(self.registry)


class HealthCollector:
    """Reads a ``BridgeHealth`` at scrape time."""

    def __init__(self, health):
        self._health = health

    def describe(self):
        return []  # no scrape at registration: the listener may not run

    def collect(self):
        checks = self._health.checks()
        listener, masakari = checks['listener'], checks['masakari']
        yield core.GaugeMetricFamily(
            'vmha_bridge_listener_running', '1 while the bridge consumes '
            'from the bus.', value=int(listener['running']))
        yield core.GaugeMetricFamily(
            'vmha_bridge_in_hand', 'Notifications received and not yet '
            'acknowledged or requeued.', value=listener['in_hand'])
        yield core.GaugeMetricFamily(
            'vmha_bridge_oldest_in_hand_seconds', 'Age of the oldest '
            'notification in the bridge\'s hands (0: none).',
            value=listener['oldest_age'])
        yield core.GaugeMetricFamily(
            'vmha_bridge_masakari_failing_seconds', 'Seconds Masakari has '
            'been failing without a usable answer (0: it answers).',
            value=masakari['failing_for'] or 0.0)
