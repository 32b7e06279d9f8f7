"""Operator choices leave a trace and follow their domain (fake libvirt,
real SQLite journal).

What a user notices: each change is an ``instance.monitoring``
notification in the outbox saying who asked; the choice is in the
domain's metadata, so the agent of another host adopts it; it is dropped
when the domain is gone from this host, and only then.

Regression (issue 11 item 7): ``set_monitoring`` left only a log line,
and its row outlived the domain, so a VM defined again later with the
same UUID was silently unmonitored.
"""

import logging

import pytest

from tests.fixtures import fakelibvirt
from tests.fixtures import virt
from tests.unit.test_journal_failures import LockHolder
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.manager import failure_monitor
from vmha.manager import overrides
from vmha.manager import selection
from vmha.manager import state

UNDEFINED, STOPPED = 1, 5  # libvirt lifecycle event codes
SHUTOFF_FAILED = (5, 6)


class Agent:
    """The selector, the override keeper and a journal, on one fake
    libvirt (two agents on one fake: a source and a destination)."""

    def __init__(self, path, fake=None, host='compute-1', events=False,
                 busy_timeout=5.0):
        self.driver = virt.make_driver(fake=fake)
        self.fake = self.driver.fake
        self.clock = self.driver.clock
        self.journal = db.Journal(path, busy_timeout=busy_timeout,
                                  clock=self.clock)
        self.outbox = outbox_lib.Outbox(self.journal)
        self.states = state.StateStore(self.journal)
        self.store = overrides.OverrideStore(self.journal, self.outbox, host)
        self.selector = selection.Selector(self.driver)
        if events:  # the failure monitor, wired as the agent wires it
            monitor = failure_monitor.FailureMonitor(
                self.driver, self.journal, failure_monitor.Reporter(
                    self.outbox, self.states, host, clock=self.clock),
                self.selector, 'qemu:///system', clock=self.clock,
                store=self.states, outbox=self.outbox)
            self.driver.register_event_listener(monitor)
            self.driver.register_turnover_callback(monitor.retry_pending)
        self.keeper = overrides.OverrideKeeper(
            self.driver, self.store, self.selector, state_store=self.states,
            wall=lambda: 1790000000.0, clock=self.clock)
        self.driver.register_event_listener(self.keeper)
        self.driver.register_turnover_callback(self.keeper.retry_adoptions)
        self.driver.init_host()
        self.keeper.load()

    def dispatch(self, seconds=0.0):
        self.clock.advance(seconds)
        self.driver.host.handler.dispatch_pending()

    def failures(self):
        return [(m.payload['vmha_object.data']['name'],
                 m.payload['vmha_object.data']['vir_domain_event'])
                for m in self.outbox.pending(1000)
                if m.event_type == 'instance.failure']

    def notifications(self):
        return [m.payload['vmha_object.data']
                for m in self.outbox.pending(1000)
                if m.event_type == 'instance.monitoring']

    def undefine(self, dom):
        del self.fake.domains[dom.UUIDString()]
        self.fake.fire_lifecycle(dom, UNDEFINED, 0)
        self.driver.host.handler.dispatch_pending()

    def close(self):
        self.driver.cleanup()
        self.journal.close()


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'))
    yield agent
    agent.close()


def test_a_change_is_a_notification_in_the_same_journal(agent):
    dom = agent.fake.add_domain('web-1')
    uuid = dom.UUIDString()

    agent.keeper.change(uuid, 'web-1', False, 'maintenance',
                        'user=alice project=ops')
    agent.keeper.change(uuid, 'web-1', None, None, 'user=bob')

    first, second = agent.notifications()
    assert (first['enabled'], first['previous'], first['reason'],
            first['requested_by'], first['source']) == (
        False, None, 'maintenance', 'user=alice project=ops', 'rpc')
    assert (second['enabled'], second['previous'],
            second['requested_by']) == (None, False, 'user=bob')
    assert agent.store.all() == {}


