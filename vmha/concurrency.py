"""The few concurrency primitives vmha's services need, per backend.

``get(name)`` returns the backend for ``[DEFAULT] concurrency_backend``:
``spawn`` a long-running task, ``sleep``, and an ``event`` to wait on with a
timeout.  Under ``eventlet`` these are greenthreads and green events (they
work with or without monkey patching, so tests never patch); under
``threading`` native threads.  Code that must block in C (libvirt's event
loop) does not use this: see ``EventHandler.start_native_thread``.
"""

import threading
import time


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


_BACKENDS = {backend.name: backend
             for backend in (ThreadingBackend(), EventletBackend())}


def get(name):
    """The backend called ``name`` ('eventlet' or 'threading')."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError('unknown concurrency backend %r' % name)
