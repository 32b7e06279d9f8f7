"""The agent's side of a recovery (``vmha.manager.recoveries``): what
the bridge tells it is kept per failure episode in the journal, shown in
the RECOVERY column and counted in ``vmha_recoveries_total``; only the
domain running again closes the episode.  Fake libvirt, real journal.
"""

import logging

from prometheus_client import parser
import pytest

from tests.unit.test_failure_monitor import Agent
from tests.unit.test_reporter import crash
from tests.unit.test_reporter import failures
from tests.unit.test_reporter import run_again
from vmha.api import table
from vmha.manager import metrics as metrics_lib
from vmha.manager import recoveries


@pytest.fixture
def agent(tmp_path):
    agent = Agent(str(tmp_path / 'vmha.sqlite'))
    agent.book = recoveries.RecoveryBook(agent.journal)
    yield agent
    agent.close()


def tell(agent, uuid, episode, status, took=1.0, reason=None):
    return agent.book.changed({
        'uuid': uuid, 'episode': episode, 'status': status, 'took': took,
        'reason': reason, 'notification_uuid': 'n-1', 'changed_at': 0.0})


def crashed(agent):
    dom = agent.fake.add_domain('vm-1')
    uuid = dom.UUIDString()
    crash(agent, dom)
    [failure] = failures(agent)
    return dom, uuid, failure['episode']


def open_episode(agent, uuid):
    return agent.reporter.store.all()[uuid].failure_cause is not None


def test_a_failed_recovery_keeps_the_episode_open_and_shows(agent):
    dom, uuid, episode = crashed(agent)

    tell(agent, uuid, episode, 'accepted', 0.1)
    tell(agent, uuid, episode, 'running', 2.0)
    tell(agent, uuid, episode, 'failed', 40.0,
         reason='Masakari reports the recovery failed')

    assert open_episode(agent, uuid)  # the VM is still down
    shown = agent.book.latest()[uuid]
    assert (shown['episode'], shown['status'], shown['recovered_in']) == (
        episode, 'failed', None)
    assert table.recovery_cell(shown) == \
        'failed: Masakari reports the recovery failed'
    # A later crash of the same domain is still not reported twice.
    agent.audit.run_once()
    assert len(failures(agent)) == 1


def test_an_ignored_recovery_keeps_the_episode_open(agent):
    dom, uuid, episode = crashed(agent)

    tell(agent, uuid, episode, 'ignored', 3.0)

    assert open_episode(agent, uuid)
    assert table.recovery_cell(agent.book.latest()[uuid]) == 'ignored'


def test_the_vm_running_again_closes_it_and_times_the_recovery(agent):
    dom, uuid, episode = crashed(agent)
    tell(agent, uuid, episode, 'finished', 14.2)

    run_again(agent, dom)

    assert not open_episode(agent, uuid)
    shown = agent.book.latest()[uuid]
    assert shown['status'] == 'finished'
    assert shown['recovered_in'] is not None and shown['recovered_in'] >= 0
    assert table.recovery_cell(shown) == 'finished 14.2s'


def test_a_finished_recovery_alone_does_not_close_the_episode(agent):
    """Masakari saying finished is not the VM running here."""
    dom, uuid, episode = crashed(agent)

    tell(agent, uuid, episode, 'finished', 14.2)

    assert open_episode(agent, uuid)


def test_a_second_episode_shows_its_own_recovery(agent):
    dom, uuid, first = crashed(agent)
    tell(agent, uuid, first, 'finished', 10.0)
    run_again(agent, dom)
    crash(agent, dom)
    second = failures(agent)[-1]['episode']

    assert agent.book.latest()[uuid]['episode'] == second
    assert table.recovery_cell(agent.book.latest()[uuid]) == '-'
    tell(agent, uuid, second, 'rejected', 0.2, reason='HTTP 409: duplicate')
    assert table.recovery_cell(agent.book.latest()[uuid]) == \
        'rejected: HTTP 409: duplicate'


@pytest.mark.parametrize('message', [
    'not a dict',
    {'uuid': 'u', 'status': 'recovered-by-magic', 'took': 1.0},
    {'uuid': 'u', 'status': 'finished', 'took': -1},
    {'uuid': 'u', 'status': 'finished', 'took': True},
    {'uuid': 'u', 'status': 'finished', 'took': 1.0, 'reason': ['x']},
    {'status': 'finished', 'took': 1.0},
])
def test_bad_messages_are_dropped_with_a_line(agent, caplog, message):
    caplog.set_level(logging.WARNING)

    assert agent.book.changed(message) is False

    assert 'Dropping a recovery message for instance' in caplog.text
    assert agent.journal.query('SELECT * FROM recovery') == []


def test_a_message_for_another_instances_episode_is_dropped(agent, caplog):
    dom, uuid, episode = crashed(agent)

    assert tell(agent, '00000000-0000-0000-0000-000000000001', episode,
                'finished') is False

    assert 'belongs to instance' in caplog.text
    assert agent.book.latest()[uuid]['status'] is None


def test_a_redelivered_change_counts_once(agent):
    dom, uuid, episode = crashed(agent)

    assert tell(agent, uuid, episode, 'finished') is True
    assert tell(agent, uuid, episode, 'finished') is False

    assert agent.book.outcomes['finished'] == 1


def test_an_episode_this_journal_never_opened_is_still_recorded(agent):
    assert tell(agent, '00000000-0000-0000-0000-000000000002', 'e-old',
                'finished', 12.0) is True
    shown = agent.book.latest()['00000000-0000-0000-0000-000000000002']
    assert shown['status'] == 'finished'


def test_recoveries_total_by_outcome_in_metrics(agent):
    dom, uuid, episode = crashed(agent)
    tell(agent, uuid, episode, 'accepted')
    tell(agent, uuid, episode, 'finished')

    class Service:
        recoveries = agent.book

    collector = metrics_lib.ServiceCollector(Service())
    [family] = list(collector._recoveries())
    text = ''.join('%s{outcome="%s"} %s\n' % (s.name, s.labels['outcome'],
                                              s.value)
                   for s in family.samples)
    samples = {s.labels['outcome']: s.value for f in
               parser.text_string_to_metric_families(text)
               for s in f.samples}
    assert samples['accepted'] == 1
    assert samples['finished'] == 1
    assert samples['failed'] == 0
    assert set(samples) == {'accepted', 'running', 'finished', 'failed',
                            'ignored', 'rejected'}


def test_a_rejected_resend_does_not_undo_an_accepted_recovery(agent):
    """Another bridge copy got a resend of the episode and Masakari's 409:
    the recovery Masakari accepted goes on."""
    dom, uuid, episode = crashed(agent)
    tell(agent, uuid, episode, 'accepted')

    assert tell(agent, uuid, episode, 'rejected',
                reason='HTTP 409: duplicate') is False
    assert tell(agent, uuid, episode, 'finished', 9.5) is True
    assert tell(agent, uuid, episode, 'running') is False  # late, stale

    assert table.recovery_cell(agent.book.latest()[uuid]) == 'finished 9.5s'
