"""vmha-masakari-bridge: failures from the message bus to Masakari.

Masakari reads nothing from oslo.messaging, so on the controller side the
bridge listens to vmha's notifications (``[notifications] topics``, ERROR
priority) and POSTs each failure Masakari recovers to its API
(``endpoint.MasakariEndpoint``).  Every copy of the bridge consumes in the
same listener pool (``[bridge] pool``), so copies share the work and a
notification is acknowledged only once Masakari has taken or refused it
(``allow_requeue``).  The bridge always runs on native threads.

``BridgeListener`` is oslo.messaging's notification server with two
additions: it keeps count of what it holds (``stats``, behind /healthz),
and its ``BridgeDispatcher`` drops a notification whose priority is not
one (oslo.messaging's own would raise on it and requeue it for ever, a
traceback each time) with one line through ``logs.Drops``.
``service.BridgeService`` puts the pieces together; ``follow`` follows
each forwarded failure to its outcome (``instance.recovery``).
"""

import collections
import itertools
import threading
import time

import oslo_messaging
from oslo_messaging.notify import dispatcher as notify_dispatcher
from oslo_messaging.notify import listener as notify_listener

from vmha.bridge import logs

ListenerStats = collections.namedtuple(
    'ListenerStats', 'running in_hand oldest_age received')


def get_listener(conf, transport, endpoint, drops):
    """A ``BridgeListener`` (not started) feeding ``endpoint``.

    Start it with ``listener.start(override_pool_size=conf.bridge.
    executor_threads)`` to bound how many notifications are handled at once.

    :param drops: a ``logs.Drops`` for notifications dropped before they
        reach ``endpoint``
    """
    targets = [oslo_messaging.Target(topic=topic)
               for topic in conf.notifications.topics]
    return BridgeListener(
        transport, targets, BridgeDispatcher([endpoint], drops),
        executor='threading', allow_requeue=True, pool=conf.bridge.pool)


class BridgeDispatcher(notify_dispatcher.NotificationDispatcher):
    """oslo.messaging's dispatcher, but a notification without a valid
    priority is dropped with one line instead of raising (requeued, for
    ever) or logging a warning each time."""

    def __init__(self, endpoints, drops):
        super().__init__(endpoints, None)
        self._drops = drops

    def dispatch(self, incoming):
        message = incoming.message
        priority = message.get('priority')
        if not (isinstance(priority, str)
                and priority.lower() in notify_dispatcher.PRIORITIES):
            self._drops.bad(
                'invalid', 'Dropping notification %s from %s: priority %s '
                'is not a notification priority',
                logs.printable(message.get('message_id')),
                logs.printable(message.get('publisher_id')),
                logs.printable(priority))
            return notify_dispatcher.NotificationResult.HANDLED
        return super().dispatch(incoming)


class BridgeListener(notify_listener.NotificationServer):
    """A notification server that knows what it holds.

    A notification is in hand from the moment the poll thread passes it
    to the executor until it is acknowledged or requeued.
    """

    def __init__(self, *args, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._lock = threading.Lock()
        self._in_hand = {}  # token -> when received, oldest first
        self._tokens = itertools.count()
        self._received = 0

    def stats(self):
        """A ``ListenerStats``: running, how many in hand, the oldest's
        age in seconds (0 when none), how many received in all."""
        with self._lock:
            oldest = next(iter(self._in_hand.values()), None)
            # MessageHandlingServer sets _started in start() and clears
            # it in stop(); start() and stop() themselves cannot be
            # overridden (oslo.messaging orders them by name).
            return ListenerStats(
                self._started, len(self._in_hand),
                0.0 if oldest is None else max(0.0, self._clock() - oldest),
                self._received)

    def _on_incoming(self, incoming):
        token = next(self._tokens)
        with self._lock:
            self._in_hand[token] = self._clock()
            self._received += len(incoming)
        self._work_executor.submit(self._process_in_hand, token, incoming)

    def _process_in_hand(self, token, incoming):
        try:
            self._process_incoming(incoming)
        finally:
            with self._lock:
                self._in_hand.pop(token, None)
