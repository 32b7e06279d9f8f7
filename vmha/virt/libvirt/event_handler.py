"""From libvirt's event-loop thread to the listeners.

Producer side (libvirt's native event-loop thread, and the reconnect
thread): ``enqueue`` appends to a bounded deque and wakes the dispatcher
through a non-blocking pipe.  No logging, no libvirt calls, no locks: a
deque's append and popleft are atomic, and the one-byte wakeups collapse
while the dispatcher has not yet drained them.  The bound applies to
domain events only: a control item (connection lost, the reconnect
thread's result) is always queued, since dropping one would leave the
agent deaf, believing itself connected with no reconnect under way.

Consumer side (the dispatcher): ``dispatch_pending`` drains the pipe, then
the queue, builds typed events, holds STOPPED back for ``stopped_delay``
seconds (cancelled by a later lifecycle event of the same domain, so a
reboot is not mistaken for a stop; STOPPED_FAILED and STOPPED_CRASHED,
never part of a reboot, go at once) and hands the rest to ``deliver`` in
arrival order.  Held-back events live in one heap, served by the same
loop: no timer or thread per event.

Two variants run that loop: ``EventletEventHandler`` in a greenthread
(``emit_queued_events``) and ``ThreadingEventHandler`` in a native thread.
``EventHandler.create`` picks one by the concurrency backend's name.
"""

import collections
import heapq
import logging
import time

from vmha import concurrency
from vmha import supervision
from vmha.virt import event as ev
from vmha.virt.libvirt import event_builder

LOG = logging.getLogger(__name__)

# What the producer side may put on the queue besides RawEvents: control
# items, never dropped.
_HOST_EVENT_TYPES = (ev.HostEvent,)


