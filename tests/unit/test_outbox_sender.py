"""The outbox sender: order, failures and backoff, outage logging,
restarts, pruning, and the loop running for real under the test's
backend (a real SQLite file in tmp_path, a fake sink)."""

import logging
import time

import pytest

from tests.conftest import BACKEND
from tests.conftest import backend_sleep
from tests.fixtures import messages
from tests.fixtures import virt
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_mod
from vmha.journal import sender as sender_mod
from vmha.manager import health
from vmha.notify import base


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeSink(base.Sink):
    """Records what it got; ``fail(n)`` makes the next n sends fail."""

    name = 'fake'

    def __init__(self, outbox=None):
        self.sent = []
        self.attempts = 0
        self.failures_left = 0
        self.error = base.DeliveryError('broker unreachable')
        self.depth_seen = []
        self._outbox = outbox

    def fail(self, times, error=None):
        self.failures_left = times
        if error is not None:
            self.error = error

    def send(self, message):
        self.attempts += 1
        if self._outbox is not None:
            self.depth_seen.append(self._outbox.depth())
        if self.failures_left:
            self.failures_left -= 1
            raise self.error
        self.sent.append(message)

    def numbers(self):
        return numbers(self.sent)


def numbers(sent):
    return [messages.number_of(m) for m in sent]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'vmha.sqlite')


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def journal(path):
    journal = db.Journal(path)
    yield journal
    journal.close()


@pytest.fixture
def outbox(journal, clock):
    return outbox_mod.Outbox(journal, clock=clock)


@pytest.fixture
def sink():
    return FakeSink()


def make_sender(outbox, sink, clock, **kwargs):
    options = dict(retry_min=0.5, retry_max=30.0, batch_size=100,
                   retention=3600, clock=clock, rand=lambda: 0.5)
    options.update(kwargs)
    return sender_mod.OutboxSender(outbox, sink, BACKEND, **options)


def write(outbox, *numbers_to_write):
    """One transaction per notification, as the manager will write."""
    for number in numbers_to_write:
        with outbox.journal.transaction() as tx:
            outbox.add(tx, messages.failure_message(number))


# --- one pass ---------------------------------------------------------------

def test_delivers_in_order_and_marks_the_pass_delivered_at_once(
        outbox, clock):
    sink = FakeSink(outbox)
    write(outbox, 1, 2, 3)
    sender = make_sender(outbox, sink, clock)
    assert sender.run_once() is None  # nothing left
    assert sink.numbers() == [1, 2, 3]
    # One mark (one fsync) for the whole pass, after the last send.
    assert sink.depth_seen == [3, 3, 3]
    assert outbox.depth() == 0
    assert sender.sent_total == 3
    assert sender.run_once() is None
    assert sink.numbers() == [1, 2, 3]  # nothing sent twice


def test_failure_stops_the_pass_and_nothing_overtakes_the_failed_row(
        outbox, sink, clock):
    write(outbox, 1, 2, 3)
    sender = make_sender(outbox, sink, clock)
    original = sink.send
    failed = []

    def fail_once_on_2(message):
        if messages.number_of(message) == 2 and not failed:
            failed.append(message)
            sink.fail(1)
        original(message)
    sink.send = fail_once_on_2

    delay = sender.run_once()
    assert 0.5 <= delay <= 30.0
    assert sink.numbers() == [1]
    assert sink.attempts == 2  # 3 was not tried ahead of 2
    assert outbox.depth() == 2
    assert sender.failed_total == 1
    assert 'broker unreachable' in sender.last_error

    assert sender.run_once() is None
    assert sink.numbers() == [1, 2, 3]
    assert outbox.depth() == 0


def test_an_unexpected_sink_exception_is_logged_and_retried_not_fatal(
        outbox, sink, clock, caplog):
    caplog.set_level(logging.DEBUG, logger='vmha.journal.sender')
    write(outbox, 1, 2)
    poison_id = outbox.pending()[0].message_id
    sink.fail(1, KeyError('payload field'))
    sender = make_sender(outbox, sink, clock)
    assert sender.run_once() > 0
    assert sink.sent == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert poison_id in errors[0].getMessage()
    assert errors[0].exc_info is not None  # the traceback, for the bug
    assert 'KeyError' in sender.last_error
    assert sender.run_once() is None
    assert sink.numbers() == [1, 2]


def test_an_outage_is_logged_once_with_depth_and_age_then_its_end(
        outbox, sink, clock, caplog):
    caplog.set_level(logging.DEBUG, logger='vmha.journal.sender')
    write(outbox, 1, 2, 3)
    clock.now += 42
    sink.fail(6)
    sender = make_sender(outbox, sink, clock)
    for _ in range(6):
        assert sender.run_once() > 0
        clock.now += 1
    assert sender.failed_total == 6
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert '3 waiting, the oldest for 42.0s' in warnings[0]
    assert 'broker unreachable' in warnings[0]

    assert sender.run_once() is None
    infos = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert 'again after 6.0s and 6 failed attempt(s)' in infos[0]
    assert sink.numbers() == [1, 2, 3]


