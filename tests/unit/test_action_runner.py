"""ActionRunner and the driver's lifecycle calls, on the fake libvirt.

What a user notices: what happened to the domain (the fake libvirt's
state and the calls it got), what the caller is told, and which
``instance.action`` notifications land in the outbox.  The heartbeat
guest is a double of the heartbeat monitor's three methods (``ask``,
``hold``, ``registration``): vmha's own component, not the thing under
test.  Calls run on the backend of this run (real native threads).
"""

import threading

import pytest

from tests.conftest import BACKEND
from tests.fixtures import fakelibvirt
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import action_runner
from vmha.virt import exception

Answer = action_runner.Answer
SHUTOFF, PAUSED, RUNNING = 5, 3, 1
REGISTRATION = {'vote_secs': 5, 'shutdown_notice_secs': 7,
                'suspend_notice_secs': 9, 'resume_notice_secs': 11,
                'restart_secs': 60}


class Heartbeat:
    """A double of ``HeartbeatMonitor``'s ask/hold/registration: each
    registered VM answers from ``answers[(uuid, event, notification,
    phase)]`` (default accept); ``gate`` (an Event) holds every ask until
    set."""

    def __init__(self):
        self.registered = {}
        self.answers = {}
        self.asked = []
        self.action_ids = []
        self.holds = []
        self.gate = None
        self.asking = threading.Event()

    def ask(self, uuid, event, notification, phase, timeout,
            action_id=None):
        self.asked.append((uuid, event, notification, phase, timeout))
        self.action_ids.append(action_id)
        self.asking.set()
        if self.gate is not None:
            self.gate.wait(10)
        if uuid not in self.registered:
            return Answer('accept', 'no heartbeat guest')
        return self.answers.get((uuid, event, notification, phase),
                                Answer('accept', None))

    def hold(self, uuid, why, seconds):
        self.holds.append((uuid, why, seconds))

    def registration(self, uuid):
        return self.registered.get(uuid)


class Host:
    def __init__(self, path, **options):
        self.driver = virt.make_driver()
        self.fake = self.driver.fake
        self.driver.init_host()
        self.journal = db.Journal(str(path))
        self.outbox = outbox_lib.Outbox(self.journal)
        self.heartbeat = Heartbeat()
        options.setdefault('shutdown_timeout', 5.0)
        options.setdefault('call_timeout', 5.0)
        self.runner = action_runner.ActionRunner(
            self.driver, self.heartbeat, self.journal, self.outbox,
            'compute-1', concurrency.get(BACKEND), **options)

    def vm(self, name='vm-1', guest=True):
        dom = self.fake.add_domain(name)
        if guest:
            self.heartbeat.registered[dom.UUIDString()] = REGISTRATION
        return dom

    def request(self, dom, action, **kwargs):
        return self.runner.request(dom.UUIDString(), dom.name(), action,
                                   **kwargs)

    def reject(self, dom, event, reason):
        self.heartbeat.answers[(dom.UUIDString(), event, 'revocable',
                                'pre')] = Answer('reject', reason)

    def notifications(self):
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(1000)
                if m.event_type == 'instance.action']

    def close(self):
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def host(tmp_path):
    host = Host(tmp_path / 'vmha.sqlite')
    yield host
    host.close()


def test_a_stop_nobody_objects_to_shuts_the_guest_down(host):
    dom = host.vm()

    answer = host.request(dom, 'stop')

    assert (answer['verdict'], answer['done']) == ('accepted', True)
    assert dom.state_value[0] == SHUTOFF
    assert dom.calls == ['shutdown']  # graceful: no destroy needed
    assert answer['reason'].startswith('shut down by the guest')
    assert [p['result'] for p in answer['phases']] == [
        'accepted', 'done', 'done', 'skipped']


def test_a_rejected_stop_never_calls_libvirt(host):
    dom = host.vm()
    host.reject(dom, 'stop', 'database resync in progress')

    answer = host.request(dom, 'stop')

    assert answer['verdict'] == 'rejected'
    assert answer['reason'] == 'database resync in progress'
    assert answer['done'] is False
    assert dom.calls == [] and dom.state_value[0] == RUNNING
    assert host.heartbeat.holds == []
    [vote] = host.notifications()
    assert (vote['phase'], vote['result'], vote['reason']) == (
        'vote', 'rejected', 'database resync in progress')


def test_a_vm_without_heartbeat_guest_is_acted_on(host):
    dom = host.vm(guest=False)

    answer = host.request(dom, 'pause')

    assert answer['done'] and dom.state_value[0] == PAUSED
    assert answer['phases'][0]['reason'] == 'no heartbeat guest'


