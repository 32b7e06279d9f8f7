"""A lifecycle action with the REAL heartbeat monitor and a simulated guest
on a real unix socket (``test_heartbeat_monitor``'s harness: fake libvirt,
fake clock for the monitor, the real ChannelHub).

The runner runs on a task of this run's backend, as an RPC worker does;
the test plays the monitor's loop (``step``) and the guest (it reads the
``action_notify`` lines and answers them).  What a user notices: what the
guest was sent, what the caller is told, what happened to the VM, and
that no heartbeat failure came of it.
"""

import time

from tests.conftest import BACKEND
from tests.conftest import backend_sleep
from tests.unit import test_heartbeat_monitor as harness
from vmha import concurrency
from vmha.manager import action_runner

SHUTOFF, RUNNING = 5, 1
# The harness's fixtures, used as they are there.
sockets = harness.sockets
make_host = harness.make_host
host = harness.host


def request(host, dom, action, respond, **kwargs):
    """``ActionRunner.request`` on a backend task while the monitor steps
    and the guest answers each ``action_notify`` with ``respond(msg)``
    (a (result, reason) pair, or None: no answer)."""
    runner = action_runner.ActionRunner(
        host.driver, host.monitor, host.journal, host.outbox, 'compute-1',
        concurrency.get(BACKEND), shutdown_timeout=1.0, call_timeout=5.0)
    guest = host.guest(dom)
    seen = set()
    box = []
    task = concurrency.get(BACKEND).spawn(lambda: box.append(runner.request(
        dom.UUIDString(), dom.name(), action, **kwargs)))
    deadline = time.monotonic() + 10
    while not box and time.monotonic() < deadline:
        host.monitor.step()
        guest.read()
        for message in guest.of_type('action_notify'):
            key = (message['action_id'], message['notification'],
                   message['phase'])
            if key in seen:
                continue
            seen.add(key)
            answer = respond(message)
            if answer is not None:
                result, reason = answer
                guest.send('action_response', action_id=key[0],
                           event=message['event'], notification=key[1],
                           phase=key[2], result=result,
                           **({'reason': reason} if reason else {}))
        backend_sleep(0.005)
    task.join(1)
    assert box, 'the action did not end'
    host.monitor.step()
    return box[0], guest.of_type('action_notify')


def test_a_stop_the_guest_rejects_is_never_done_and_says_why(host):
    dom = host.vm()
    host.register(dom)

    answer, sent = request(host, dom, 'stop', lambda message: (
        'reject', 'database resync in progress'))

    assert answer['verdict'] == 'rejected'
    assert answer['reason'] == 'database resync in progress'
    assert dom.state_value[0] == RUNNING and 'shutdown' not in dom.calls
    assert [(m['event'], m['notification'], m['phase']) for m in sent] == [
        ('stop', 'revocable', 'pre')]
    assert sent[0]['action_id'] == answer['action_id']
    assert host.state_of(dom) == 'enabled'
    assert host.failures() == []


def test_an_accepted_stop_notifies_holds_and_shuts_the_vm_down(host):
    dom = host.vm()
    host.register(dom)

    answer, sent = request(host, dom, 'stop',
                           lambda message: ('accept', 'ready'))

    assert answer['done'] and dom.state_value[0] == SHUTOFF
    assert [(m['notification'], m['phase'], m['timeout_secs'])
            for m in sent] == [('revocable', 'pre', 8),
                               ('irrevocable', 'pre', 8)]
    # The protocol: one action_id for every message of one action.
    assert {m['action_id'] for m in sent} == {answer['action_id']}
    assert host.failures() == []


def test_a_guest_that_never_answers_does_not_block_its_stop(host):
    dom = host.vm()
    host.register(dom, vote_secs=1, shutdown_notice_secs=1)

    def silent(message):
        host.clock.advance(2.0)  # the monitor's clock: the ask runs out
        return None

    answer, sent = request(host, dom, 'stop', silent)

    assert answer['done'] and dom.state_value[0] == SHUTOFF
    assert answer['phases'][0]['reason'] == 'no vote within 1s: accepted'
    assert host.failures() == []


def test_a_held_guest_is_not_challenged_and_never_fails(host):
    dom = host.vm()
    guest = host.register(dom)

    # The fake's events are not dispatched here: only the hold keeps the
    # saved VM from being challenged.
    answer, sent = request(host, dom, 'suspend',
                           lambda message: ('accept', None))

    assert answer['done']
    challenges = len(guest.of_type('challenge'))
    for _ in range(10):
        host.step(1.0)  # the guest answers nothing: it is saved
    host.settle()
    guest.read()
    assert len(guest.of_type('challenge')) == challenges
    assert host.failures() == []
