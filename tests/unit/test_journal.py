"""The journal file and its outbox: atomicity, order, pruning, start-up
errors, and surviving a SIGKILL (a real SQLite file in tmp_path)."""

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests.conftest import BACKEND
from tests.fixtures import messages
from vmha import concurrency
from vmha.journal import db
from vmha.journal import outbox as outbox_mod

NOBODY = 65534


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'state' / 'vmha.sqlite')


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


def message(number):
    return messages.failure_message(number)


def create_probe_state(journal):
    """A table like the manager's own, in the same file."""
    with journal.transaction() as tx:
        tx.execute('CREATE TABLE IF NOT EXISTS probe_state '
                   '(uuid TEXT PRIMARY KEY, power_state TEXT)')


def probe_states(journal):
    return {row['uuid']: row['power_state'] for row in
            journal.query('SELECT uuid, power_state FROM probe_state')}


def sent_numbers(sent):
    return [messages.number_of(m) for m in sent]


# --- one transaction for a state change and its notification ----------------

def test_commit_keeps_state_change_and_notification_across_reopen(path):
    journal = db.Journal(path)
    outbox = outbox_mod.Outbox(journal)
    create_probe_state(journal)
    failure = message(1)
    with journal.transaction() as tx:
        tx.execute('INSERT INTO probe_state VALUES (?, ?)',
                   ('uuid-1', 'crashed'))
        outbox.add(tx, failure)
    journal.close()

    reopened = db.Journal(path)
    try:
        assert probe_states(reopened) == {'uuid-1': 'crashed'}
        assert outbox_mod.Outbox(reopened).pending() == [failure]
    finally:
        reopened.close()


def test_rollback_loses_state_change_and_notification(journal, outbox):
    create_probe_state(journal)
    with pytest.raises(RuntimeError, match='decision failed'):
        with journal.transaction() as tx:
            tx.execute('INSERT INTO probe_state VALUES (?, ?)',
                       ('uuid-1', 'crashed'))
            outbox.add(tx, message(1))
            raise RuntimeError('decision failed')
    assert probe_states(journal) == {}
    assert outbox.pending() == []
    assert outbox.depth() == 0


def test_failed_sql_in_the_transaction_rolls_back_the_notification(
        journal, outbox):
    create_probe_state(journal)
    with pytest.raises(db.JournalError, match='no such column'):
        with journal.transaction() as tx:
            outbox.add(tx, message(1))
            tx.execute('UPDATE probe_state SET no_such_column = 1')
    assert outbox.depth() == 0


def test_listeners_are_woken_after_commit_only(journal, outbox):
    woken = []
    outbox.add_listener(lambda: woken.append(outbox.depth()))
    with journal.transaction() as tx:
        outbox.add(tx, message(1))
        outbox.add(tx, message(2))
        assert woken == []
    # Once per transaction, and the rows are visible when it runs.
    assert woken == [2]
    with pytest.raises(RuntimeError):
        with journal.transaction() as tx:
            outbox.add(tx, message(3))
            raise RuntimeError('abandoned')
    assert woken == [2]


def test_reads_inside_a_transaction_see_its_writes(journal, outbox):
    with journal.transaction() as tx:
        outbox.add(tx, message(1))
        assert outbox.depth() == 1


def test_nested_transaction_is_an_error_not_a_deadlock(journal):
    with journal.transaction():
        with pytest.raises(db.JournalError, match='already open'):
            with journal.transaction():
                pass
    with journal.transaction() as tx:  # the lock was released
        tx.execute('SELECT 1')


def test_transaction_handle_is_useless_after_the_block(journal, outbox):
    with journal.transaction() as tx:
        pass
    with pytest.raises(db.JournalError, match='is over'):
        outbox.add(tx, message(1))


def test_outbox_rejects_another_journals_transaction(tmp_path, outbox):
    other = db.Journal(str(tmp_path / 'other.sqlite'))
    try:
        with other.transaction() as tx:
            with pytest.raises(ValueError, match='another journal'):
                outbox.add(tx, message(1))
    finally:
        other.close()


def test_writers_on_several_tasks_lose_nothing(journal, outbox):
    """Regression guard for sharing one connection: concurrent writers
    (native threads under the threading backend) must neither interleave
    transactions nor lose rows."""
    backend = concurrency.get(BACKEND)
    errors = []

    def writer(first):
        try:
            for number in range(first, first + 50):
                with journal.transaction() as tx:
                    outbox.add(tx, message(number))
        except Exception as error:  # reported below
            errors.append(error)

    tasks = [backend.spawn(writer, start) for start in (0, 100, 200, 300)]
    for task in tasks:
        task.join(30)
    assert errors == []
    assert outbox.depth() == 200
    assert sorted(sent_numbers(outbox.pending(1000))) == sorted(
        n for start in (0, 100, 200, 300) for n in range(start, start + 50))


# --- order, ids, pruning, depth and age --------------------------------------

