"""The monitors' batched journal writer: writes kept until a commit
succeeds, the window for changes that send nothing, and the backoff.

A real SQLite journal; "the journal cannot be written" is a second
connection holding the write lock with the journal's lock wait cut to
50 ms (as in test_journal_failures); fake monotonic clock.
"""

import sqlite3

import pytest

from tests.fixtures import virt
from vmha.journal import batch
from vmha.journal import db


class Rows:
    """Writes that each insert one number into a table of their own."""

    def __init__(self, journal):
        self.journal = journal
        with journal.transaction() as tx:
            tx.execute('CREATE TABLE IF NOT EXISTS numbers (n INTEGER)')

    def write(self, n):
        return lambda tx: tx.execute('INSERT INTO numbers VALUES (?)', (n,))

    def committed(self):
        return [row[0] for row in self.journal.query(
            'SELECT n FROM numbers ORDER BY rowid')]


@pytest.fixture
def clock():
    return virt.FakeClock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'vmha.sqlite')


@pytest.fixture
def journal(path, clock):
    journal = db.Journal(path, busy_timeout=0.05, clock=clock)
    yield journal
    journal.close()


def test_changes_that_send_nothing_wait_for_the_window(journal, clock):
    rows = Rows(journal)
    writes = batch.WriteBatch(journal, 'Test monitor', 0.2, clock=clock)
    clock.advance(0.3)
    writes.add(rows.write(1))
    writes.commit_due()  # the window since the last commit is over
    assert rows.committed() == [1]
    writes.add(rows.write(2))
    writes.commit_due()
    assert rows.committed() == [1] and len(writes) == 1
    assert writes.next_commit_at() == pytest.approx(clock() + 0.2)
    clock.advance(0.2)
    writes.commit_due()
    assert rows.committed() == [1, 2] and writes.next_commit_at() is None


def test_an_urgent_write_commits_at_once_with_those_waiting(journal, clock):
    rows = Rows(journal)
    writes = batch.WriteBatch(journal, 'Test monitor', 0.2, clock=clock)
    writes.add(rows.write(1))
    writes.add(rows.write(2), urgent=True)
    writes.commit_due()
    assert rows.committed() == [1, 2]


def test_writes_the_journal_refuses_are_kept_until_a_commit_succeeds(
        journal, path, clock, caplog):
    rows = Rows(journal)
    writes = batch.WriteBatch(journal, 'Test monitor', 0.2, clock=clock)
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute('BEGIN IMMEDIATE')
    writes.add(rows.write(1), urgent=True)
    writes.commit_due()
    assert writes.pending_writes() == 1
    assert 'Test monitor cannot write 1 change(s) to the journal' in \
        caplog.text
    writes.add(rows.write(2))
    writes.commit_due()  # backing off: no new attempt yet
    assert writes.pending_writes() == 2
    retry_at = writes.next_commit_at()
    assert retry_at == pytest.approx(clock() + 0.5)
    lock.execute('COMMIT')
    lock.close()
    clock.advance(0.5)
    writes.commit_due()
    assert rows.committed() == [1, 2]  # all of them, in order, once
    assert writes.pending_writes() == 0 and len(writes) == 0
    assert 'Test monitor: 2 kept change(s) written' in caplog.text


def test_a_write_that_raises_a_bug_is_dropped_not_retried(journal, clock):
    rows = Rows(journal)
    writes = batch.WriteBatch(journal, 'Test monitor', 0.2, clock=clock)

    def broken(tx):
        raise KeyError('a bug')
    writes.add(rows.write(1))
    writes.add(broken, urgent=True)
    with pytest.raises(KeyError):
        writes.commit_due()
    assert len(writes) == 0
    assert rows.committed() == []  # the transaction was rolled back