def test_requested_by_is_stored_with_the_choice(agent):
    dom = agent.fake.add_domain('web-1')
    agent.keeper.change(dom.UUIDString(), 'web-1', True, None,
                        'user=alice')
    assert agent.store.all()[dom.UUIDString()].requested_by == 'user=alice'


def test_a_failed_write_leaves_no_row_and_no_notification(agent):
    dom = agent.fake.add_domain('web-1')
    agent.outbox.add = lambda tx, message: 1 / 0  # the journal fails
    with pytest.raises(ZeroDivisionError):
        agent.keeper.change(dom.UUIDString(), 'web-1', False, None, 'x')
    assert agent.store.all() == {}


@pytest.mark.parametrize('state, persistent, flags', [
    (fakelibvirt.VIR_DOMAIN_RUNNING, True, 3),  # live and config
    (fakelibvirt.VIR_DOMAIN_SHUTOFF, True, 2),  # config only
    (fakelibvirt.VIR_DOMAIN_RUNNING, False, 1),  # transient: live only
])
def test_the_choice_is_written_into_the_domain_metadata(agent, state,
                                                        persistent, flags):
    dom = agent.fake.add_domain('web-1', state=state)
    dom.persistent = persistent
    dom.metadata_elements[selection.NAMESPACE] = (
        '<vmha:monitoring xmlns:vmha="%s" enabled="true">'
        '<vmha:guest-agent interval="10"/></vmha:monitoring>'
        % selection.NAMESPACE)

    agent.keeper.change(dom.UUIDString(), 'web-1', False, 'maintenance',
                        'user=alice')

    assert dom.metadata_writes == [(selection.NAMESPACE, 'vmha', flags)]
    written = dom.metadata_elements[selection.NAMESPACE]
    # What else the element said is kept (one element per namespace).
    assert selection.metadata_choice(written) is True
    assert selection.guest_agent_settings(written) == {'interval': 10.0}
    assert overrides.metadata_override(written) == overrides.Override(
        False, 'maintenance', 1790000000.0, 'user=alice')

    agent.keeper.change(dom.UUIDString(), 'web-1', None, None, 'user=bob')
    written = dom.metadata_elements[selection.NAMESPACE]
    assert overrides.metadata_override(written) is None
    assert selection.guest_agent_settings(written) == {'interval': 10.0}


def test_clearing_the_only_content_removes_the_element(agent):
    dom = agent.fake.add_domain('web-1')
    agent.keeper.change(dom.UUIDString(), 'web-1', False, None, 'x')
    agent.keeper.change(dom.UUIDString(), 'web-1', None, None, 'x')
    assert selection.NAMESPACE not in dom.metadata_elements


def test_a_metadata_write_failure_still_applies_the_journal_choice(agent,
                                                                   caplog):
    dom = agent.fake.add_domain('web-1')
    dom.metadata_error = fakelibvirt.libvirtError('read-only domain')

    value = agent.keeper.change(dom.UUIDString(), 'web-1', False, None, 'x')

    assert value.enabled is False
    assert agent.selector.is_monitored(dom.UUIDString(), 'web-1') is False
    assert agent.store.all()[dom.UUIDString()].enabled is False
    assert 'will not follow the domain' in caplog.text
    assert dom.UUIDString() in caplog.text


def test_an_undefined_domain_loses_its_choice_and_its_state_row(agent):
    dom = agent.fake.add_domain('web-1')
    uuid = dom.UUIDString()
    agent.keeper.change(uuid, 'web-1', False, 'maintenance', 'x')
    with agent.journal.transaction() as tx:  # events unseen: "running"
        agent.states.record(tx, uuid, 'web-1', 'running', 'RUNNING_BOOTED',
                            1.0)

    agent.undefine(dom)

    assert agent.store.all() == {}
    assert agent.states.all() == {}
    assert agent.notifications()[-1]['source'] == 'undefined'
    assert agent.notifications()[-1]['enabled'] is None
    assert agent.notifications()[-1]['previous'] is False
    # Defined again with the same UUID: the rules decide again.
    agent.fake.add_domain('web-1', uuid=uuid)
    agent.selector.forget(uuid)
    assert agent.selector.is_monitored(uuid, 'web-1') is True