def test_pending_is_oldest_first_and_limited(journal, outbox):
    for number in range(5):
        with journal.transaction() as tx:
            outbox.add(tx, message(number))
    assert sent_numbers(outbox.pending(3)) == [0, 1, 2]
    outbox.mark_delivered(outbox.pending(1)[0].message_id, 1.0)
    assert sent_numbers(outbox.pending(10)) == [1, 2, 3, 4]


def test_order_holds_after_everything_was_pruned(journal, outbox, clock):
    with journal.transaction() as tx:
        first_seq = outbox.add(tx, message(1))
    outbox.mark_delivered(outbox.pending()[0].message_id, clock.now)
    assert outbox.prune(0, clock.now + 1) == 1
    with journal.transaction() as tx:
        second_seq = outbox.add(tx, message(2))
    assert second_seq > first_seq


def test_message_ids_are_unique_and_a_duplicate_is_refused(journal, outbox):
    ids = {message(1).message_id for _ in range(1000)}
    assert len(ids) == 1000
    original = message(1)
    with journal.transaction() as tx:
        outbox.add(tx, original)
    with pytest.raises(outbox_mod.DuplicateMessageError,
                       match=original.message_id):
        with journal.transaction() as tx:
            outbox.add(tx, original._replace(event_type='other'))
    assert outbox.pending() == [original]


def test_payload_that_is_not_json_is_refused_with_the_message_id(
        journal, outbox):
    bad = message(1)._replace(payload={'when': object()})
    with pytest.raises(TypeError, match=bad.message_id):
        with journal.transaction() as tx:
            outbox.add(tx, bad)
    assert outbox.depth() == 0


def test_mark_delivered_is_once(journal, outbox):
    with journal.transaction() as tx:
        outbox.add(tx, message(1))
    message_id = outbox.pending()[0].message_id
    assert outbox.mark_delivered(message_id, 5.0) is True
    assert outbox.mark_delivered(message_id, 6.0) is False
    assert outbox.mark_delivered('no-such-id', 6.0) is False


def test_prune_removes_only_delivered_rows_past_retention(
        journal, outbox, clock):
    start = clock.now
    for number in range(3):
        with journal.transaction() as tx:
            outbox.add(tx, message(number))
    old, recent, undelivered = outbox.pending()
    outbox.mark_delivered(old.message_id, start + 10)
    outbox.mark_delivered(recent.message_id, start + 90)
    # Retention 50s at start+100: delivered at +10 goes, at +90 stays; the
    # undelivered row stays whatever its age.
    assert outbox.prune(50, start + 100) == 1
    kept = {row['message_id'] for row in
            journal.query('SELECT message_id FROM outbox')}
    assert kept == {recent.message_id, undelivered.message_id}
    assert outbox.prune(0, start + 10_000_000) == 1
    assert outbox.pending() == [undelivered]


def test_depth_and_oldest_age(journal, outbox, clock):
    assert outbox.depth() == 0
    assert outbox.oldest_age(clock.now) == 0
    start = clock.now
    with journal.transaction() as tx:
        outbox.add(tx, message(1))
    clock.now = start + 30
    with journal.transaction() as tx:
        outbox.add(tx, message(2))
    assert outbox.depth() == 2
    assert outbox.oldest_age(start + 45) == pytest.approx(45)
    outbox.mark_delivered(outbox.pending()[0].message_id, start + 46)
    assert outbox.depth() == 1
    assert outbox.oldest_age(start + 50) == pytest.approx(20)
    # A clock stepping back gives 0, not a negative age.
    assert outbox.oldest_age(start) == 0


# --- the file: creation, durability settings, start-up errors ----------------

def test_first_start_creates_a_private_directory_and_file(path):
    db.Journal(path).close()
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_file_is_wal_with_full_synchronous(journal):
    assert journal.query('PRAGMA journal_mode')[0][0] == 'wal'
    assert journal.query('PRAGMA synchronous')[0][0] == 2  # FULL
    with sqlite3.connect(journal.path) as other:
        # WAL is a property of the file: any later opener gets it.
        assert other.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_garbage_file_fails_at_open_with_a_readable_error(path):
    os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as garbage:
        garbage.write(os.urandom(64 * 1024))
    with pytest.raises(db.JournalError) as caught:
        db.Journal(path)
    text = str(caught.value)
    assert path in text
    assert 'file is not a database' in text
    assert 'move it aside' in text


def test_corrupt_pages_fail_at_open_not_later(path):
    journal = db.Journal(path)
    outbox = outbox_mod.Outbox(journal)
    for number in range(300):
        with journal.transaction() as tx:
            outbox.add(tx, message(number))
    journal.close()
    size = os.path.getsize(path)
    assert size > 8 * 4096
    with open(path, 'r+b') as damaged:
        # Keep the header and schema page: only quick_check finds this.
        damaged.seek(2 * 4096)
        damaged.write(os.urandom(size - 2 * 4096))
    with pytest.raises(db.JournalError, match='malformed') as caught:
        db.Journal(path)
    assert path in str(caught.value)


def test_foreign_sqlite_file_is_refused(path):
    os.makedirs(os.path.dirname(path))
    with sqlite3.connect(path) as other:
        other.execute('CREATE TABLE invoices (id INTEGER)')
    with pytest.raises(db.JournalError, match='not a vmha journal'):
        db.Journal(path)