class EventHandler(supervision.SupervisedLoop):
    """The queue, the STOPPED delay and delivery; subclasses run the loop.

    :param deliver: called with each event, in order, on the dispatcher
    :param stopped_delay: seconds to hold STOPPED back (0: no delay)
    :param queue_size: most events waiting before new ones are dropped
        (and a ResyncRequiredEvent is delivered instead)
    :param clock: monotonic clock, replaceable in tests
    """

    backend: str | None = None
    check_name = 'dispatcher'
    description = 'event dispatcher'

    def __init__(self, deliver, stopped_delay=15.0, queue_size=10000,
                 clock=time.monotonic):
        self._deliver = deliver
        self._stopped_delay = stopped_delay
        self._queue_size = queue_size
        self.clock = clock
        self._queue = collections.deque()
        self._pipe = self._make_pipe()
        self._delayed = {}  # uuid -> (due, seq, event)
        self._delayed_heap = []  # (due, seq, uuid); stale entries skipped
        self._seq = 0
        self._dropped = 0  # written by producers, read by the dispatcher
        self._dropped_reported = 0
        self.dropped_total = 0
        self.dispatched_total = 0
        self.init_turnover(clock)
        # callable() at the end of every turnover (the driver's hook).
        self.on_turnover = None
        self._running = False

    @staticmethod
    def variant(backend):
        """The handler class for backend 'eventlet' or 'threading'."""
        for variant in (EventletEventHandler, ThreadingEventHandler):
            if variant.backend == backend:
                return variant
        raise ValueError('unknown concurrency backend %r' % backend)

    @classmethod
    def create(cls, backend, deliver, **kwargs):
        """A handler of the backend's variant."""
        return cls.variant(backend)(deliver, **kwargs)

    def _make_pipe(self):
        return concurrency.get(self.backend).pipe()

    # --- producer side: any thread, never blocks, never logs ---------------

    def enqueue(self, item):
        """Queue a RawEvent or HostEvent and wake the dispatcher; a
        RawEvent beyond ``queue_size`` is dropped (and counted)."""
        if len(self._queue) >= self._queue_size and \
                not isinstance(item, _HOST_EVENT_TYPES):
            self._dropped += 1
        else:
            self._queue.append(item)
        self._pipe.wake()

    def queue_depth(self):
        return len(self._queue)

    # --- consumer side: the dispatcher -------------------------------------

    def dispatch_pending(self):
        """Deliver everything queued and every held-back event now due."""
        self._pipe.drain()
        self.stamp_turnover()
        queue = self._queue
        while queue:
            self._route(queue.popleft())
            # Progress counts: a long burst is not a wedged dispatcher.
            self.stamp_turnover()
        dropped = self._dropped - self._dropped_reported
        if dropped:
            self._dropped_reported += dropped
            self.dropped_total += dropped
            LOG.error('Event queue full (%d events): dropped %d event(s); '
                      'asking listeners to resync', self._queue_size, dropped)
            self._emit(ev.ResyncRequiredEvent(dropped))
        self._emit_due(self.clock())
        if self.on_turnover is not None:
            try:
                self.on_turnover()
            except Exception:
                LOG.exception('Turnover hook failed; continuing')

    def _route(self, item):
        if isinstance(item, _HOST_EVENT_TYPES):
            self._emit(item)
            return
        try:
            event = event_builder.build(item)
        except (event_builder.MalformedEvent, TypeError, ValueError,
                AttributeError) as error:
            LOG.warning('Skipping malformed event for domain %s: %s',
                        getattr(item, 'uuid', '-'), error)
            return
        if isinstance(event, ev.LifecycleEvent):
            pending = self._delayed.pop(event.uuid, None)
            if pending is not None:
                if event.transition in ev.CONFIG_TRANSITIONS:
                    # A definition change is not a restart: keep the stop,
                    # and keep it before the change.
                    self._emit(pending[2])
                else:
                    LOG.debug('%s cancels the held-back %s of %s',
                              event.vir_domain_event,
                              pending[2].vir_domain_event, event.uuid)
            if (event.transition == ev.EVENT_LIFECYCLE_STOPPED
                    and event.detail not in ev.UNDELAYED_STOPPED_DETAILS
                    and self._stopped_delay > 0):
                self._hold(event)
                return
        self._emit(event)

    def _hold(self, event):
        self._seq += 1
        due = event.monotonic + self._stopped_delay
        self._delayed[event.uuid] = (due, self._seq, event)
        heapq.heappush(self._delayed_heap, (due, self._seq, event.uuid))

    def _emit_due(self, now):
        heap = self._delayed_heap
        while heap and heap[0][0] <= now:
            due, seq, uuid = heapq.heappop(heap)
            pending = self._delayed.get(uuid)
            if pending is not None and pending[1] == seq:
                del self._delayed[uuid]
                self._emit(pending[2])

    def _emit(self, event):
        self.dispatched_total += 1
        try:
            self._deliver(event)
        except Exception:
            LOG.exception('Delivering %s failed (domain %s)',
                          event.describe(), getattr(event, 'uuid', '-'))

    def held_back(self):
        """UUIDs whose STOPPED is being held back."""
        return set(self._delayed)

    def next_timeout(self):
        """Seconds until the next held-back event is due, or None."""
        heap = self._delayed_heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)  # cancelled: drop the stale entry
        if not heap:
            return None
        return max(0.0, heap[0][0] - self.clock())

    def _is_live(self, entry):
        pending = self._delayed.get(entry[2])
        return pending is not None and pending[1] == entry[1]

    def cancel_held_back(self):
        """Forget every held-back event (at shutdown); returns them."""
        events = [entry[2] for entry in self._delayed.values()]
        self._delayed.clear()
        self._delayed_heap.clear()
        if events:
            LOG.info('Shutting down with %d held-back STOPPED event(s) '
                     'not delivered: %s', len(events),
                     ', '.join(e.uuid for e in events))
        return events

    # --- the loop ----------------------------------------------------------

    def _run(self):
        while self._running:
            timeout = self.next_timeout()
            # Idle, the loop still turns over every HEARTBEAT seconds, so a
            # stale ``last_turnover`` means a wedged dispatcher, not a quiet
            # host (health checks and the systemd watchdog rely on it).
            self._wait(supervision.HEARTBEAT if timeout is None
                       else min(timeout, supervision.HEARTBEAT))
            if not self._running:
                break
            try:
                self.dispatch_pending()
            except Exception:  # never let the dispatcher die
                LOG.exception('Event dispatch failed; continuing')

    def _wait(self, timeout):
        concurrency.get(self.backend).wait_readable(self._pipe.read_fd,
                                                    timeout)

    def start(self):
        raise NotImplementedError

    def stop(self):
        """Stop the loop; queued events not yet dispatched are dropped."""
        self._running = False
        self._pipe.wake()

    def start_native_thread(self, target, name):
        """Start a daemon OS thread (libvirt event loop, reconnect): under
        eventlet's monkey patching ``threading`` makes greenthreads, and
        libvirt's event loop blocks in C."""
        return concurrency.get(self.backend).native_thread(target, name)

    def native_sleep(self, seconds):
        concurrency.get(self.backend).native_sleep(seconds)


class ThreadingEventHandler(EventHandler):
    """Dispatches in a native thread; listeners run on that thread."""

    backend = 'threading'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._thread = None

    def start(self):
        self._running = True
        self._thread = self.start_native_thread(self._run,
                                                'vmha-event-dispatcher')

    def stop(self):
        super().stop()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class EventletEventHandler(EventHandler):
    """Dispatches in the greenthread ``emit_queued_events``."""

    backend = 'eventlet'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._greenthread = None

    def emit_queued_events(self):
        """Greenthread body: wait on the wakeup pipe, dispatch, repeat."""
        self._run()

    def start(self):
        import eventlet
        self._running = True
        self._greenthread = eventlet.spawn(self.emit_queued_events)

    def stop(self):
        super().stop()
        if self._greenthread is not None:
            self._greenthread.wait()
            self._greenthread = None
