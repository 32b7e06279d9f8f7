"""What a monitor is, in one file: read this before writing one.

A monitor watches one aspect of the guests on this host (the guest
agent today; the guest heartbeat and live migrations next) and reports
what it finds through the journal.  ``Monitor`` is its base; the
guest-agent monitor (``guest_monitor.GuestAgentMonitor``) is the worked
example.

**Given** (constructor): the virt ``driver`` (domains, lifecycle, agent
calls), the ``journal`` (one transaction per step, through a
``journal.batch.WriteBatch``), the ``failure_monitor.Reporter`` (failure
notifications and episodes, shared with the event path and the audit:
``report_failure``, ``close_episode``, ``send``), the
``selection.Selector`` (is a domain monitored, is it disabled by an
operator), a ``vmha.concurrency.NativePool`` (every libvirt call runs
there: bounded, off the eventlet hub, off the dispatcher), the
concurrency ``backend`` (``spawn``) and a monotonic ``clock`` (tests pass
a fake one and an inline pool, and call ``step`` by hand).

**Provides**:

* the listener, ``__call__(event)``: registered on the driver, it runs
  on the dispatcher, so it only appends to the monitor's inbox and wakes
  the loop; never a libvirt call, a journal write or a log line there;
* a supervised loop: ``start()`` spawns it, ``stop()`` ends it, commits
  what is left and closes the pool.  Each turn it calls ``step(jobs)``
  with the pool's finished calls and sleeps at most ``wake_in()``
  seconds, never longer than ``supervision.HEARTBEAT``; ``step`` stamps
  the turnover, so /healthz and the systemd watchdog see a wedged loop
  (``check_name``, ``description``: a ``SupervisedLoop``).  A step that
  raises is logged and the loop goes on;
* ``status()``: one dict per VM for ``vmha-status`` and the metrics;
* ``pending_writes()``: writes the journal refused and the monitor
  keeps (the ``journal`` health check).

**How the service runs monitors** (``service.AgentService``): it builds
each one, registers it as a listener, lists it in ``monitors`` (started
after the audit, stopped before the driver's cleanup, in reverse order)
and hands the same list to ``health.HealthCheck`` as loops and writers:
a new monitor joins /healthz, the watchdog and ``vmha-status`` by being
in that list.

The monitor's rules belong in pure tables and functions beside it
(``guest_states``, ``evidence``); its pieces are shared: ``schedule``
(who is due when), ``actions`` (corrective actions within a budget),
``journal.batch`` (the writes of a step).
"""

import abc
import collections
import logging

from vmha import supervision

LOG = logging.getLogger(__name__)

# A monitor held back at start-up (``hold_first_listing``) lists the host
# after the agent's first audit, or after this many seconds at the latest.
FIRST_LISTING_BOUND = 10.0
BUSY_POLL = 0.05  # seconds: a full pool's next finished call comes soon


class Monitor(supervision.SupervisedLoop, metaclass=abc.ABCMeta):
    """The base of a monitor; see the module for the contract.

    A subclass sets ``check_name`` and ``description`` (health),
    ``log_name`` (how its log lines start), ``thread_name`` and
    ``lost_writes_hint`` (what becomes of changes not written at stop),
    builds ``self.writes`` (a ``WriteBatch``) and implements ``accepts``,
    ``load``, ``step``, ``wake_in`` and ``status``.
    """

    log_name = None
    thread_name = None
    lost_writes_hint = 'they are lost'

    def __init__(self, pool, backend, clock):
        self._pool = pool
        self._backend = backend
        self._clock = clock
        self._inbox = collections.deque()  # appended by the dispatcher
        self._running = False
        self._task = None
        self.writes = None
        self.init_turnover(clock)
        # True (set before start): the first listing of the host's
        # domains waits for ``release_listing`` (the agent calls it once
        # its start-up audit ran: on a host of thousands of domains that
        # audit goes first) or FIRST_LISTING_BOUND seconds.
        self.hold_first_listing = False
        self._listing_released = False

    def first_listing_at(self):
        """When ``load`` plans the first listing (monotonic)."""
        return self._clock() + (FIRST_LISTING_BOUND
                                if self.hold_first_listing else 0.0)

    def release_listing(self):
        """List the host's domains now (any thread)."""
        self._listing_released = True
        self._pool.wake()

    def take_release(self):
        """True once after ``release_listing`` (the loop's side)."""
        released, self._listing_released = self._listing_released, False
        return released

    # --- the listener (dispatcher side: append and wake, nothing else) -----

    def __call__(self, event):
        if self.accepts(event):
            self._inbox.append(event)
            self._pool.wake()

    @abc.abstractmethod
    def accepts(self, event):
        """Whether ``event`` goes to the inbox (no I/O: the dispatcher
        asks)."""

    # --- the supervised loop -----------------------------------------------

    @abc.abstractmethod
    def load(self):
        """Read what the last run left in the journal."""

    @abc.abstractmethod
    def step(self, jobs=()):
        """One turn: the inbox, the finished ``jobs``, what is due, then
        one commit.  Calls ``stamp_turnover()`` first."""

    @abc.abstractmethod
    def wake_in(self):
        """Seconds until the loop has something to do (at most
        ``supervision.HEARTBEAT``)."""

    def start(self):
        self.load()
        self._running = True
        self._task = self._backend.spawn(self._loop, name=self.thread_name)

    def stop(self, timeout=10):
        self._running = False
        self._pool.wake()
        if self._task is not None:
            self._task.join(timeout)
            self._task = None
        self._pool.close()
        self.writes.flush()
        if len(self.writes):
            LOG.error('%s stops with %d change(s) not written; %s',
                      self.log_name, len(self.writes),
                      self.lost_writes_hint)

    def _loop(self):
        jobs = []
        while self._running:
            try:
                self.step(jobs)
            except Exception:  # the monitor must outlive any one failure
                LOG.exception('%s step failed; going on', self.log_name)
            if not self._running:
                break
            jobs = self._pool.wait(self.wake_in())

    # --- what operators see ------------------------------------------------

    def pending_writes(self):
        """Changes kept because the journal refused them (0 otherwise)."""
        return self.writes.pending_writes()

    @abc.abstractmethod
    def status(self):
        """One dict per VM the monitor knows."""
