"""systemd's notify protocol (sd_notify), without a systemd library.

Under ``Type=notify`` systemd puts a datagram socket's address in
``NOTIFY_SOCKET`` (a leading '@' means Linux's abstract namespace) and,
with ``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC`` (for the
process ``WATCHDOG_PID``, when set).  A service sends newline-separated
``KEY=value`` datagrams: ``READY=1`` once it works, ``WATCHDOG=1`` more
often than the period, ``STATUS=...`` for ``systemctl status``,
``STOPPING=1`` on its way out.  Without ``NOTIFY_SOCKET`` nothing is
sent, so the same binary runs under any supervisor.

``Watchdog`` sends READY and WATCHDOG only while a health predicate
holds: a wedged agent goes silent, and systemd restarts it.

Why not ``oslo_service.systemd``: it sends ``READY=1`` and nothing else
(no WATCHDOG, STATUS or STOPPING), reads ``NOTIFY_SOCKET`` only from
``os.environ``, opens a socket per message, and hides a failed send at
DEBUG; nor does it read ``WATCHDOG_USEC``/``WATCHDOG_PID``.  The protocol
is one datagram, so vmha writes it here, where the watchdog gate sits.
"""

import logging
import os
import socket

LOG = logging.getLogger(__name__)


class Notifier:
    """Sends notify datagrams to one socket address."""

    def __init__(self, address):
        if address.startswith('@'):
            address = '\0' + address[1:]
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    @classmethod
    def from_environ(cls, environ=None):
        """A Notifier for ``NOTIFY_SOCKET``, or None when it is unset."""
        environ = os.environ if environ is None else environ
        address = environ.get('NOTIFY_SOCKET')
        return cls(address) if address else None

    def send(self, **fields):
        """Send ``KEY=value`` lines in one datagram; False if it failed
        (systemd gone: logged, never raised)."""
        text = '\n'.join('%s=%s' % (key, str(value).replace('\n', ' '))
                         for key, value in fields.items())
        try:
            self._socket.sendto(text.encode(), self.address)
        except OSError as error:
            LOG.warning('Cannot notify systemd at %r: %s', self.address,
                        error)
            return False
        return True

    def close(self):
        self._socket.close()


def watchdog_period(environ=None, pid=None):
    """Seconds of ``WATCHDOG_USEC`` meant for this process, or None."""
    environ = os.environ if environ is None else environ
    usec = environ.get('WATCHDOG_USEC')
    owner = environ.get('WATCHDOG_PID')
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(usec) if usec else 0
    except ValueError:
        LOG.warning('Ignoring WATCHDOG_USEC=%r: not a number', usec)
        return None
    return usec / 1e6 if usec > 0 else None


class Watchdog:
    """Tells systemd the service is ready and alive, while it is.

    :param notifier: a ``Notifier``
    :param healthy: ``callable()`` -> True while the service turns over
    :param describe: ``callable()`` -> a one-line STATUS text
    :param backend: a ``vmha.concurrency`` backend (spawn, event)
    :param period: ``WATCHDOG_USEC`` in seconds, or None (no watchdog:
        only READY and STATUS are sent)
    """

    def __init__(self, notifier, healthy, describe, backend, period=None,
                 problems=lambda: []):
        self._notifier = notifier
        self._healthy = healthy
        self._describe = describe
        self._problems = problems
        self._backend = backend
        self._period = period
        # Twice per period, as sd_watchdog_enabled(3) advises; a STATUS
        # refresh every few seconds without a watchdog.
        self.interval = period / 2 if period else 5.0
        self.ready = False
        self.pings = 0
        self._stalled = False
        self._stop = None
        self._task = None

    def start(self):
        self._stop = self._backend.event()
        self._task = self._backend.spawn(self._loop, name='vmha-watchdog')

    def stop(self, timeout=5):
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            self._task.join(timeout)
            self._task = None
        self._notifier.send(STOPPING=1, STATUS='stopping')
        self._notifier.close()

    def _loop(self):
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval)

    def beat(self):
        """One look at the service: notify systemd if it is healthy."""
        if not self._healthy():
            why = '; '.join(self._problems()) or 'see the log'
            if not self._stalled:
                self._stalled = True
                LOG.error('Not feeding the systemd watchdog: %s', why)
            self._notifier.send(STATUS='unhealthy: %s' % why)
            return False
        if self._stalled:
            self._stalled = False
            LOG.warning('Healthy again; feeding the systemd watchdog')
        fields = {}
        if not self.ready:
            fields['READY'] = 1
        if self._period:
            fields['WATCHDOG'] = 1
        fields['STATUS'] = self._describe()
        if self._notifier.send(**fields):
            self.ready = True
            self.pings += 'WATCHDOG' in fields
        return True
