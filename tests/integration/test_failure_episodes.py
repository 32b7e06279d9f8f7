"""Two failures of one VM, 20 s apart, against the real masakari-api
(issue 11 item 4).

vmha's own path: the agent's ``Reporter`` opens each episode and writes
its failure into the journal's outbox, an ``OutboxSender`` delivers the
outbox through the ``masakari`` sink (direct mode), and masakari-api 22
answers.  vmha-masakari-bridge translates and forwards with the same code
(``vmha.masakari.forward``).

What Masakari can be told: its VM payload schema allows exactly event,
instance_uuid and vir_domain_event (an episode key gets 400,
tests/integration/test_services.py), and its engine acts only on exact
pairs, so both episodes' payloads are equal and only ``generated_time``
(each episode's own detection time) differs.  Masakari calls a
notification a duplicate when an equal payload was generated at most
``duplicate_notification_detection_interval`` seconds before it: with
the default 180 s the second episode is refused (pinned below, and
logged as such); with 0, every new episode is accepted and every resend
of an episode, which carries the episode's detection time again, is
still refused.
"""

import datetime
import logging

from oslo_config import cfg
import pytest

from tests.integration import services
from vmha import concurrency
import vmha.conf
from vmha.journal import db
from vmha.journal import outbox as outbox_lib
from vmha.journal import sender as sender_lib
from vmha.manager import decisions
from vmha.manager import failure_monitor
from vmha.manager import rate_limit
from vmha.manager import state
from vmha.notify.sinks import masakari as masakari_sink

HOST = 'compute-episodes'
INSTANCE = '5b9e2d4c-1a3f-4c6e-8b7d-9f0a1e2c3d4b'


@pytest.fixture(scope='module')
def masakari_no_window(tmp_path_factory):
    """A masakari-api with ``duplicate_notification_detection_interval =
    0``: only a notification generated at the same instant as an equal
    one is a duplicate."""
    api = services.MasakariAPI(tmp_path_factory.mktemp('masakari-window-0'),
                               transport_url='fake:/', duplicate_interval=0)
    api.ensure_installed()
    api.start()
    api.add_host(HOST)
    yield api
    api.stop()


class Agent:
    """The agent's decide-write-send path, on a real journal."""

    def __init__(self, path, masakari, backend):
        conf = cfg.ConfigOpts()
        vmha.conf.register_opts(conf)
        conf([], project='vmha', default_config_files=[])
        conf.set_override('host', HOST)
        conf.set_override('sinks', ['masakari'], group='notifications')
        conf.set_override('noauth', True, group='masakari')
        conf.set_override('endpoint_override', masakari.url,
                          group='masakari')
        self.journal = db.Journal(str(path))
        self.outbox = outbox_lib.Outbox(self.journal)
        self.store = state.StateStore(self.journal)
        self.reporter = failure_monitor.Reporter(
            self.outbox, self.store, HOST,
            limiter=rate_limit.NotificationLimiter.from_conf(conf))
        self.sink = masakari_sink.MasakariSink(conf)
        self.sender = sender_lib.OutboxSender(self.outbox, self.sink,
                                              backend)
        self.sent = []

    def qemu_dies(self, when):
        """QEMU died at ``when``: one episode, written and delivered."""
        verdict = decisions.from_state('SHUTOFF_FAILED')
        with self.journal.transaction() as tx:
            row = self.store.get(tx, INSTANCE)
            self.store.record(tx, INSTANCE, 'web-1', 'shutdown',
                              'STOPPED_FAILED', when.timestamp())
            assert self.reporter.report(tx, row, INSTANCE, 'web-1',
                                        verdict, when.timestamp())
        [message] = self.outbox.pending()
        assert self.sender.run_once() is None
        assert self.outbox.pending() == []
        self.sent.append(message)
        return message.payload['vmha_object.data']['episode']

    def runs_again(self):
        with self.journal.transaction() as tx:
            self.store.close_failure(tx, INSTANCE)

    def resend(self, message):
        """What an agent killed between send and mark does on restart."""
        self.sink.send(message)

    def close(self):
        self.journal.close()


@pytest.fixture
def make_agent(tmp_path, backend):
    agents = []

    def make(masakari):
        agent = Agent(tmp_path / ('vmha-%d.sqlite' % len(agents)), masakari,
                      concurrency.get(backend))
        agents.append(agent)
        return agent
    yield make
    for agent in agents:
        agent.close()


def rows(masakari):
    return [row for row in masakari.notifications(HOST)
            if row['payload']['instance_uuid'] == INSTANCE]


def test_two_episodes_20_s_apart_give_two_rows_and_resends_none(
        masakari_no_window, make_agent, caplog):
    agent = make_agent(masakari_no_window)
    caplog.set_level(logging.INFO, logger='vmha.masakari')
    # vmha's times are whole seconds (the sample: "...T16:00:05Z").
    first_at = (services.utcnow() - datetime.timedelta(seconds=30)).replace(
        microsecond=0)

    first = agent.qemu_dies(first_at)
    agent.runs_again()  # Masakari restarted it...
    second = agent.qemu_dies(first_at + datetime.timedelta(seconds=20))

    assert first != second
    stored = rows(masakari_no_window)
    assert [row['generated_time'] for row in stored] == [
        services.db_time(first_at),
        services.db_time(first_at + datetime.timedelta(seconds=20))]
    assert stored[0]['payload'] == stored[1]['payload'] == {
        'event': 'LIFECYCLE', 'instance_uuid': INSTANCE,
        'vir_domain_event': 'STOPPED_FAILED'}
    accepted = [r.getMessage() for r in caplog.records
                if 'Masakari accepted' in r.getMessage()]
    assert len(accepted) == 2
    assert 'episode %s' % first in accepted[0]
    assert 'episode %s' % second in accepted[1]

    # ...and each episode is sent again, as after an agent crash.
    for message in agent.sent:
        agent.resend(message)

    assert len(rows(masakari_no_window)) == 2
    rejected = [r.getMessage() for r in caplog.records
                if 'Masakari rejected' in r.getMessage()]
    assert len(rejected) == 2
    assert all('HTTP 409' in line and 'is duplicate' in line
               for line in rejected)


def test_with_the_default_window_masakari_refuses_the_second_episode(
        masakari, make_agent, caplog):
    # Masakari's default (180 s): the limit vmha cannot lift from its
    # side; the log says which episode Masakari refused, and why.
    masakari.add_host(HOST)
    agent = make_agent(masakari)
    caplog.set_level(logging.INFO, logger='vmha.masakari')
    first_at = services.utcnow() - datetime.timedelta(seconds=30)

    agent.qemu_dies(first_at)
    agent.runs_again()
    second = agent.qemu_dies(first_at + datetime.timedelta(seconds=20))

    assert len(rows(masakari)) == 1
    [rejected] = [r.getMessage() for r in caplog.records
                  if 'Masakari rejected' in r.getMessage()]
    assert 'episode %s' % second in rejected
    assert 'HTTP 409' in rejected
    assert 'duplicate_notification_detection_interval' in rejected
