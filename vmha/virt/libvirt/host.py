"""The libvirt connection, its event thread, and reconnecting.

``Host.initialize`` registers libvirt's default event loop (before the
first connection, as libvirt requires), starts a native daemon thread that
runs it, opens the connection, registers the domain event callbacks, the
close callback and keepalive, and starts the dispatcher.

When the connection closes (libvirtd stopped, or keepalive gave up on a
hung libvirtd) the close callback queues a CONNECTION_LOST event through
the same queue as domain events.  The dispatcher delivers it and starts a
reconnect thread, which retries with exponential backoff and jitter, then
registers every callback again and queues CONNECTION_RESTORED: listeners
resync on it.  Events that happened while disconnected are lost; the
resync is how vmha finds out what they were.
"""

import itertools
import logging
import random
import time

from vmha import backoff
from vmha.virt import event as ev
from vmha.virt import exception
from vmha.virt.libvirt import event_builder

LOG = logging.getLogger(__name__)

CLOSE_REASONS = ('ERROR', 'EOF', 'KEEPALIVE', 'CLIENT')


def backoff_delays(minimum, maximum, rand=random.random):
    """Endless reconnect delays: doubling from ``minimum`` up to
    ``maximum``, with jitter (``vmha.backoff``)."""
    for attempt in itertools.count():
        yield backoff.jittered(backoff.ceiling(attempt, minimum, maximum),
                               rand)