def test_one_notification_per_phase_with_one_action_id(host):
    dom = host.vm()

    answer = host.request(dom, 'reboot', requested_by='user=alice')

    sent = host.notifications()
    assert [(n['phase'], n['result']) for n in sent] == [
        ('vote', 'accepted'), ('pre', 'done'), ('action', 'done'),
        ('post', 'skipped')]
    assert {n['action_id'] for n in sent} == {answer['action_id']}
    assert {(n['uuid'], n['name'], n['action'], n['event'],
             n['requested_by']) for n in sent} == {
        (dom.UUIDString(), 'vm-1', 'reboot', 'reboot', 'user=alice')}
    assert dom.reboots == 1
    # The guest sees one action id for the vote and the notice.
    assert host.heartbeat.action_ids == [answer['action_id']] * 2


def test_stop_holds_the_heartbeat_before_the_guest_goes_down(host):
    dom = host.vm()

    host.request(dom, 'stop')

    [(uuid, why, seconds)] = host.heartbeat.holds
    assert uuid == dom.UUIDString() and 'stop' in why
    # The graceful shutdown, the call's bound and the notice at least.
    assert seconds >= 5.0 + 5.0 + 7


def test_a_guest_ignoring_the_power_button_is_destroyed_after_the_bound(
        tmp_path):
    host = Host(tmp_path / 'j.sqlite', shutdown_timeout=0.2)
    try:
        dom = host.vm()
        dom.ignores_acpi = True

        answer = host.request(dom, 'stop')

        assert answer['done'] and dom.state_value[0] == SHUTOFF
        assert dom.calls == ['shutdown', 'destroy']
        assert 'did not shut down within 0.2s' in answer['reason']
    finally:
        host.close()


def test_suspend_then_resume_restores_the_saved_memory(host):
    dom = host.vm()

    suspended = host.request(dom, 'suspend')
    assert suspended['done'] and dom.managed_save_image
    assert dom.state_value == (SHUTOFF, 5)  # SHUTOFF_SAVED

    resumed = host.request(dom, 'resume')
    assert resumed['done'] and dom.state_value == (RUNNING, 3)  # RESTORED
    # resume has a post-notification only.
    uuid = dom.UUIDString()
    assert host.heartbeat.asked[-1] == (uuid, 'resume', 'irrevocable',
                                        'post', 11.0)


def test_resume_of_a_vm_never_suspended_fails_and_says_why(host):
    dom = host.vm()
    dom.destroy()

    answer = host.request(dom, 'resume')

    assert not answer['done']
    assert answer['phases'][-1]['result'] == 'failed'
    assert 'no saved memory' in answer['reason']
    sent = host.notifications()
    assert sent[-1]['result'] == 'failed'


def test_pause_unpause(host):
    dom = host.vm()

    host.request(dom, 'pause')
    assert dom.state_value[0] == PAUSED
    answer = host.request(dom, 'unpause')
    assert answer['done'] and dom.state_value[0] == RUNNING
    assert dom.calls == ['suspend', 'resume']


def test_libvirt_errors_are_a_failed_action_naming_the_cause(host):
    dom = host.vm()
    dom.destroy()

    answer = host.request(dom, 'reboot')

    assert not answer['done']
    assert 'domain is not running' in answer['reason']


def test_a_domain_gone_meanwhile_is_a_failed_action(host):
    dom = host.vm()
    del host.fake.domains[dom.UUIDString()]

    answer = host.request(dom, 'pause')

    assert not answer['done'] and 'not found' in answer['reason'].lower()


def test_resize_begin_votes_and_notifies_and_leaves_the_resize_to_nova(host):
    dom = host.vm()

    answer = host.request(dom, 'resize-begin')

    assert (answer['verdict'], answer['done']) == ('accepted', False)
    assert dom.calls == []
    assert [p['phase'] for p in answer['phases']] == ['vote', 'pre',
                                                       'action']


def test_vote_only_leaves_the_stop_to_the_caller(host):
    dom = host.vm()

    answer = host.request(dom, 'stop', vote_only=True)

    assert answer['verdict'] == 'accepted' and not answer['done']
    assert dom.calls == [] and dom.state_value[0] == RUNNING
    assert len(host.heartbeat.holds) == 1  # the caller stops it next


def test_unknown_action_is_refused_before_anything_happens(host):
    dom = host.vm()
    with pytest.raises(action_runner.UnknownAction, match='explode'):
        host.request(dom, 'explode')
    assert host.heartbeat.asked == [] and host.notifications() == []


