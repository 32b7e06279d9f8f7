"""The notification endpoint that forwards failures to Masakari.

``MasakariEndpoint`` gets every ERROR-priority notification on
``[notifications] topics`` (vmha's ``instance.failure`` is ERROR) and
returns what the listener must do with it:

* ``HANDLED`` (acknowledged): Masakari accepted the failure (2xx), or
  rejected it for good (400: host in no failover segment; 409: duplicate,
  host under maintenance; logged with Masakari's reason); or there was
  nothing to forward (another event type, ignored at DEBUG; a pair
  Masakari does not recover; a malformed payload or a message id that is
  not a string, dropped with one line naming the message id, the
  publisher and the reason, since redelivering it cannot fix it).
* ``REQUEUE``: Masakari did not take it, even after the client's
  ``[masakari] retry_max`` retries (unreachable, timeout, 5xx).  Nothing
  Masakari has not accepted is ever acknowledged.

**At most once per message id.**  The bus may deliver a message twice,
and the agent resends a notification whose delivery it could not confirm,
with the same message id.  ``ForwardedIds`` remembers the ids this
process has finished with (at most ``[bridge] dedupe_size`` of them, each
for ``[bridge] dedupe_window`` seconds, least recent dropped first) and a
delivery of a remembered id is acknowledged without a second POST.  A
delivery that arrives while the same id is being forwarded in another
executor thread waits for that one to finish.

Bad messages and duplicates go through ``logs.Drops``: counted, and
logged at a bounded rate, so that a flood of them cannot fill the disk.

Across bridge copies, this memory is not shared.  Copies in one
``[bridge] pool`` share one queue, so each delivery goes to one copy; a
copy sees an id another copy forwarded only when that copy died between
Masakari's answer and the acknowledgement (the broker redelivers), or
when this process restarted.  What protects then is Masakari's own check
(masakari 22): a stored notification of the same type, host and payload
whose ``generated_time`` is at most 180 s before the new one's, whatever
its status, makes the new one a duplicate (409, taken as done).  vmha
sends the same ``generated_time`` on every resend of a failure, so a
resend is a duplicate however late it comes, for as long as Masakari
keeps the first row (tests/integration/test_agent_crash.py).
"""

import logging
import threading
import time

import cachetools
from oslo_messaging.notify import dispatcher as notify_dispatcher

from vmha import masakari
from vmha.bridge import logs
from vmha.bridge import metrics as bridge_metrics
from vmha.masakari import client as masakari_client
from vmha.masakari import translate

LOG = logging.getLogger(__name__)

HANDLED = notify_dispatcher.NotificationResult.HANDLED
REQUEUE = notify_dispatcher.NotificationResult.REQUEUE


class ForwardedIds:
    """Bounded, time-limited memory of finished message ids; thread safe.

    The oldest finished id is forgotten first, when there are more than
    ``size`` or when it is older than ``window`` seconds (a
    ``cachetools.TTLCache``: only membership is asked, so its order is
    the order ids finished in).

    ``claim(id)`` before forwarding: False means the id is finished
    already (do not forward).  Then ``release(id, finished)``: a finished
    id is remembered; an unfinished one may be claimed again.
    """

    def __init__(self, size, window, clock=time.monotonic):
        self._window = window
        # TTLCache wants a positive ttl; a window of 0 remembers nothing.
        self._finished = cachetools.TTLCache(size, window or 1, timer=clock)
        self._in_flight = set()
        self._condition = threading.Condition()

    def claim(self, message_id):
        with self._condition:
            while message_id in self._in_flight:
                self._condition.wait()
            self._finished.expire()
            if message_id in self._finished:
                return False
            self._in_flight.add(message_id)
            return True

    def release(self, message_id, finished):
        with self._condition:
            self._in_flight.discard(message_id)
            if finished and self._window > 0:
                self._finished[message_id] = True
            self._condition.notify_all()

    def __len__(self):
        with self._condition:
            return len(self._finished)


class MasakariEndpoint:
    """oslo.messaging notification endpoint (ERROR priority only).

    :param client: a ``MasakariClient``
    :param forwarded_ids: a ``ForwardedIds``
    :param drops: a ``logs.Drops`` (bad messages, duplicates)
    :param metrics: a ``BridgeMetrics`` (requeues)
    :param follower: a ``follow.Follower`` told of every answer (202,
        400, 409), to follow the recovery; None follows nothing
    """

    def __init__(self, client, forwarded_ids, drops, metrics, follower=None):
        self._client = client
        self._forwarded_ids = forwarded_ids
        self._drops = drops
        self._metrics = metrics
        self._on_answer = follower.on_answer if follower else None

    @classmethod
    def from_conf(cls, conf, client=None, drops=None, metrics=None,
                  follower=None):
        metrics = metrics or bridge_metrics.BridgeMetrics()
        return cls(client or masakari_client.MasakariClient.from_conf(
                       conf, on_request=metrics.observe_request),
                   ForwardedIds(conf.bridge.dedupe_size,
                                conf.bridge.dedupe_window),
                   drops or logs.Drops(conf.bridge.bad_message_log_rate,
                                       metrics),
                   metrics, follower)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        message_id = (metadata or {}).get('message_id')
        if event_type != translate.FAILURE_EVENT_TYPE:
            LOG.debug('Ignoring %s notification %s from %s',
                      logs.printable(event_type), logs.printable(message_id),
                      logs.printable(publisher_id))
            return HANDLED
        if not (message_id is None or isinstance(message_id, str)):
            # Not one to remember (it may not even be hashable).
            self._drops.bad('invalid', 'Dropping %s notification from %s: '
                            'message id %s is not a string', event_type,
                            logs.printable(publisher_id),
                            logs.printable(message_id))
            return HANDLED
        try:
            # Checked here, before forward() would, so that a flood of
            # them is logged at a bounded rate.
            translate.parse_failure(payload)
        except translate.MalformedNotification as error:
            self._drops.bad('malformed', 'Dropping malformed %s '
                            'notification %s from %s: %s', event_type,
                            logs.printable(message_id),
                            logs.printable(publisher_id),
                            logs.printable(str(error), 200))
            return HANDLED
        if message_id is None:
            LOG.warning('Failure notification from %s has no message id; '
                        'forwarding it without duplicate detection',
                        logs.printable(publisher_id))
            return self._forward(message_id, event_type, payload)
        if not self._forwarded_ids.claim(message_id):
            self._drops.duplicate(
                'Failure notification %s from %s was already handled; not '
                'forwarded again', logs.printable(message_id),
                logs.printable(publisher_id))
            return HANDLED
        finished = False
        try:
            result = self._forward(message_id, event_type, payload)
            finished = result == HANDLED
            return result
        finally:
            self._forwarded_ids.release(message_id, finished)

    def _forward(self, message_id, event_type, payload):
        try:
            masakari.forward(self._client, message_id, event_type, payload,
                             on_answer=self._on_answer)
        except masakari_client.MasakariUnavailable:
            # forward() logged it; the broker redelivers it
            self._metrics.requeued.inc()
            return REQUEUE
        return HANDLED
