"""The few concurrency primitives vmha's services need, per backend.

``get(name)`` returns the backend for ``[DEFAULT] concurrency_backend``:
``spawn`` a long-running task, ``sleep``, and an ``event`` to wait on with a
timeout.  Under ``eventlet`` these are greenthreads and green events (they
work with or without monkey patching, so tests never patch); under
``threading`` native threads.  Code that must block in C (libvirt's event
loop) does not use this: see ``EventHandler.start_native_thread``.

``NativePool`` runs many blocking calls at once on native threads (the
guest-agent pings) and hands their results back to one task of the
backend through a ``WakeupPipe``; the task never blocks a hub.
"""

import _queue
import collections
import logging
import os
import select
import threading
import time

LOG = logging.getLogger(__name__)

def inline_run_blocking(function, *args):
    """Call ``function`` here and now: the ``run_blocking`` of callers
    given no backend (unit tests with the fake libvirt, tools)."""
    return function(*args)


class WakeupPipe:
    """A self-pipe whose writes collapse into one pending byte.

    ``read`` and ``write`` default to ``os.read``/``os.write``; under
    eventlet's monkey patching those wait instead of raising EAGAIN, so
    the eventlet handler passes the unpatched ones.
    """

    def __init__(self, read=os.read, write=os.write):
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._read = read
        self._write = write
        self._pending = False

    def wake(self):
        # Callers racing past the flag write at most a few extra bytes;
        # a full pipe means a wakeup is already pending.
        if not self._pending:
            self._pending = True
            try:
                self._write(self.write_fd, b'\0')
            except (BlockingIOError, OSError):
                pass

    def drain(self):
        # Empty the pipe first, clear the flag second, and only then may
        # the caller drain its queue.  Cleared earlier, a wake() between
        # the two steps would leave the flag set with its byte already
        # read: every later wake() would skip writing, and the dispatcher
        # would sleep on a queue that keeps filling.
        try:
            while self._read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._pending = False

    def close(self):
        """Close both ends; call it once nobody can ``wake`` any more (a
        write to a closed number could land in a reused descriptor)."""
        fds, self.read_fd, self.write_fd = (self.read_fd,
                                            self.write_fd), -1, -1
        self._pending = True  # wake() writes nothing from now on
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


class Task:
    """A spawned task; ``join`` waits for it to return."""

    def __init__(self, join):
        self._join = join

    def join(self, timeout=None):
        self._join(timeout)