def test_one_action_per_vm_at_a_time(host, wait_for):
    dom = host.vm()
    other = host.vm('vm-2')
    host.heartbeat.gate = concurrency.get(BACKEND).event()
    backend = concurrency.get(BACKEND)
    first = {}

    def run_first():
        first['answer'] = host.request(dom, 'stop')

    task = backend.spawn(run_first)
    wait_for(host.heartbeat.asking.is_set, what='the first vote')
    try:
        with pytest.raises(action_runner.ActionInProgress,
                           match=r'an action \(stop, id [0-9a-f]{32}\) is '
                                 r'already running on vm-1'):
            host.request(dom, 'reboot')
        assert host.runner.running()[dom.UUIDString()][0] == 'stop'
    finally:
        host.heartbeat.gate.set()
    task.join(10)
    assert first['answer']['done']
    assert dom.reboots == 0
    # Another VM is never held up by it, and the VM is free again.
    assert host.request(other, 'pause')['done']
    assert host.request(dom, 'resume')['phases'][-1]['result'] == 'failed'
    assert host.runner.running() == {}


def test_a_hung_libvirt_call_is_given_up_on_after_its_bound(tmp_path):
    host = Host(tmp_path / 'j.sqlite', call_timeout=1.0)
    release = threading.Event()
    original = host.driver.pause_instance

    def hung(uuid):  # as a SIGSTOPped QEMU: libvirt waits with it
        release.wait(10)
        return original(uuid)

    host.driver.pause_instance = hung
    try:
        dom = host.vm()

        answer = host.request(dom, 'pause')

        assert not answer['done']
        assert 'libvirt did not answer within 1s' in answer['reason']
        assert host.notifications()[-1]['result'] == 'failed'
        # The VM takes a new request; the call finishes in the background.
        assert host.runner.running() == {}
    finally:
        release.set()
        host.close()


def test_no_more_than_max_concurrent_calls_hang_in_libvirt(tmp_path):
    host = Host(tmp_path / 'j.sqlite', call_timeout=1.0, max_concurrent=1)
    release = threading.Event()
    host.driver.pause_instance = lambda uuid: release.wait(10)
    try:
        first, second = host.vm('vm-1'), host.vm('vm-2')
        assert not host.request(first, 'pause')['done']  # still hangs

        answer = host.request(second, 'pause')

        assert 'max_concurrent' in answer['reason']
        assert second.calls == []
    finally:
        release.set()
        host.close()


def test_a_journal_that_refuses_writes_does_not_stop_the_action(
        host, caplog, monkeypatch):
    dom = host.vm()

    def refuse():
        raise db.JournalError('disk full')
    monkeypatch.setattr(host.journal, 'transaction', refuse)

    answer = host.request(dom, 'pause')

    assert answer['done'] and dom.state_value[0] == PAUSED
    assert 'instance.action notification of %s not written' % \
        dom.UUIDString() in caplog.text


def test_no_heartbeat_accepts_everything():
    nobody = action_runner.NoHeartbeat()
    assert nobody.ask('u', 'stop', 'revocable', 'pre', 8) == (
        'accept', 'no heartbeat guest')
    assert nobody.registration('u') is None


def test_driver_stop_of_a_vm_already_off(host):
    dom = host.vm()
    dom.destroy()
    assert host.driver.stop_instance(dom.UUIDString(), 1) == \
        'already shut off'


def test_driver_stop_with_no_grace_destroys_at_once(host):
    dom = host.vm()
    assert host.driver.stop_instance(dom.UUIDString(), 0).startswith(
        'destroyed')
    assert dom.calls == ['destroy']


def test_driver_unknown_domain_raises_domain_not_found(host):
    with pytest.raises(exception.DomainNotFound):
        host.driver.reboot_instance('00000000-0000-0000-0000-000000000000')


def test_fake_refuses_actions_on_a_stopped_domain():
    # The fake behaves as libvirt does, or the tests above prove nothing.
    fake = fakelibvirt.FakeLibvirt()
    dom = fake.add_domain('x', state=SHUTOFF)
    with pytest.raises(fakelibvirt.libvirtError):
        dom.suspend()


def test_a_broken_heartbeat_never_keeps_an_operator_from_acting(
        host, caplog):
    dom = host.vm()

    def broken(*args):
        raise RuntimeError('heartbeat bug')
    host.heartbeat.ask = broken
    host.heartbeat.hold = broken
    host.heartbeat.registration = broken

    answer = host.request(dom, 'stop')

    assert answer['done'] and dom.state_value[0] == SHUTOFF
    assert 'counted as no answer' in caplog.text
    assert 'could not be held' in caplog.text


def test_a_transient_domain_gone_after_its_shutdown_is_stopped(host):
    dom = host.vm()
    fake_shutdown = dom.shutdown

    def shutdown_and_vanish():  # libvirt forgets a transient domain
        fake_shutdown()
        del host.fake.domains[dom.UUIDString()]
    dom.shutdown = shutdown_and_vanish

    answer = host.request(dom, 'stop')

    assert answer['done']
    assert answer['reason'].startswith('shut down by the guest')