def test_undefined_but_still_running_keeps_its_choice(agent):
    """A persistent domain undefined while it runs is transient now:
    still here, still the operator's choice."""
    dom = agent.fake.add_domain('web-1')
    agent.keeper.change(dom.UUIDString(), 'web-1', False, None, 'x')
    agent.fake.fire_lifecycle(dom, UNDEFINED, 0)  # but still defined
    agent.driver.host.handler.dispatch_pending()
    assert dom.UUIDString() in agent.store.all()


def test_a_listing_drops_only_domains_libvirt_says_are_gone(agent, caplog):
    here = agent.fake.add_domain('here')
    gone = agent.fake.add_domain('gone')
    unsure = agent.fake.add_domain('unsure')
    for dom in (here, gone, unsure):
        agent.keeper.change(dom.UUIDString(), dom.name(), False, None, 'x')
    del agent.fake.domains[gone.UUIDString()]

    connection = agent.fake.connection
    lookup = connection.lookupByUUIDString

    def flaky(uuid):
        if uuid == unsure.UUIDString():
            raise fakelibvirt.libvirtError('connection reset')
        return lookup(uuid)
    connection.lookupByUUIDString = flaky
    caplog.set_level(logging.INFO)

    agent.selector.listed([agent.driver.get_instance_info(here.UUIDString())])

    assert set(agent.store.all()) == {here.UUIDString(),
                                      unsure.UUIDString()}
    assert agent.notifications()[-1]['source'] == 'vanished'
    assert 'its operator choice is kept' in caplog.text


def test_a_destination_agent_adopts_the_choice_from_the_metadata(tmp_path):
    source = Agent(str(tmp_path / 'source.sqlite'))
    destination = Agent(str(tmp_path / 'destination.sqlite'),
                        fake=source.fake, host='compute-2')
    try:
        dom = source.fake.add_domain('web-1')
        uuid = dom.UUIDString()
        source.keeper.change(uuid, 'web-1', False, 'maintenance',
                             'user=alice')

        assert destination.selector.is_monitored(uuid, 'web-1') is False
        assert destination.store.all()[uuid] == overrides.Override(
            False, 'maintenance', 1790000000.0, 'user=alice')
        [adopted] = destination.notifications()
        assert (adopted['source'], adopted['requested_by'],
                adopted['host']) == ('metadata', 'user=alice', 'compute-2')
        # Read again: adopted once.
        destination.selector.forget(uuid)
        destination.selector.is_monitored(uuid, 'web-1')
        assert len(destination.notifications()) == 1
    finally:
        destination.close()
        source.close()


def _migrated_in_then_died_while_locked(tmp_path, enabled):
    """A domain that came by live migration with an operator choice in
    its metadata dies here as its first event arrives, while the journal
    is locked."""
    path = str(tmp_path / 'vmha.sqlite')
    agent = Agent(path, events=True, busy_timeout=0.05)
    dom = agent.fake.add_domain('web-1')
    dom.metadata_elements[selection.NAMESPACE] = (
        '<monitoring><override enabled="%s" reason="maintenance" '
        'by="user=alice" at="2026-12-01T10:00:00+00:00"/></monitoring>'
        % enabled)
    lock = LockHolder(path)
    dom.state_value = SHUTOFF_FAILED
    agent.fake.fire_lifecycle(dom, STOPPED, 5)  # QEMU died
    agent.dispatch(20.0)  # past the STOPPED hold-back
    agent.dispatch(5.0)  # retries, still locked
    return agent, dom, lock