class ThreadingBackend:
    name = 'threading'

    def spawn(self, function, *args, name=None):
        thread = threading.Thread(target=function, args=args, name=name,
                                  daemon=True)
        thread.start()
        return Task(thread.join)

    def sleep(self, seconds):
        time.sleep(seconds)

    def event(self):
        return threading.Event()

    def run_blocking(self, function, *args):
        """Call a blocking function (libvirt, disk) where it may block."""
        return function(*args)

    def native_thread(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def native_lock(self):
        return threading.Lock()

    def native_sleep(self, seconds):
        time.sleep(seconds)

    def pipe(self):
        return WakeupPipe()

    def wait_readable(self, fd, timeout):
        # poll, not select: an agent with many guests has descriptors
        # numbered past select's 1,024.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(None if timeout is None else max(0, timeout) * 1000.0)


class EventletBackend:
    name = 'eventlet'

    def spawn(self, function, *args, name=None):
        import eventlet
        greenthread = eventlet.spawn(function, *args)

        def join(timeout=None):
            with eventlet.Timeout(timeout, False):
                greenthread.wait()
        return Task(join)

    def sleep(self, seconds):
        import eventlet
        eventlet.sleep(seconds)

    def event(self):
        from eventlet.green import threading as green_threading
        return green_threading.Event()

    def run_blocking(self, function, *args):
        """Call a blocking function in eventlet's native thread pool, so
        the hub (and event dispatch) goes on meanwhile."""
        from eventlet import tpool
        return tpool.execute(function, *args)

    def native_thread(self, target, name):
        # Under monkey patching ``threading`` makes greenthreads.
        from eventlet import patcher
        thread = patcher.original('threading').Thread(
            target=target, name=name, daemon=True)
        thread.start()
        return thread

    def native_lock(self):
        from eventlet import patcher
        return patcher.original('threading').Lock()

    def native_sleep(self, seconds):
        """Sleep on a native thread (never a greenthread's call)."""
        from eventlet import patcher
        patcher.original('time').sleep(seconds)

    def pipe(self):
        from eventlet import patcher
        unpatched_os = patcher.original('os')
        return WakeupPipe(unpatched_os.read, unpatched_os.write)

    def wait_readable(self, fd, timeout):
        from eventlet import hubs
        from eventlet import timeout as eventlet_timeout
        try:
            hubs.trampoline(fd, read=True, timeout=timeout,
                            timeout_exc=eventlet_timeout.Timeout)
        except eventlet_timeout.Timeout:
            pass


class Job:
    """One call submitted to a ``NativePool``: ``key`` is the caller's,
    ``result`` or ``error`` is set once ``done``."""

    __slots__ = ('key', 'function', 'args', 'submitted', 'finished',
                 'result', 'error', 'done')

    def __init__(self, key, function, args, submitted):
        self.key = key
        self.function = function
        self.args = args
        self.submitted = submitted
        self.finished = None
        self.result = None
        self.error = None
        self.done = False


class NativePool:
    """Up to ``size`` blocking calls at once, each on a native thread.

    ``submit`` never blocks; ``wait(timeout)`` blocks the calling task of
    ``backend`` (a greenthread under eventlet: the hub goes on) until a
    job finished or ``timeout`` passed, and returns the finished jobs.
    Threads start on demand and stay.  Jobs beyond ``size`` wait in the
    queue; callers that must not queue keep count with ``busy``.
    """

    def __init__(self, backend, size, name='vmha-pool',
                 clock=time.monotonic):
        self._backend = backend
        self._size = size
        self._name = name
        self._clock = clock
        # The C queue: eventlet's monkey patching replaces queue's own.
        self._jobs = _queue.SimpleQueue()
        self._finished = collections.deque()
        self._pipe = backend.pipe()
        self._threads = 0
        # Jobs queued and not yet taken, and threads waiting for one: a
        # thread starts whenever the first outnumber the second, so a job
        # never waits behind a slow one while the pool has room.
        self._pending = 0
        self._waiting = 0
        self._lock = backend.native_lock()
        self.busy = 0  # submitted and not yet collected by wait()
        self._closing = False
        self._alive = 0  # threads still to end once closing

    @property
    def size(self):
        return self._size

    def submit(self, key, function, *args):
        job = Job(key, function, args, self._clock())
        self.busy += 1
        with self._lock:
            self._pending += 1
            start = (self._pending > self._waiting
                     and self._threads < self._size)
            if start:
                self._threads += 1
        self._jobs.put(job)
        if start:
            self._backend.native_thread(
                self._work, '%s-%d' % (self._name, self._threads))
        return job

    def _work(self):
        while True:
            with self._lock:
                self._waiting += 1
            job = self._jobs.get()
            with self._lock:
                self._waiting -= 1
                if job is not None:
                    self._pending -= 1
            if job is None:
                self._thread_ended()
                return
            try:
                job.result = job.function(*job.args)
            except BaseException as error:  # handed to the caller
                job.error = error
            job.finished = self._clock()
            job.done = True
            self._finished.append(job)
            self._pipe.wake()

    def wait(self, timeout):
        """Finished jobs (maybe none once ``timeout`` seconds passed)."""
        if (not self._finished and (timeout is None or timeout > 0)
                and self._pipe.read_fd >= 0):
            self._backend.wait_readable(self._pipe.read_fd, timeout)
        return self.collect()

    def collect(self):
        """Finished jobs, without waiting."""
        self._pipe.drain()
        jobs = []
        while self._finished:
            jobs.append(self._finished.popleft())
        self.busy -= len(jobs)
        return jobs

    def wake(self):
        """End a ``wait`` early (another task has news for its caller)."""
        self._pipe.wake()

    def close(self):
        """Let the threads end once their current call returns; the last
        one to end closes the wake-up pipe (no thread can write to it
        after that)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            threads = self._threads
            self._threads = self._size  # no new thread from now on
            self._alive = threads
        if threads == 0:
            self._pipe.close()
        for _ in range(threads):
            self._jobs.put(None)

    def _thread_ended(self):
        with self._lock:
            self._alive -= 1
            last = self._alive == 0
        if last:
            self._pipe.close()


_BACKENDS = {backend.name: backend
             for backend in (ThreadingBackend(), EventletBackend())}


def get(name):
    """The backend called ``name`` ('eventlet' or 'threading')."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError('unknown concurrency backend %r' % name)