def test_a_new_kind_of_failure_in_an_outage_is_logged_again(
        outbox, sink, clock, caplog):
    caplog.set_level(logging.WARNING, logger='vmha.journal.sender')
    write(outbox, 1)
    sender = make_sender(outbox, sink, clock)
    sink.fail(2)
    sender.run_once()
    sender.run_once()
    sink.fail(1, RuntimeError('sink bug'))
    sender.run_once()
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert 'sink bug' in logged[1]


def test_backoff_doubles_with_jitter_within_bounds(outbox, clock):
    write(outbox, 1)
    sink = FakeSink()
    sink.fail(100)
    high = make_sender(outbox, sink, clock, retry_min=0.5, retry_max=30.0,
                       rand=lambda: 1.0)
    assert [high.run_once() for _ in range(8)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    low = make_sender(outbox, sink, clock, retry_min=0.5, retry_max=30.0,
                      rand=lambda: 0.0)
    assert [low.run_once() for _ in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_backoff_starts_over_after_a_success(outbox, sink, clock):
    write(outbox, 1, 2)
    sender = make_sender(outbox, sink, clock, rand=lambda: 1.0)
    sink.fail(4)
    delays = [sender.run_once() for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert sender.run_once() is None
    write(outbox, 3)
    sink.fail(1)
    assert sender.run_once() == 1.0


def test_a_full_batch_asks_for_another_pass_at_once(outbox, sink, clock):
    write(outbox, *range(5))
    sender = make_sender(outbox, sink, clock, batch_size=2)
    assert sender.run_once() == 0
    assert sink.numbers() == [0, 1]
    assert sender.run_once() == 0
    assert sender.run_once() is None
    assert sink.numbers() == [0, 1, 2, 3, 4]


def test_a_journal_failure_after_sending_means_a_resend_not_a_loss(
        outbox, sink, clock):
    write(outbox, 1, 2)
    sender = make_sender(outbox, sink, clock)
    real_mark = outbox.mark_many_delivered
    failures = [db.JournalError(outbox.journal.path, 'disk I/O error')]

    def mark_many_delivered(message_ids, when):
        if failures:
            raise failures.pop()
        return real_mark(message_ids, when)
    outbox.mark_many_delivered = mark_many_delivered

    assert sender.run_once() > 0
    assert 'disk I/O error' in sender.last_error
    assert sender.run_once() is None
    # Sent twice with the same ids, so the consumer can drop the copies.
    assert sink.numbers() == [1, 2, 1, 2]
    assert sink.sent[0].message_id == sink.sent[2].message_id
    assert outbox.depth() == 0


def test_restart_resends_undelivered_rows_and_only_those(path, clock):
    journal = db.Journal(path)
    outbox = outbox_mod.Outbox(journal, clock=clock)
    write(outbox, 1, 2, 3)
    first_sink = FakeSink()
    first = make_sender(outbox, first_sink, clock)
    first_sink.send = _fail_from(first_sink, 2)
    first.run_once()
    assert first_sink.numbers() == [1]
    journal.close()

    reopened = db.Journal(path)
    try:
        second_sink = FakeSink()
        second = make_sender(outbox_mod.Outbox(reopened, clock=clock),
                             second_sink, clock)
        assert second.run_once() is None
        assert second_sink.numbers() == [2, 3]
    finally:
        reopened.close()


def _fail_from(sink, number):
    """A send that fails from the message numbered ``number`` on."""
    original = sink.send

    def send(message):
        if messages.number_of(message) >= number:
            sink.attempts += 1
            raise base.DeliveryError('down')
        original(message)
    return send


def test_prune_keeps_undelivered_and_recent_rows(outbox, sink, clock):
    write(outbox, 1, 2)
    sender = make_sender(outbox, sink, clock, retention=3600)
    sink.send = _fail_from(sink, 2)
    sender.run_once()
    clock.now += 3599
    assert sender.prune() == 0
    clock.now += 2
    assert sender.prune() == 1
    assert numbers(outbox.pending()) == [2]


# --- the loop, for real under this run's backend -----------------------------

@pytest.fixture
def running(outbox, sink):
    senders = []

    def start(**kwargs):
        options = dict(retry_min=0.01, retry_max=0.05, rand=lambda: 0.5)
        options.update(kwargs)
        sender = make_sender(outbox, sink, time.time, **options)
        sender.start()
        senders.append(sender)
        return sender
    yield start
    for sender in senders:
        sender.stop(timeout=5)


def test_loop_sends_rows_written_before_and_after_start(
        outbox, sink, running, wait_for):
    write(outbox, 1, 2)
    # A long poll interval: only wake() can explain a prompt delivery.
    sender = running(poll_interval=60)
    wait_for(lambda: sender.sent_total == 2, what='rows from before')
    assert sink.numbers() == [1, 2]
    started = time.monotonic()
    write(outbox, 3)
    write(outbox, 4, 5)
    wait_for(lambda: sender.sent_total == 5, timeout=5, what='new rows')
    assert time.monotonic() - started < 2
    assert sink.numbers() == [1, 2, 3, 4, 5]
    assert outbox.depth() == 0


def test_loop_rides_out_failures_in_order(outbox, sink, running, wait_for):
    sink.fail(5)
    sender = running()
    write(outbox, 1, 2, 3)
    wait_for(lambda: sender.sent_total == 3,
             what='delivery after failures')
    assert sink.numbers() == [1, 2, 3]
    assert sender.failed_total == 5
    assert sender.running


def test_new_rows_do_not_cut_a_backoff_short(outbox, sink, running,
                                              wait_for):
    """Each committed row wakes the sender; during an outage that must
    not turn into one more attempt per row against a dead broker."""
    sink.fail(1000)
    running(retry_min=1.0, retry_max=1.0, rand=lambda: 1.0)
    write(outbox, 1)
    wait_for(lambda: sink.attempts == 1, what='the first attempt')
    write(outbox, *range(2, 12))
    backend_sleep(0.2)
    assert sink.attempts == 1


def test_stop_leaves_undelivered_rows_for_the_next_start(
        path, outbox, sink, running, wait_for, caplog, clock):
    caplog.set_level(logging.INFO, logger='vmha.journal.sender')
    sink.fail(1000)
    sender = running()
    write(outbox, 1, 2)
    wait_for(lambda: sink.attempts >= 1, what='an attempt')
    sender.stop(timeout=5)
    assert not sender.running
    assert outbox.depth() == 2
    assert '2 notification(s) not yet delivered' in caplog.text
    assert path in caplog.text

    sink.fail(0)
    again = running()
    # sent_total counts a message once it is marked delivered.
    # Counted and marked delivered are two steps: wait for both.
    wait_for(lambda: again.sent_total == 2 and outbox.depth() == 0,
             what='the next start')
    assert sink.numbers() == [1, 2]
    assert outbox.depth() == 0


def test_loop_prunes_delivered_rows(outbox, sink, running, wait_for):
    write(outbox, 1)
    running(retention=0, prune_interval=0.05)
    wait_for(lambda: outbox.journal.query(
        'SELECT count(*) FROM outbox')[0][0] == 0, what='the prune')
    assert sink.numbers() == [1]


def test_sender_from_conf_uses_the_options(outbox, sink):
    from oslo_config import cfg

    import vmha.conf
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha')
    conf.set_override('retry_min_interval', 2.0, group='outbox')
    conf.set_override('retry_max_interval', 3.0, group='outbox')
    conf.set_override('concurrency_backend', BACKEND)
    write(outbox, 1)
    sink.fail(10)
    sender = sender_mod.OutboxSender.from_conf(conf, outbox, sink,
                                               rand=lambda: 1.0)
    assert [sender.run_once() for _ in range(3)] == [3.0, 3.0, 3.0]
    assert conf.database.path == '/var/lib/vmha/vmha.sqlite'
    assert conf.database.retention == 7 * 24 * 3600


def test_healthz_shows_a_send_that_never_returns_but_feeds_the_watchdog(
        outbox, sink, running, wait_for):
    """The sender's loop has its own /healthz check: idle it turns over
    every second whatever its poll interval; a send that never returns
    fails the check, but does not starve the watchdog (a restart would
    not make the sink answer)."""
    sender = running(poll_interval=60)
    check = health.HealthCheck(virt.make_driver(), [sender], 1.0, 60.0)
    backend_sleep(1.5)
    assert check.report()['checks']['outbox_sender']['ok']
    assert check.report()['status'] == 'ok'

    gate = concurrency.get(BACKEND).event()
    sink.send = lambda message: gate.wait(30)
    write(outbox, 1)
    wait_for(lambda: not check.report()['checks']['outbox_sender']['ok'],
             what='the stalled sender to fail its check')
    assert check.report()['status'] == 'unhealthy'
    assert check.problems()[0].startswith(
        'outbox sender loop has not turned over for ')
    assert check.turning_over()
    gate.set()
    wait_for(lambda: check.report()['checks']['outbox_sender']['ok'],
             what='the sender to turn over again')
