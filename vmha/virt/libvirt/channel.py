"""Byte I/O on many guest channels (virtio-serial unix sockets) at once.

A guest's heartbeat port is, on the host, a unix socket QEMU listens on.
A monitor talks to hundreds of them; a thread or a libvirt call per guest
would cost too much, and a guest is untrusted: it may flood, stop reading,
or hang up at any time.  ``ChannelHub`` therefore runs ONE native thread
with an epoll loop over non-blocking sockets, and only moves bytes:

* **Never blocks a caller.**  ``open``, ``send`` and ``close`` only queue
  work (under a native lock held for a few instructions) and wake the hub
  thread through a ``WakeupPipe``; the hub thread does the socket calls
  and never blocks either (all sockets are non-blocking).  The one
  exception saves a wake-up per message: ``send`` to a connected socket
  with nothing queued writes at once (non-blocking) and queues only what
  the socket did not take.
* **Bounded memory per guest.**  Bytes read and not yet ``collect``-ed
  count against ``in_limit``: once a connection reaches it, the hub stops
  reading that socket (the guest's writes then block in the guest) until
  the next ``collect``.  Bytes queued to write count against
  ``out_limit``: ``send`` refuses (returns False, queues nothing) what
  would pass it, so a guest that never reads costs at most that much.
* **Fair.**  At most one read of ``read_size`` bytes per connection per
  readiness, so a flood on one socket never delays another.
* **Results as events.**  ``collect`` returns ``ChannelEvent`` tuples in
  the order they happened: 'connected', 'data' (the bytes of one read,
  framing is the caller's business), 'closed' (EOF, reset, a write
  error: the socket is closed and the key forgotten) and 'failed' (the
  connect failed: ENOENT, ECONNREFUSED...).  The hub calls ``wake()``
  once per loop turn that produced events.

What the bytes mean, and when to reconnect, is the caller's business:
the hub never parses, retries or reconnects.

Under eventlet the process may be monkey patched (``vmha-agent`` is):
the hub thread then uses the unpatched ``select``, ``socket``, ``os`` and
``threading`` modules, because green ones would park a native thread on
the eventlet hub of another thread.
"""

import collections
import errno
import importlib
import logging
import sys
import time

from vmha import concurrency
from vmha import supervision

LOG = logging.getLogger(__name__)

CONNECTED = 'connected'
DATA = 'data'
CLOSED = 'closed'
FAILED = 'failed'

ChannelEvent = collections.namedtuple('ChannelEvent',
                                      ['key', 'kind', 'data', 'at'])
ChannelEvent.__doc__ = """Something that happened on one channel.

``key``: the caller's key; ``kind``: 'connected', 'data', 'closed' or
'failed'; ``data``: the bytes read (for 'data'), why (a str, for 'closed'
and 'failed'), else None; ``at``: ``time.monotonic()`` when the hub saw
it (for 'data': when the bytes were read).
"""

_EPOLLIN = 0x001
_EPOLLOUT = 0x004
_EPOLLERR = 0x008
_EPOLLHUP = 0x010

POLL_TIMEOUT = supervision.HEARTBEAT  # the loop turns over this often


def native_module(name):
    """``name`` ('os', 'select', 'socket', 'threading') as the standard
    library has it, even when eventlet monkey patched the process."""
    eventlet = sys.modules.get('eventlet')
    if eventlet is not None:
        from eventlet import patcher
        if patcher.is_monkey_patched('thread' if name == 'threading'
                                     else name):
            return patcher.original(name)
    return importlib.import_module(name)


def describe_error(error):
    """'ECONNREFUSED: Connection refused' for an OSError."""
    if error.errno is None:
        return str(error)
    return '%s: %s' % (errno.errorcode.get(error.errno, error.errno),
                       error.strerror or str(error))


class _Channel:
    """One connection.  ``out``, ``out_bytes``, ``unread``, ``paused``,
    ``closed`` and ``writable`` are shared (under the hub's lock); ``fd``,
    ``mask`` and ``connecting`` belong to the hub thread.  ``sock`` is
    the hub thread's, except that ``send`` may write to it under the lock
    while ``writable``; it is closed under the lock, so a caller never
    writes to a closed (and maybe reused) descriptor."""

    __slots__ = ('key', 'path', 'sock', 'fd', 'mask', 'connecting',
                 'out', 'out_bytes', 'unread', 'paused', 'closed',
                 'writable')

    def __init__(self, key, path=None, sock=None):
        self.key = key
        self.path = path
        self.sock = sock
        self.fd = None
        self.mask = 0
        self.connecting = False
        self.out = collections.deque()
        self.out_bytes = 0
        self.unread = 0
        self.paused = False
        self.closed = False
        self.writable = False  # connected: send() may write at once


