"""Delivering the outbox, in order, through one sink.

``OutboxSender.run_once`` takes the oldest undelivered rows and hands them
to ``sink.send`` one at a time, marking each delivered as soon as ``send``
returns.  The first failure ends the pass: a later row is never sent ahead
of one that failed, so consumers see notifications in the order vmha
decided them.  Failures back off exponentially with jitter between
``retry_min`` and ``retry_max``; an outage is logged once when it starts
(with how many rows wait and for how long) and once when it ends, not at
every retry.

Delivery is at least once: a row sent but not yet marked when the agent
dies is sent again on the next start, with the same ``message_id``.

``start`` runs the loop as a task of the concurrency backend (greenthread
or native thread).  The loop sleeps on the backend's event until
``wake()`` (called after every commit that added rows: ``start``
subscribes it to the outbox), the backoff delay, or a poll interval;
every minute or so it prunes delivered rows older than the retention.
"""

import logging
import random
import time

from vmha import backoff
from vmha import concurrency
from vmha import supervision
from vmha.journal import db
from vmha.notify import base

LOG = logging.getLogger(__name__)


class OutboxSender(supervision.SupervisedLoop):
    """Sends an ``Outbox`` through a ``vmha.notify.base.Sink``.

    :param outbox: a ``vmha.journal.outbox.Outbox``
    :param sink: a ``vmha.notify.base.Sink``
    :param backend: a ``vmha.concurrency`` backend or its name
    :param retry_min: seconds before the first retry after a failure
    :param retry_max: longest wait between two retries
    :param batch_size: rows read per pass
    :param retention: seconds delivered rows are kept before pruning
    :param clock: wall clock (delivery times, ages, pruning)
    :param poll_interval: longest idle sleep without a ``wake()``; a
        safety net for rows written without one
    :param prune_interval: seconds between two prunes

    Counters: ``sent_total`` (messages delivered), ``failed_total``
    (attempts that failed, sink or journal), ``last_error`` (text of the
    latest failure, None before any).
    """

    check_name = 'outbox_sender'
    description = 'outbox sender loop'
    # A sink that is slow to answer holds it: restarting the agent would
    # not help, so only /healthz shows it.
    gates_watchdog = False

    def __init__(self, outbox, sink, backend, retry_min=0.5, retry_max=30.0,
                 batch_size=100, retention=7 * 24 * 3600, clock=time.time,
                 rand=random.random, poll_interval=5.0,
                 prune_interval=60.0):
        self.outbox = outbox
        self.sink = sink
        self._backend = (concurrency.get(backend)
                         if isinstance(backend, str) else backend)
        self._retry_min = retry_min
        self._retry_max = max(retry_min, retry_max)
        self._batch_size = batch_size
        self._retention = retention
        self._clock = clock
        self._rand = rand
        self._poll_interval = poll_interval
        self._prune_interval = prune_interval
        self.sent_total = 0
        self.failed_total = 0
        self.last_error = None
        self._consecutive_failures = 0
        self._outage_started = None
        self._outage_error_type = None
        self._wakeup = None
        self._task = None
        self._running = False
        self._stopping = False
        self._next_prune = 0.0
        self.init_turnover(time.monotonic)

    @classmethod
    def from_conf(cls, conf, outbox, sink, **kwargs):
        return cls(outbox, sink, conf.concurrency_backend,
                   retry_min=conf.outbox.retry_min_interval,
                   retry_max=conf.outbox.retry_max_interval,
                   batch_size=conf.outbox.batch_size,
                   retention=conf.database.retention, **kwargs)

    @property
    def sink_name(self):
        return getattr(self.sink, 'name', None) or type(self.sink).__name__

    # --- one pass -----------------------------------------------------------

    def run_once(self):
        """Send what waits, in order, until done, a full batch, or the
        first failure.

        :returns: seconds to wait before the next pass: the backoff delay
            after a failure, 0 when a full batch went out (more may wait),
            None when nothing is left (wait for ``wake()``)
        """
        try:
            messages = self.outbox.pending(self._batch_size)
        except db.JournalError as error:
            return self._journal_failed(error, 'read the outbox')
        # Marks are written once per pass (one fsync for the batch, not
        # one per message): a crash before the mark resends at most one
        # batch, with the same message ids, which consumers drop.
        sent = []
        for message in messages:
            try:
                self.sink.send(message)
            except base.DeliveryError as error:
                return self._mark(sent) or self._send_failed(
                    message, error, unexpected=False)
            except Exception as error:
                # A bug in a sink must not kill the sender: the row is
                # retried like any failure, and never skipped.
                return self._mark(sent) or self._send_failed(
                    message, error, unexpected=True)
            sent.append(message.message_id)
            self.sent_total += 1
            self._succeeded()
            # Let the writers run between two sends under eventlet.
            self._backend.sleep(0)
        failed = self._mark(sent)
        if failed is not None:
            return failed
        self._succeeded()
        if len(messages) == self._batch_size:
            return 0
        return None

    def _mark(self, message_ids):
        """Mark sent messages delivered; the backoff delay if that fails
        (they were sent and will be sent again), else None."""
        try:
            self.outbox.mark_many_delivered(message_ids, self._clock())
        except db.JournalError as error:
            return self._journal_failed(
                error, 'mark %d sent notification(s) delivered (they will '
                'be sent again)' % len(message_ids))
        return None

    def _succeeded(self):
        if self._outage_started is None:
            return
        LOG.info('Notifications get through the %s sink again after '
                 '%.1fs and %d failed attempt(s)', self.sink_name,
                 max(0.0, self._clock() - self._outage_started),
                 self._consecutive_failures)
        self._outage_started = None
        self._outage_error_type = None
        self._consecutive_failures = 0

    def _send_failed(self, message, error, unexpected):
        what = ('notification %s (%s) not delivered by the %s sink'
                % (message.message_id, message.event_type, self.sink_name))
        return self._failed(what, error, unexpected)

    def _journal_failed(self, error, doing):
        return self._failed('cannot %s' % doing, error, unexpected=False)

    def _failed(self, what, error, unexpected):
        self.failed_total += 1
        self._consecutive_failures += 1
        self.last_error = '%s: %s' % (type(error).__name__, error)
        delay = self._backoff_delay()
        # Once per outage, and again only if the failure changes kind (a
        # broker outage turning into a sink bug deserves a line).
        first = self._outage_started is None
        if first or type(error) is not self._outage_error_type:
            if first:
                self._outage_started = self._clock()
            self._outage_error_type = type(error)
            depth, age = self._backlog()
            LOG.log(logging.ERROR if unexpected else logging.WARNING,
                    'Outbox: %s: %s; %s waiting, the oldest for %.1fs; '
                    'retrying with backoff up to %.1fs, logged again when '
                    'it gets through', what, self.last_error, depth, age,
                    self._retry_max, exc_info=unexpected)
        else:
            LOG.debug('Outbox: %s (attempt %d): %s; next try in %.1fs',
                      what, self._consecutive_failures, self.last_error,
                      delay)
        return delay

    def _backlog(self):
        try:
            return (self.outbox.depth(),
                    self.outbox.oldest_age(self._clock()))
        except db.JournalError:
            return '?', 0.0

    def _backoff_delay(self):
        delay = backoff.jittered(backoff.ceiling(
            self._consecutive_failures, self._retry_min, self._retry_max),
            self._rand)
        return min(self._retry_max, max(self._retry_min, delay))

    def prune(self):
        """Delete delivered rows past the retention; returns the count."""
        try:
            pruned = self.outbox.prune(self._retention, self._clock())
        except db.JournalError as error:
            LOG.error('Outbox: pruning delivered notifications failed: %s',
                      error)
            return 0
        if pruned:
            LOG.debug('Outbox: pruned %d delivered notification(s)', pruned)
        return pruned

    # --- the loop -----------------------------------------------------------

    def wake(self):
        """Rows were committed: send them now (unless backing off)."""
        if self._wakeup is not None:
            self._wakeup.set()

    def start(self):
        """Run the loop in a task of the backend; undelivered rows from
        before this start are sent first."""
        if self._running:
            raise RuntimeError('the outbox sender is already running')
        self._stopping = False
        self._wakeup = self._backend.event()
        self._running = True
        self.outbox.add_listener(self.wake)
        depth, age = self._backlog()
        if depth:
            LOG.info('Outbox sender started (%s sink): %s notification(s) '
                     'from before to deliver, the oldest %.1fs old',
                     self.sink_name, depth, age)
        else:
            LOG.info('Outbox sender started (%s sink)', self.sink_name)
        self._task = self._backend.spawn(self._loop, name='outbox-sender')

    def stop(self, timeout=10.0):
        """Stop the loop; undelivered rows stay for the next start."""
        if self._task is None:
            return
        self._stopping = True
        self.outbox.remove_listener(self.wake)
        self._wakeup.set()
        self._task.join(timeout)
        self._task = None
        if self._running:
            LOG.warning('Outbox sender did not stop within %.1fs (a send to '
                        'the %s sink is still in progress)', timeout,
                        self.sink_name)
        depth, _ = self._backlog()
        if depth:
            LOG.info('Outbox sender stopped: %s notification(s) not yet '
                     'delivered stay in %s for the next start', depth,
                     self.outbox.journal.path)
        else:
            LOG.info('Outbox sender stopped: nothing left to deliver')

    @property
    def running(self):
        return self._running

    def _loop(self):
        try:
            while not self._stopping:
                self.stamp_turnover()
                try:
                    delay = self.run_once()
                    if time.monotonic() >= self._next_prune:
                        self._next_prune = (time.monotonic() +
                                            self._prune_interval)
                        self.prune()
                except Exception:
                    # run_once and prune handle their own failures; this
                    # is for the unforeseen, which must not end delivery.
                    LOG.exception('Outbox sender: unexpected error; '
                                  'retrying')
                    delay = self._retry_max
                if self._stopping:
                    break
                if delay == 0:
                    self._backend.sleep(0)
                elif delay is None:
                    self._wait(min(self._poll_interval, max(
                        0.0, self._next_prune - time.monotonic())),
                        wakeable=True)
                else:
                    self._wait(delay, wakeable=False)
        finally:
            self._running = False

    def _wait(self, timeout, wakeable):
        # While backing off, wake() must not cut the wait short, or every
        # new row during an outage would be one more immediate retry; the
        # rows are picked up when the backoff ends anyway.  stop() always
        # cuts it short.
        # Awake every HEARTBEAT seconds, so a stale turnover means a send
        # that does not return.
        deadline = time.monotonic() + timeout
        while not self._stopping:
            self.stamp_turnover()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wakeup.wait(min(remaining, supervision.HEARTBEAT)):
                self._wakeup.clear()
                if wakeable:
                    return
