"""Runs the lifecycle actions callers ask for (``request_action``).

``lifecycle_actions`` says what an action's flow is; this module runs
one for a VM with the real effects:

* the guest's vote and notices go through the heartbeat monitor's
  ``ask`` (blocking: the caller is an RPC worker, a greenthread or a
  thread, never a monitor's loop), and ``hold`` keeps the heartbeat from
  calling the guest lost while an action that stops its answers runs;
* the action itself is a libvirt call on a native thread of its own, at
  most ``max_concurrent`` at once, waited for at most ``call_timeout``
  seconds (plus ``shutdown_timeout`` for a stop): a SIGSTOPped QEMU
  blocks libvirt's calls on it, and the caller must hear so instead of
  waiting with it;
* each phase is an ``instance.action`` notification in the outbox;
* one action per VM at a time: a second request while one runs is
  refused (``ActionInProgress``), not queued behind a vote that may take
  seconds.
"""

import collections
import logging
import time
import uuid as uuid_lib

from vmha.manager import lifecycle_actions
from vmha.objects import action as action_objects

LOG = logging.getLogger(__name__)

#: Seconds between two looks at an action's libvirt call, or at a
#: guest's registration.
POLL = 0.05

UnknownAction = lifecycle_actions.UnknownAction


class ActionInProgress(Exception):
    """Another action runs on the VM (or every action slot is taken)."""


Answer = collections.namedtuple('Answer', ['result', 'reason'])


class NoHeartbeat:
    """The heartbeat of an agent that has none (``[heartbeat]`` off, or
    not built): no guest is registered, so every vote accepts at once and
    nothing is held."""

    def ask(self, uuid, event, notification, phase, timeout,
            action_id=None):
        return Answer('accept', 'no heartbeat guest')

    def hold(self, uuid, why, seconds):
        pass

    def registration(self, uuid):
        return None