class ChannelHub(supervision.SupervisedLoop):
    """Non-blocking byte I/O on many unix stream sockets, one native thread.

    :param wake: ``callable()``, called on the hub thread when ``collect``
        has something (the monitor passes its ``NativePool.wake``)
    :param in_limit: bytes read and not collected, per connection, at
        which the hub stops reading it until the next ``collect``
    :param out_limit: bytes waiting to be written, per connection, that
        ``send`` never goes past
    :param read_size: bytes per read (one read per readiness)
    :param name: the hub thread's name
    :param backend: a ``vmha.concurrency`` backend whose ``native_thread``
        and ``native_lock`` to use; None: the unpatched ``threading``
    :param clock: the monotonic clock stamping events

    A ``SupervisedLoop``: the hub thread stamps its turnover at least every
    ``supervision.HEARTBEAT``, so a service that lists the hub among its
    loops sees in /healthz a hub thread that died or wedged.
    """

    check_name = 'channels'
    description = 'guest channel hub'

    def __init__(self, wake, in_limit=65536, out_limit=65536, read_size=4096,
                 name='vmha-channels', backend=None, clock=time.monotonic):
        if in_limit < 1 or out_limit < 1 or read_size < 1:
            raise ValueError('in_limit, out_limit and read_size must be >= 1')
        self._wake = wake
        self.in_limit = in_limit
        self.out_limit = out_limit
        self.read_size = read_size
        self.name = name
        self._backend = backend
        self._clock = clock
        self._os = native_module('os')
        self._socket = native_module('socket')
        self._select = native_module('select')
        self._send_flags = getattr(self._socket, 'MSG_NOSIGNAL', 0)
        if backend is not None:
            self._lock = backend.native_lock()
        else:
            self._lock = native_module('threading').Lock()
        self._pipe = concurrency.WakeupPipe(self._os.read, self._os.write)
        self._epoll = None
        self._thread = None
        self._stopping = False
        # Shared, under self._lock.
        self._channels = {}  # key -> _Channel
        self._events = collections.deque()
        self._commands = collections.deque()  # (verb, _Channel)
        self._unread = set()  # channels with bytes read, not collected
        # The hub thread's own.
        self._by_fd = {}
        self._news = False
        self.reads = 0
        self.writes = 0
        self.init_turnover(clock)

    # --- life cycle ----------------------------------------------------------

    def start(self):
        self._epoll = self._select.epoll()
        self._epoll.register(self._pipe.read_fd, _EPOLLIN)
        if self._backend is not None:
            self._thread = self._backend.native_thread(self._run, self.name)
        else:
            self._thread = native_module('threading').Thread(
                target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout=10):
        """Close every socket and join the hub thread.  Idempotent."""
        if self._pipe is None:
            return
        self._stopping = True
        self._pipe.wake()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                LOG.error('Channel hub %s did not stop within %ss; its '
                          'sockets close when it does', self.name, timeout)
                return
        else:
            self._shutdown()
        # Closed once only: a descriptor closed twice may be another's.
        pipe, self._pipe = self._pipe, None
        pipe.close()

    # --- the caller's side (any thread or greenthread; never blocks) -----

    def open(self, key, path):
        """Connect ``key`` to the unix socket at ``path``, in the hub
        thread: the outcome is a 'connected' or 'failed' event.  A
        connection ``key`` already had is closed first (as ``close``)."""
        channel = _Channel(key, path=path)
        self._replace(key, channel, 'open')

    def adopt(self, key, sock):
        """Serve ``sock``, an already connected stream socket (the hub
        owns it from now on); a 'connected' event follows."""
        fd = sock.detach()
        native = self._socket.socket(fileno=fd)
        native.setblocking(False)
        self._replace(key, _Channel(key, sock=native), 'adopt')

    def _replace(self, key, channel, verb):
        with self._lock:
            if self._stopping:
                if channel.sock is not None:
                    channel.sock.close()
                return
            old = self._forget(key)
            self._channels[key] = channel
            self._commands.append((verb, channel))
        if old is not None:
            LOG.debug('Channel %s replaced by a new connection', key)
        self._poke()

    def send(self, key, data):
        """Queue ``data`` (bytes) to write to ``key``.  Never blocks.

        False, and nothing queued, when ``key`` is unknown or closed, or
        when the bytes waiting for it would pass ``out_limit``."""
        data = bytes(data)
        with self._lock:
            if self._stopping:
                return False
            channel = self._channels.get(key)
            if channel is None or channel.closed or \
                    channel.out_bytes + len(data) > self.out_limit:
                return False
            if not data:
                return True
            if channel.writable and not channel.out:
                # Nothing queued before: write now, from the caller (the
                # socket never blocks), and spare the hub thread a wake-up.
                try:
                    sent = channel.sock.send(data, self._send_flags)
                except OSError:  # full, or broken: the hub finds out
                    sent = 0
                if sent == len(data):
                    return True
                data = data[sent:]
            idle = not channel.out
            channel.out.append(data)
            channel.out_bytes += len(data)
            if idle:
                self._commands.append(('flush', channel))
        if idle:
            self._poke()
        return True

    def close(self, key):
        """Close ``key``'s connection and drop its uncollected events; no
        event follows.  Idempotent."""
        with self._lock:
            channel = self._forget(key)
        if channel is not None:
            self._poke()

    def _forget(self, key):
        """Under the lock: take ``key`` out of service (its socket is
        closed on the hub thread), drop its uncollected events."""
        channel = self._channels.pop(key, None)
        if channel is None:
            return None
        channel.closed = True
        channel.writable = False
        self._unread.discard(channel)
        if any(event.key == key for event in self._events):
            kept = [event for event in self._events if event.key != key]
            self._events.clear()
            self._events.extend(kept)
        self._commands.append(('close', channel))
        return channel

    def collect(self):
        """Every event since the last call, oldest first.  Thread-safe.
        Resumes reading the connections ``in_limit`` had paused."""
        if not self._events:
            return []
        with self._lock:
            events = list(self._events)
            self._events.clear()
            resume = False
            for channel in self._unread:
                channel.unread = 0
                if channel.paused:
                    self._commands.append(('resume', channel))
                    resume = True
            self._unread.clear()
        if resume:
            self._poke()
        return events

    def _poke(self):
        pipe = self._pipe
        if pipe is not None:  # None once stopped
            pipe.wake()

    def pending_out(self, key):
        """Bytes waiting to be written to ``key`` (0 if unknown)."""
        with self._lock:
            channel = self._channels.get(key)
            return channel.out_bytes if channel is not None else 0

    def __len__(self):
        """Connections open or being opened."""
        return len(self._channels)

    @property
    def running(self):
        """Whether the hub thread serves (False before start, after stop,
        or if it died: then every channel was closed)."""
        return self._thread is not None and self._thread.is_alive() and \
            not self._stopping

    def health_details(self):
        return {'channels': len(self._channels), 'running': self.running}

    # --- the hub thread ----------------------------------------------------

    def _run(self):
        try:
            while not self._stopping:
                self._turn()
        except Exception:  # never seen; logged so it cannot be silent
            LOG.exception('Channel hub %s failed; every channel closes',
                          self.name)
        finally:
            self._shutdown()

    def _turn(self):
        try:
            ready = self._epoll.poll(POLL_TIMEOUT)
        except InterruptedError:
            ready = ()
        self.stamp_turnover()
        for fd, mask in ready:
            if fd == self._pipe.read_fd:
                self._pipe.drain()
                continue
            channel = self._by_fd.get(fd)
            if channel is not None:
                try:
                    self._ready(channel, mask)
                except Exception as error:
                    LOG.exception('Channel %s: unexpected error; closing it',
                                  channel.key)
                    self._drop(channel, CLOSED, 'error: %s' % error)
        self._run_commands()
        if self._news:
            self._news = False
            try:
                self._wake()
            except Exception:
                LOG.exception('Channel hub %s: wake() failed', self.name)

    def _run_commands(self):
        while True:
            with self._lock:
                if not self._commands:
                    return
                verb, channel = self._commands.popleft()
            if verb == 'close':
                self._release(channel)
            elif channel.closed:
                # Closed before the hub got to it; 'close' follows.
                continue
            elif verb == 'open':
                self._connect(channel)
            elif verb == 'adopt':
                self._attach(channel)
                self._connected(channel)
            elif verb == 'flush':
                if channel.fd is not None and not channel.connecting:
                    self._flush(channel)
            elif verb == 'resume':
                with self._lock:
                    if channel.unread < self.in_limit:
                        channel.paused = False
                self._update(channel)

    def _connect(self, channel):
        sock = self._socket.socket(self._socket.AF_UNIX,
                                   self._socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            error = sock.connect_ex(channel.path)
        except (OSError, TypeError, ValueError) as exc:
            sock.close()
            self._drop(channel, FAILED, describe_error(exc)
                       if isinstance(exc, OSError) else str(exc))
            return
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            self._drop(channel, FAILED, describe_error(
                OSError(error, self._os.strerror(error))))
            return
        channel.sock = sock
        self._attach(channel)
        if error == errno.EINPROGRESS:
            channel.connecting = True
            self._update(channel)
        else:
            self._connected(channel)

    def _attach(self, channel):
        channel.fd = channel.sock.fileno()
        self._by_fd[channel.fd] = channel

    def _connected(self, channel):
        channel.connecting = False
        self._event(channel, CONNECTED, None)
        with self._lock:
            channel.writable = not channel.closed
        if channel.out:
            self._flush(channel)
        if not channel.closed:
            self._update(channel)

    def _ready(self, channel, mask):
        if channel.connecting:
            error = channel.sock.getsockopt(self._socket.SOL_SOCKET,
                                            self._socket.SO_ERROR)
            if error:
                self._drop(channel, FAILED, describe_error(
                    OSError(error, self._os.strerror(error))))
            else:
                self._connected(channel)
            return
        if mask & _EPOLLOUT:
            self._flush(channel)
        if not channel.closed and channel.mask & _EPOLLIN and \
                mask & (_EPOLLIN | _EPOLLHUP | _EPOLLERR):
            self._read(channel)

    def _read(self, channel):
        try:
            data = channel.sock.recv(self.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._drop(channel, CLOSED, describe_error(error))
            return
        if not data:
            self._drop(channel, CLOSED, 'EOF')
            return
        self.reads += 1
        now = self._clock()
        with self._lock:
            if channel.closed:
                return
            self._events.append(ChannelEvent(channel.key, DATA, data, now))
            channel.unread += len(data)
            self._unread.add(channel)
            if channel.unread >= self.in_limit:
                channel.paused = True
        self._news = True
        if channel.paused:
            self._update(channel)

    def _flush(self, channel):
        while True:
            with self._lock:
                if channel.closed or not channel.out:
                    break
                if len(channel.out) > 1:
                    joined = b''.join(channel.out)
                    channel.out.clear()
                    channel.out.append(joined)
                chunk = channel.out[0]
            try:
                sent = channel.sock.send(chunk, self._send_flags)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._drop(channel, CLOSED, describe_error(error))
                return
            self.writes += 1
            with self._lock:
                # Only this thread takes from the head of ``out``.
                channel.out_bytes -= sent
                if sent == len(chunk):
                    channel.out.popleft()
                else:
                    channel.out[0] = chunk[sent:]
            if sent < len(chunk):
                break
        self._update(channel)

    def _update(self, channel):
        """Register the channel for what it waits for now: writable while
        connecting or with bytes to write, readable unless paused."""
        if channel.fd is None or channel.closed:
            return
        if channel.connecting:
            mask = _EPOLLOUT
        else:
            with self._lock:
                mask = (0 if channel.paused else _EPOLLIN) | \
                    (_EPOLLOUT if channel.out else 0)
        if mask == channel.mask:
            return
        # A paused, idle channel is unregistered: epoll reports a hang-up
        # whatever the mask, and would spin until the caller collects.
        if channel.mask == 0:
            self._epoll.register(channel.fd, mask)
        elif mask == 0:
            self._epoll.unregister(channel.fd)
        else:
            self._epoll.modify(channel.fd, mask)
        channel.mask = mask

    def _event(self, channel, kind, data):
        with self._lock:
            if channel.closed:
                return
            self._events.append(ChannelEvent(channel.key, kind, data,
                                             self._clock()))
        self._news = True

    def _drop(self, channel, kind, why):
        """The hub ends a connection: one ``kind`` event, socket closed,
        key forgotten (unless the caller replaced or closed it first)."""
        with self._lock:
            current = self._channels.get(channel.key) is channel
            if current:
                del self._channels[channel.key]
                self._events.append(ChannelEvent(channel.key, kind, why,
                                                 self._clock()))
            channel.closed = True
            channel.writable = False
            self._unread.discard(channel)
        if current:
            self._news = True
            LOG.debug('Channel %s %s: %s', channel.key, kind, why)
        self._release(channel)

    def _release(self, channel):
        if channel.fd is not None:
            self._by_fd.pop(channel.fd, None)
            if channel.mask:
                try:
                    self._epoll.unregister(channel.fd)
                except (OSError, ValueError):
                    pass
            channel.mask = 0
            channel.fd = None
        with self._lock:  # see _Channel: send() may be writing to it
            channel.writable = False
            sock, channel.sock = channel.sock, None
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def _shutdown(self):
        with self._lock:
            self._stopping = True
            channels = list(self._channels.values())
            self._channels.clear()
            commands = list(self._commands)
            self._commands.clear()
            self._unread.clear()
            for channel in channels:
                channel.closed = True
        for channel in channels + [c for _, c in commands]:
            self._release(channel)
        for channel in list(self._by_fd.values()):
            self._release(channel)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