def test_journal_from_a_newer_vmha_is_refused(path):
    db.Journal(path).close()
    with sqlite3.connect(path) as other:
        other.execute('UPDATE schema_version SET version = 99')
    with pytest.raises(db.JournalError, match='newer vmha'):
        db.Journal(path)


def test_path_below_a_regular_file_fails_with_the_path(tmp_path):
    blocker = tmp_path / 'not-a-dir'
    blocker.write_text('x')
    path = str(blocker / 'vmha.sqlite')
    with pytest.raises(db.JournalError) as caught:
        db.Journal(path)
    assert path in str(caught.value)
    assert 'not a directory' in str(caught.value)


@contextlib.contextmanager
def shared_dir():
    """A directory an unprivileged user can reach (tmp_path is 0700)."""
    top = tempfile.mkdtemp(prefix='vmha-journal-')
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        for root, dirs, _ in os.walk(top):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(top)


def open_unprivileged(path):
    """Open a journal without root's power to ignore modes; 'opened' or
    the JournalError text.  As root, a forked child drops to nobody."""
    if os.geteuid() != 0:
        try:
            db.Journal(path).close()
            return 'opened'
        except db.JournalError as error:
            return str(error)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                db.Journal(path).close()
                result = 'opened'
            except db.JournalError as error:
                result = str(error)
            os.write(write_fd, result.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return b''.join(chunks).decode()


def test_read_only_directory_fails_at_open():
    with shared_dir() as top:
        writable = os.path.join(top, 'writable')
        read_only = os.path.join(top, 'read-only')
        os.mkdir(writable, 0o777)
        os.chmod(writable, 0o777)
        os.mkdir(read_only, 0o555)
        # The same user succeeds where it may write: the failure below is
        # the directory's mode, not the test's set-up.
        assert open_unprivileged(
            os.path.join(writable, 'vmha.sqlite')) == 'opened'
        path = os.path.join(read_only, 'vmha.sqlite')
        result = open_unprivileged(path)
        assert result.startswith('cannot open the vmha journal %s: '
                                 % path)
        assert 'Permission denied' in result


def test_read_only_existing_file_fails_at_open_not_at_first_write():
    with shared_dir() as top:
        directory = os.path.join(top, 'state')
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        path = os.path.join(directory, 'vmha.sqlite')
        db.Journal(path).close()
        os.chmod(path, 0o444)
        result = open_unprivileged(path)
        assert path in result
        assert 'attempt to write a readonly database' in result
        assert os.path.getsize(path) > 0  # nothing was replaced


def test_file_of_another_user_fails_at_open_saying_why():
    with shared_dir() as top:
        directory = os.path.join(top, 'state')
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        path = os.path.join(directory, 'vmha.sqlite')
        db.Journal(path).close()
        if os.geteuid() != 0:
            os.chmod(path, 0o000)
        result = open_unprivileged(path)
        assert result.startswith('cannot open the vmha journal %s: '
                                 % path)
        assert 'Permission denied' in result


def test_sigkill_between_write_and_send_keeps_the_row(path):
    """The agent dies right after committing a notification, before any
    sink saw it: the next start must find it, undelivered."""
    script = textwrap.dedent("""
        import os, sys
        from tests.fixtures import messages
        from vmha.journal import db, outbox
        journal = db.Journal(sys.argv[1])
        box = outbox.Outbox(journal)
        with journal.transaction() as tx:
            tx.execute('CREATE TABLE probe_state '
                       '(uuid TEXT PRIMARY KEY, power_state TEXT)')
            tx.execute("INSERT INTO probe_state VALUES ('u1', 'crashed')")
            box.add(tx, messages.failure_message(1))
        print(box.pending()[0].message_id, flush=True)
        os.kill(os.getpid(), 9)
        print('not reached', flush=True)
    """)
    result = subprocess.run([sys.executable, '-c', script, path],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    written_id = result.stdout.split()[0]
    assert 'not reached' not in result.stdout

    journal = db.Journal(path)
    try:
        outbox = outbox_mod.Outbox(journal)
        assert [m.message_id for m in outbox.pending()] == [written_id]
        assert outbox.depth() == 1
        assert probe_states(journal) == {'u1': 'crashed'}
    finally:
        journal.close()


def test_closed_journal_refuses_use(journal, outbox):
    journal.close()
    with pytest.raises(db.JournalError, match='closed'):
        outbox.depth()


def test_after_rollback_runs_when_the_transaction_does_not_commit(journal):
    """State kept in memory beside a transaction (the rate limiter's
    admissions) is taken back when its writes are not kept."""
    calls = []
    with journal.transaction() as tx:
        tx.after_rollback(lambda: calls.append('committed?'))
    assert calls == []
    with pytest.raises(RuntimeError):
        with journal.transaction() as tx:
            tx.after_rollback(lambda: calls.append('rolled back'))
            raise RuntimeError('a write failed')
    assert calls == ['rolled back']