class ActionRunner:
    """Runs one lifecycle action at a time per VM.

    :param driver: the virt driver (``stop_instance``, ...)
    :param heartbeat: the heartbeat monitor (``ask``, ``hold``,
        ``registration``), or None (``NoHeartbeat``); every ask of one
        action carries its ``action_id``
    :param journal: the ``Journal`` the outbox is in
    :param outbox: the ``Outbox`` (``instance.action`` notifications), or
        None for none
    :param host: this host's name (the notifications' publisher)
    :param backend: the ``vmha.concurrency`` backend
    :param shutdown_timeout: ``[actions] shutdown_timeout``
    :param call_timeout: ``[actions] call_timeout``
    :param max_concurrent: ``[actions] max_concurrent``
    :param clock: monotonic seconds
    """

    def __init__(self, driver, heartbeat, journal, outbox, host, backend,
                 shutdown_timeout=60.0, call_timeout=30.0, max_concurrent=4,
                 clock=time.monotonic):
        self._driver = driver
        self.heartbeat = heartbeat or NoHeartbeat()
        self._journal = journal
        self._outbox = outbox
        self._host = host
        self._backend = backend
        self.shutdown_timeout = shutdown_timeout
        self.call_timeout = call_timeout
        self._max_concurrent = max_concurrent
        self._clock = clock
        self._lock = backend.native_lock()
        self._running = {}  # uuid -> (action, action_id)
        self._calls_in_flight = 0  # libvirt calls not yet returned
        # (action, outcome) -> requests that ended so (the metrics):
        # outcome done, accepted (the caller acts), rejected or failed.
        self.outcomes_total = collections.Counter()

    @classmethod
    def from_conf(cls, conf, driver, heartbeat, journal, outbox, backend):
        return cls(driver, heartbeat, journal, outbox, conf.host, backend,
                   shutdown_timeout=conf.actions.shutdown_timeout,
                   call_timeout=conf.actions.call_timeout,
                   max_concurrent=conf.actions.max_concurrent)

    def running(self):
        """{uuid: (action, action_id)} of the actions running now."""
        with self._lock:
            return dict(self._running)

    def request(self, uuid, name, action, vote_only=False,
                requested_by=None):
        """Run ``action`` on the VM ``uuid`` (called ``name``) and return
        what ``request_action`` answers: ``{instance, action, action_id,
        verdict, reason, done, phases}``.

        Raises ``UnknownAction`` (before anything happens) and
        ``ActionInProgress``.
        """
        row = lifecycle_actions.row(action)
        action_id = uuid_lib.uuid4().hex
        with self._lock:
            if uuid in self._running:
                other, other_id = self._running[uuid]
                raise ActionInProgress(
                    'an action (%s, id %s) is already running on %s; '
                    'ask again once it finished' % (other, other_id, name))
            self._running[uuid] = (row.action, action_id)
        try:
            LOG.info('%s of %s (%s) requested by %s%s: action id %s',
                     row.action, name, uuid, requested_by or 'anonymous',
                     ' (vote only)' if vote_only else '', action_id)
            outcome = self._run(row, uuid, name, action_id, vote_only,
                                requested_by)
        finally:
            with self._lock:
                del self._running[uuid]
        last = outcome.phases[-1].result
        if outcome.verdict == lifecycle_actions.REJECTED:
            log, what, kind = LOG.warning, 'rejected by the guest', 'rejected'
        elif last == lifecycle_actions.FAILED:
            log, what, kind = LOG.warning, 'failed', 'failed'
        elif outcome.done:
            log, what, kind = LOG.info, 'done', 'done'
        else:
            log, what, kind = LOG.info, 'accepted; the caller acts', \
                'accepted'
        self.outcomes_total[(row.action, kind)] += 1
        log('%s of %s (%s) %s: %s', row.action, name, uuid, what,
            outcome.reason)
        return {
            'instance': uuid, 'name': name, 'action': row.action,
            'action_id': action_id, 'verdict': outcome.verdict,
            'reason': outcome.reason, 'done': outcome.done,
            'phases': [phase._asdict() for phase in outcome.phases],
        }

    def _run(self, row, uuid, name, action_id, vote_only, requested_by):
        heartbeat = self.heartbeat
        try:
            registration = heartbeat.registration(uuid)
        except Exception:
            LOG.exception('%s of %s (%s): the heartbeat monitor failed to '
                          'say whether a guest is registered; going on '
                          'with the default timeouts', row.action, name,
                          uuid)
            registration = None

        def on_phase(phase):
            LOG.info('%s of %s (%s), %s phase: %s (%s, %d ms)', row.action,
                     name, uuid, phase.phase, phase.result, phase.reason,
                     phase.took_ms)
            self._notify(action_objects.action_notification(
                self._host, uuid, name, action_id, row.action, phase.event,
                phase.phase, phase.result, phase.reason, phase.took_ms,
                requested_by=requested_by))

        def ask(event, notification, phase, timeout):
            try:
                return heartbeat.ask(uuid, event, notification, phase,
                                     timeout, action_id=action_id)
            except Exception:
                # As a guest that did not answer: a vote accepts, a notice
                # lets the action go on.  A broken heartbeat must not keep
                # an operator from stopping a VM.
                LOG.exception('%s of %s (%s): asking the guest (%s %s) '
                              'failed; counted as no answer', row.action,
                              name, uuid, notification, phase)
                return Answer('timeout', None)

        def hold(why, seconds):
            try:
                heartbeat.hold(uuid, why, seconds)
            except Exception:
                LOG.exception('%s of %s (%s): the heartbeat could not be '
                              'held; a heartbeat loss may be reported while '
                              'the action runs', row.action, name, uuid)

        effects = lifecycle_actions.Effects(
            ask=ask, hold=hold,
            act=lambda operation: self._act(uuid, name, operation),
            wait_registered=lambda seconds: self._wait_registered(
                uuid, seconds),
            clock=self._clock, sleep=self._backend.sleep,
            on_phase=on_phase)
        return lifecycle_actions.run_flow(
            row, registration, effects, vote_only=vote_only,
            call_seconds=self._call_bound(row.operation))

    def _call_bound(self, operation):
        if operation == 'stop':
            return self.shutdown_timeout + self.call_timeout
        return self.call_timeout

    def _act(self, uuid, name, operation):
        """The driver's ``<operation>_instance(uuid)`` on a native thread,
        waited for at most its bound.  Raises ``ActionFailed``."""
        function = getattr(self._driver, '%s_instance' % operation)
        args = (uuid, self.shutdown_timeout) if operation == 'stop' \
            else (uuid,)
        bound = self._call_bound(operation)
        with self._lock:
            if self._calls_in_flight >= self._max_concurrent:
                raise lifecycle_actions.ActionFailed(
                    '%d libvirt calls of actions are in flight already '
                    '([actions] max_concurrent): %s of %s not attempted'
                    % (self._calls_in_flight, operation, name))
            self._calls_in_flight += 1
        call = _Call(function, args)

        def run():
            try:
                call.run()
            finally:
                with self._lock:
                    self._calls_in_flight -= 1

        self._backend.native_thread(run, 'vmha-action-%s' % operation)
        deadline = self._clock() + bound
        while not call.done:
            if self._clock() >= deadline:
                LOG.warning('%s of %s (%s): libvirt did not answer within '
                            '%gs; the call goes on in the background',
                            operation, name, uuid, bound)
                raise lifecycle_actions.ActionFailed(
                    'libvirt did not answer within %gs (is QEMU stopped?); '
                    'the %s may still happen' % (bound, operation))
            self._backend.sleep(POLL)
        if call.error is not None:
            raise lifecycle_actions.ActionFailed(
                '%s failed: %s' % (operation, call.error)) from call.error
        return call.result

    def _wait_registered(self, uuid, seconds):
        deadline = self._clock() + seconds
        while self.heartbeat.registration(uuid) is None:
            if self._clock() >= deadline:
                return False
            self._backend.sleep(min(1.0, POLL * 10))
        return True

    def _notify(self, notification):
        if self._outbox is None:
            return
        try:
            with self._journal.transaction() as tx:
                self._outbox.add(tx, notification.to_message())
        except Exception:
            # The action goes on: losing its notification is less harm
            # than leaving a VM half-stopped.
            LOG.exception('%s notification of %s not written to the '
                          'journal; it is lost',
                          notification.event_type.to_event_type(),
                          notification.payload.uuid)


class _Call:
    """One blocking call on a native thread; ``done`` once it returned."""

    def __init__(self, function, args):
        self._function = function
        self._args = args
        self.result = None
        self.error = None
        self.done = False

    def run(self):
        try:
            self.result = self._function(*self._args)
        except Exception as error:  # handed to the waiting caller
            self.error = error
        self.done = True