def test_a_death_while_an_adopted_choice_cannot_be_written_is_kept(
        tmp_path, caplog):
    """Regression: the JournalError of recording the adopted choice
    escaped through the selector's lookup, so the failure monitor
    dropped the event: the VM's death was never reported."""
    agent, dom, lock = _migrated_in_then_died_while_locked(tmp_path,
                                                           'true')
    try:
        assert agent.failures() == []
        lock.release()
        agent.dispatch(5.0)
        assert agent.failures() == [('web-1', 'STOPPED_FAILED')]
        assert agent.store.all()[dom.UUIDString()].enabled is True
        [adopted] = agent.notifications()
        assert adopted['source'] == 'metadata'
        # One line for the domain, however often the adoption is retried.
        assert caplog.text.count(
            'web-1 (%s): cannot record the operator choice'
            % dom.UUIDString()) == 1
    finally:
        agent.close()


def test_a_choice_disabled_in_the_metadata_holds_while_unwritable(tmp_path):
    """No false failure: a VM its operator disabled at the source is not
    reported here because the journal could not record the choice."""
    agent, dom, lock = _migrated_in_then_died_while_locked(tmp_path,
                                                           'false')
    try:
        assert agent.selector.disabled(dom.UUIDString())
        lock.release()
        agent.dispatch(5.0)
        assert agent.failures() == []
        assert agent.store.all()[dom.UUIDString()].enabled is False
        assert len(agent.notifications()) == 1
    finally:
        agent.close()


def test_an_operator_change_wins_over_an_adoption_still_waiting(tmp_path):
    """An operator who clears the choice before the journal recorded the
    one adopted from the metadata is not overruled by the retry."""
    agent, dom, lock = _migrated_in_then_died_while_locked(tmp_path,
                                                           'false')
    try:
        lock.release()
        agent.keeper.change(dom.UUIDString(), 'web-1', None, None,
                            'user=bob')
        agent.dispatch(5.0)  # the adoption's retry is due
        assert agent.store.all() == {}
        assert not agent.selector.disabled(dom.UUIDString())
    finally:
        agent.close()


def test_the_journal_choice_wins_over_the_metadata(agent):
    dom = agent.fake.add_domain('web-1')
    agent.keeper.change(dom.UUIDString(), 'web-1', True, None, 'x')
    dom.metadata_elements[selection.NAMESPACE] = (
        '<monitoring><override enabled="false" by="someone"/></monitoring>')
    agent.selector.forget(dom.UUIDString())
    assert agent.selector.is_monitored(dom.UUIDString(), 'web-1') is True
    assert len(agent.notifications()) == 1


@pytest.mark.parametrize('child', [
    '<override enabled="maybe"/>',
    '<override/>',
])
def test_an_unusable_choice_in_the_metadata_is_ignored(agent, caplog,
                                                       child):
    dom = agent.fake.add_domain('web-1')
    dom.metadata_elements[selection.NAMESPACE] = (
        '<monitoring>%s</monitoring>' % child)
    assert agent.selector.is_monitored(dom.UUIDString(), 'web-1') is True
    assert agent.store.all() == {}
    assert 'web-1 (%s): ignoring the operator choice' % dom.UUIDString() \
        in caplog.text


@pytest.mark.parametrize('ctxt, expected', [
    ({'user_id': 'u1', 'project_id': 'p1', 'request_id': 'req-1'},
     'user=u1 project=p1 request_id=req-1'),
    ({'user': 'alice', 'tenant': 'ops'}, 'user=alice project=ops'),
    ({}, 'rpc (anonymous)'),
    (None, 'rpc (anonymous)'),
    ({'user_id': 'x' * 1000}, 'user=' + 'x' * 250),
])
def test_requested_by_from_the_rpc_context(ctxt, expected):
    assert overrides.requested_by(ctxt) == expected