class Host:
    """One hypervisor connection and the event pipeline behind it.

    :param api: a ``vmha.virt.libvirt.api.LibvirtAPI``
    :param uri: the libvirt connection URI
    :param handler_factory: ``callable(deliver)`` returning an
        ``EventHandler``; the host passes its own dispatch entry point
    :param listener: called with every event on the dispatcher
    """

    def __init__(self, api, uri, handler_factory, listener,
                 keepalive_interval=5, keepalive_count=3,
                 reconnect_min=0.5, reconnect_max=30.0,
                 rand=random.random):
        self._api = api
        self._uri = uri
        self._listener = listener
        self._keepalive = (keepalive_interval, keepalive_count)
        self._reconnect_bounds = (reconnect_min, reconnect_max)
        self._rand = rand
        self.handler = handler_factory(self._on_event)
        self._conn = None
        # Each connection gets a generation number, so that the dispatcher
        # can tell a close of the current connection from a stale one.
        self._generations = itertools.count(1)
        self._generation = None
        self._dead_generations = set()
        self._reconnecting = False
        self._stopping = False
        self.reconnects = 0
        self.keepalive_supported = None
        self.connected_since = None
        self.disconnected_since = None

    # --- start and stop ----------------------------------------------------

    def initialize(self):
        """Connect and start the event pipeline.  Raises ConnectionFailed."""
        self._api.ensure_event_loop(
            lambda target: self.handler.start_native_thread(
                target, 'libvirt-event-loop'),
            self.handler.native_sleep)
        self._install(*self._connect())
        self.handler.start()

    def cleanup(self):
        self._stopping = True
        self.handler.stop()
        self.handler.cancel_held_back()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @property
    def connected(self):
        return self._conn is not None

    def get_connection(self):
        """The open connection.  Raises HypervisorUnavailable."""
        conn = self._conn
        if conn is None:
            raise exception.HypervisorUnavailable(
                'no libvirt connection to %s (reconnecting)' % self._uri)
        return conn

    # --- connecting (start-up, or the reconnect thread) --------------------

    def _connect(self):
        """Open a connection with every callback registered.

        Returns (connection, generation); the dispatcher installs it.
        """
        conn = self._api.open(self._uri)
        generation = next(self._generations)
        try:
            for event_id in event_builder.SUBSCRIBED_EVENT_IDS:
                try:
                    conn.register_domain_event(event_id, self._on_domain_event)
                except exception.NotSupported as error:
                    # An older libvirt without this event id: go on.
                    LOG.warning('Cannot subscribe to %s events on %s: %s',
                                ev.event_id_name(event_id), self._uri, error)
            conn.register_close_callback(
                lambda reason: self._on_close(generation, reason))
            self._set_keepalive(conn)
        except exception.HypervisorError:
            conn.close()
            raise
        return conn, generation

    def _install(self, conn, generation):
        self._conn = conn
        self._generation = generation
        self.connected_since = time.time()
        self.disconnected_since = None
        LOG.info('Connected to %s', self._uri)

    def _set_keepalive(self, conn):
        interval, count = self._keepalive
        if interval <= 0:
            return
        try:
            conn.set_keepalive(interval, count)
            self.keepalive_supported = True
        except exception.NotSupported:
            if self.keepalive_supported is None:
                LOG.info('%s has no keepalive: a hung libvirtd will not be '
                         'noticed on this connection', self._uri)
            self.keepalive_supported = False

    # --- callbacks on libvirt's event-loop thread: copy, queue, return -----

    def _on_domain_event(self, event_id, uuid, name, args):
        self.handler.enqueue(event_builder.RawEvent(
            time.time(), self.handler.clock(), event_id, uuid, name, args))

    def _on_close(self, generation, reason):
        if self._stopping:
            return
        reason_name = (CLOSE_REASONS[reason]
                       if 0 <= reason < len(CLOSE_REASONS)
                       else ev.unknown(reason))
        lost = ev.ConnectionLostEvent(reason_name)
        lost.generation = generation
        self.handler.enqueue(lost)

    # --- on the dispatcher: the only place connection state changes --------

    def _on_event(self, event):
        if isinstance(event, ev.ConnectionLostEvent):
            if not self._connection_lost(event):
                return
        elif isinstance(event, _Reconnected):
            event = self._reconnected(event)
            if event is None:
                return
        self._listener(event)

    def _connection_lost(self, event):
        """Drop the connection; False if the event is stale or repeated."""
        generation = getattr(event, 'generation', self._generation)
        if generation != self._generation or self._conn is None:
            # A connection not installed yet (closed while reconnecting)
            # or one already reported: remember it, tell nobody twice.
            self._dead_generations.add(generation)
            return False
        LOG.warning('Lost the libvirt connection to %s (%s); reconnecting',
                    self._uri, event.reason)
        conn, self._conn = self._conn, None
        self.disconnected_since = event.timestamp
        conn.close()
        self._start_reconnect()
        return True

    def _start_reconnect(self):
        if self._reconnecting or self._stopping:
            return
        self._reconnecting = True
        self.handler.start_native_thread(self.reconnect, 'libvirt-reconnect')

    def _reconnected(self, item):
        self._reconnecting = False
        if item.generation in self._dead_generations or \
                not item.conn.is_alive():
            self._dead_generations.discard(item.generation)
            LOG.warning('The new connection to %s closed at once; '
                        'reconnecting again', self._uri)
            item.conn.close()
            self._start_reconnect()
            return None
        self._install(item.conn, item.generation)
        self.reconnects += 1
        return ev.ConnectionRestoredEvent(item.attempts, item.outage,
                                          timestamp=item.timestamp,
                                          monotonic=item.monotonic)

    # --- the reconnect thread -----------------------------------------------

    def reconnect(self):
        """Retry until connected (or stopping); the dispatcher installs it.

        Runs on its own native thread so a hung libvirtd never blocks the
        dispatcher; the fake-libvirt tests call it directly.
        """
        started = self.handler.clock()
        attempts = 0
        for delay in backoff_delays(*self._reconnect_bounds, rand=self._rand):
            if self._stopping:
                return
            attempts += 1
            try:
                conn, generation = self._connect()
            except exception.HypervisorError as error:
                LOG.info('Reconnect to %s failed (attempt %d): %s; next try '
                         'in %.1fs', self._uri, attempts, error, delay)
                self.handler.native_sleep(delay)
                continue
            self.handler.enqueue(_Reconnected(
                conn, generation, attempts, self.handler.clock() - started))
            return


class _Reconnected(ev.HostEvent):
    """Internal: the reconnect thread opened ``conn``; never delivered."""

    def __init__(self, conn, generation, attempts, outage):
        super().__init__()
        self.conn = conn
        self.generation = generation
        self.attempts = attempts
        self.outage = outage
