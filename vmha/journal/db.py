"""The journal: one SQLite file holding vmha's state and its outbox.

Durability.  The file is in WAL mode with ``synchronous=FULL``: every
commit fsyncs the write-ahead log before ``transaction()`` returns, so a
committed row survives a SIGKILL *and* a power loss or kernel panic.
``synchronous=NORMAL`` would survive the SIGKILL but may roll back the
last commits on power loss, and a VM failure the agent decided on and
then forgot is exactly what this journal exists to prevent.  The cost is
one fsync per transaction (about 0.15 ms median on the project's test VMs,
2,500-6,000 one-row transactions/s; several ms on a disk without a write
cache), which is why callers group a state change and its notifications
into one transaction.  Under eventlet that fsync blocks the hub for as
long; the sender yields between two messages.

Threads.  The agent holds one connection (``check_same_thread=False``)
behind one lock.  Each journal call holds the lock only for its SQL, and
``transaction()`` holds it from BEGIN IMMEDIATE to COMMIT, so writers
never interleave.  One connection per thread was the alternative; it
buys nothing for one writer and one sender, and under eventlet without
monkey patching every greenthread shares one native thread, where a
second connection waiting on SQLite's file lock would block the very hub
that the first one needs to commit.  The rule that makes the shared lock
safe under every backend: code inside ``transaction()`` only touches the
database (no sends, no sleeps, no libvirt calls).  A transaction opened
while the same thread (or, unpatched, another greenthread) already holds
one raises ``JournalError`` instead of deadlocking.

Start-up checks.  Opening creates the parent directory (mode 0700) and
the file if missing, then runs ``PRAGMA quick_check`` and writes the
schema version row, so a corrupt, foreign, newer or read-only file fails
at start with one ``JournalError`` naming the path and the cause.  There
is no in-memory fallback: an agent that cannot persist what it reports
must not pretend to.

Failed writes.  Later, a write can still fail (another process holding
the lock past ``busy_timeout``, a full file system, an I/O error): the
transaction rolls back and raises ``JournalError``, and the caller keeps
what it meant to write and tries again (``vmha.journal.retry``).  The
journal remembers since when its writes fail (``write_failing_since``,
cleared by the next commit), so that /healthz and the systemd watchdog
say so while they do.

Length.  About 540 lines, most of them this docstring, the append-only
schema history and the one-line hints of ``JournalError``: one file is
where an operator looking at a journal error should have to read.

Schema.  ``MIGRATIONS`` is an ordered list; version N is its Nth entry.
Later tables (the manager's per-domain state) are new entries appended
at the end, never edits of old ones.
"""

import logging
import os
import sqlite3
import threading
import time

LOG = logging.getLogger(__name__)

# (description, statements): version N is MIGRATIONS[N - 1].  Append only.
MIGRATIONS = [
    ('outbox of outgoing notifications', [
        # AUTOINCREMENT: seq never goes back, even once every row with
        # the highest seq has been pruned, so it orders sends for good.
        """CREATE TABLE outbox (
               seq INTEGER PRIMARY KEY AUTOINCREMENT,
               message_id TEXT NOT NULL UNIQUE,
               event_type TEXT NOT NULL,
               priority TEXT NOT NULL,
               publisher_id TEXT NOT NULL,
               payload TEXT NOT NULL,
               timestamp TEXT NOT NULL,
               created_at REAL NOT NULL,
               delivered_at REAL)""",
        """CREATE INDEX outbox_undelivered ON outbox (seq)
               WHERE delivered_at IS NULL""",
        """CREATE INDEX outbox_delivered ON outbox (delivered_at)
               WHERE delivered_at IS NOT NULL""",
    ]),
    ('per-domain state and open failure episodes', [
        # One row per domain the agent knows: its last known power state
        # and, while a failure episode is open, what was reported for it
        # (so a restart neither forgets a failure nor reports it twice).
        """CREATE TABLE domain_state (
               uuid TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               power_state TEXT NOT NULL,
               state_reason TEXT NOT NULL,
               updated_at REAL NOT NULL,
               failure_cause TEXT,
               failure_reported_at REAL)""",
    ]),
    ('guest-agent monitor state per VM', [
        # The guest-agent monitor's machine (vmha.manager.guest_states),
        # written on every change, so a restarted agent neither reports
        # an episode twice nor forgets its action budget.
        """CREATE TABLE guest_health (
               uuid TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               state TEXT NOT NULL,
               failures INTEGER NOT NULL DEFAULT 0,
               verdict TEXT,
               changed_at REAL NOT NULL,
               booted_at REAL,
               discovery_warned INTEGER NOT NULL DEFAULT 0,
               actions TEXT NOT NULL DEFAULT '[]')""",
    ]),
    ('operator choices and the last decision per domain', [
        # What an operator set over the RPC API outlives restarts and
        # redefinitions; it wins over metadata and name patterns.
        """CREATE TABLE monitoring_override (
               uuid TEXT PRIMARY KEY,
               enabled INTEGER NOT NULL,
               reason TEXT,
               set_at REAL NOT NULL)""",
        # The last failure reported stays visible after its episode closes.
        'ALTER TABLE domain_state ADD COLUMN last_decision TEXT',
        'ALTER TABLE domain_state ADD COLUMN last_decision_at REAL',
    ]),
    ('incoming migrations, failure episode ids, who set an override', [
        # Set while an incoming live migration has not yet resumed here,
        # apart from state_reason: the audit rewrites state_reason (to
        # PAUSED_MIGRATION, say) and must not erase this fact.
        'ALTER TABLE domain_state ADD COLUMN incoming_migration '
        'INTEGER NOT NULL DEFAULT 0',
        # A fresh id per failure episode, sent to Masakari in the payload
        # so that a second episode within its duplicate window is new.
        'ALTER TABLE domain_state ADD COLUMN failure_episode TEXT',
        # Who asked for an operator choice (from the RPC context).
        'ALTER TABLE monitoring_override ADD COLUMN requested_by TEXT',
        # Rows written before this version kept the event's name in
        # state_reason; move the one fact that matters out of it.  Other
        # event names are rewritten by the next event or audit.
        "UPDATE domain_state SET incoming_migration = 1, state_reason = "
        "'PAUSED_MIGRATION' WHERE state_reason = 'STARTED_MIGRATED'",
        "UPDATE domain_state SET state_reason = 'SHUTOFF_' || "
        "substr(state_reason, 9) WHERE state_reason LIKE 'STOPPED_%'",
    ]),
    ('guest heartbeat state per VM', [
        # The heartbeat monitor's view of each guest with a heartbeat
        # channel (vmha.manager.heartbeat_store), written on every state
        # change, so a restarted agent shows the last state at once, does
        # not report an open failure twice (``cause``), and keeps the
        # corrective-action budget (``actions``, wall times, JSON).
        """CREATE TABLE heartbeat (
               uuid TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               state TEXT NOT NULL,
               interval REAL,
               action TEXT,
               registered_at REAL,
               last_answer_at REAL,
               misses INTEGER NOT NULL DEFAULT 0,
               reason TEXT,
               changed_at REAL NOT NULL,
               cause TEXT,
               booted_at REAL,
               actions TEXT NOT NULL DEFAULT '[]')""",
    ]),
]

SCHEMA_VERSION = len(MIGRATIONS)

_CORRUPT_HINT = ('the file is damaged or is not a vmha journal; stop '
                 'vmha-agent and move it aside (with its -wal and -shm '
                 'files) to start with an empty journal, which loses the '
                 'notifications not yet delivered from it')
_HINTS = (
    ('file is not a database', _CORRUPT_HINT),
    ('malformed', _CORRUPT_HINT),
    ('quick_check', _CORRUPT_HINT),
    ('readonly', 'the file or its directory is read-only for this user; '
                 'WAL mode also writes <path>-wal and <path>-shm beside it'),
    ('permission denied', 'check the owner and mode of the file and its '
                          'directory'),
    ('unable to open', 'check that the directory exists and that this user '
                       'may create and write files in it'),
    ('disk is full', 'free space on that file system'),
    ('database is locked', 'another process holds the write lock; only one '
                           'vmha-agent may use a journal'),
)


class JournalError(Exception):
    """The journal cannot be opened, read or written.

    ``str()`` is one line naming the file and the cause, with a hint when
    the cause suggests what to do.
    """

    def __init__(self, path, cause, action='use'):
        self.path = path
        self.cause = cause
        text = 'cannot %s the vmha journal %s: %s' % (action, path, cause)
        lowered = cause.lower()
        for marker, hint in _HINTS:
            if marker in lowered:
                text += ' (%s)' % hint
                break
        super().__init__(text)


class Transaction:
    """The handle ``Journal.transaction()`` yields; valid only inside it.

    ``execute`` and ``executemany`` run SQL in the transaction;
    ``after_commit(callback)`` runs ``callback()`` once the transaction
    has committed (never after a rollback), outside the journal's lock.
    """

    def __init__(self, journal):
        self.journal = journal
        self._callbacks = []
        self._rollback_callbacks = []
        self._open = True

    def execute(self, sql, params=()):
        self._check_open()
        return self.journal._run(self.journal._conn.execute, sql, params)

    def executemany(self, sql, seq_of_params):
        self._check_open()
        return self.journal._run(self.journal._conn.executemany, sql,
                                 seq_of_params)

    def after_rollback(self, callback):
        """Call ``callback()`` when the transaction is rolled back or its
        commit fails (never after a commit), outside the journal's lock:
        for state kept in memory that the transaction's writes stood for.
        """
        self._check_open()
        self._rollback_callbacks.append(callback)

    def after_commit(self, callback):
        """Call ``callback()`` after a successful commit; registering the
        same callback twice calls it once."""
        self._check_open()
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def _check_open(self):
        if not self._open:
            raise JournalError(self.journal.path, 'the transaction this '
                               'handle belongs to is over', 'write')


class _TransactionScope:
    def __init__(self, journal):
        self._journal = journal
        self._tx = None

    def __enter__(self):
        journal = self._journal
        journal._acquire(for_transaction=True)
        try:
            journal._run(journal._conn.execute, 'BEGIN IMMEDIATE')
        except BaseException as error:
            journal._release()
            if isinstance(error, JournalError):
                journal._write_failed(error)
            raise
        self._tx = Transaction(journal)
        return self._tx

    def __exit__(self, exc_type, exc, traceback):
        journal = self._journal
        self._tx._open = False
        try:
            if exc_type is None:
                journal._commit()
            else:
                journal._rollback()
        except JournalError as error:
            journal._write_failed(error)
            self._rolled_back()
            raise
        finally:
            journal._release()
        if exc_type is not None:
            self._rolled_back()
        if isinstance(exc, JournalError):
            journal._write_failed(exc)  # a statement failed: disk full
        elif exc_type is None:
            journal._write_succeeded()
            for callback in self._tx._callbacks:
                try:
                    callback()
                except Exception:
                    # The commit stands; a failed hook must not undo it
                    # in the caller's eyes.
                    LOG.exception('After-commit callback %r failed',
                                  callback)
        return False

    def _rolled_back(self):
        for callback in self._tx._rollback_callbacks:
            try:
                callback()
            except Exception:
                LOG.exception('After-rollback callback %r failed', callback)


class Journal:
    """vmha's SQLite file, opened, checked and migrated.

    :param path: the file (``[database] path``); its directory is created
        with mode 0700 when missing
    :param busy_timeout: seconds to wait for another process's lock
        (an operator's ``sqlite3`` shell, say) before failing
    :param clock: monotonic clock for ``write_failing_since``
    :raises JournalError: the file cannot be created, is corrupt, is not
        a vmha journal, was written by a newer vmha, or cannot be written
    """

    def __init__(self, path, busy_timeout=5.0, clock=time.monotonic):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._owner = None
        self._conn = None
        self._clock = clock
        self.schema_version = None
        # Since when (``clock``) every write fails, and the last cause;
        # None since the last commit.
        self.write_failing_since = None
        self.last_write_error = None
        self.failed_writes = 0
        self._open(busy_timeout)

    @classmethod
    def from_conf(cls, conf):
        return cls(conf.database.path)

    # --- opening ------------------------------------------------------------

    def _open(self, busy_timeout):
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise JournalError(self.path, '%s is not a directory'
                               % directory, 'open')
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700, exist_ok=True)
                LOG.info('Created directory %s for the vmha journal',
                         directory)
        except OSError as error:
            raise JournalError(self.path, 'cannot create directory %s: %s'
                               % (directory, error.strerror or error),
                               'open')
        created = not os.path.exists(self.path)
        try:
            if created:
                # SQLite gives the -wal and -shm files the mode of the
                # database file: create it private, before SQLite does.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT |
                                 os.O_EXCL | os.O_CLOEXEC, 0o600))
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None,
                check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute('PRAGMA journal_mode=WAL').fetchone()
            if mode[0].lower() != 'wal':
                raise JournalError(self.path, 'SQLite refused WAL mode (got '
                                   '%r); put the journal on a local file '
                                   'system' % mode[0], 'open')
            self._conn.execute('PRAGMA synchronous=FULL')
            self._quick_check()
            self._migrate()
        except (sqlite3.Error, OSError, JournalError) as error:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if isinstance(error, JournalError):
                raise
            cause = _cause(error)
            if 'unable to open' in cause and os.path.exists(self.path) \
                    and not os.access(self.path, os.R_OK | os.W_OK):
                # SQLite says only "unable to open"; say why.
                cause += ': Permission denied for this user'
            raise JournalError(self.path, cause, 'open')
        if created:
            _fsync_directory(directory)
            LOG.info('Created the vmha journal %s', self.path)

    def _quick_check(self):
        problems = [row[0] for row in
                    self._conn.execute('PRAGMA quick_check')]
        if problems != ['ok']:
            raise JournalError(self.path, 'database disk image is malformed'
                               ' (quick_check: %s)' % '; '.join(problems[:3]),
                               'open')

    def _migrate(self):
        conn = self._conn
        conn.execute('BEGIN IMMEDIATE')
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'")}
            if tables and 'schema_version' not in tables:
                raise JournalError(
                    self.path, 'file is not a vmha journal: it has tables '
                    '(%s) but no schema_version'
                    % ', '.join(sorted(tables)[:5]), 'open')
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                                id INTEGER PRIMARY KEY CHECK (id = 1),
                                version INTEGER NOT NULL,
                                migrated_at REAL NOT NULL,
                                opened_at REAL NOT NULL)""")
            now = time.time()
            row = conn.execute(
                'SELECT version FROM schema_version WHERE id = 1').fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise JournalError(
                    self.path, 'schema version %d was written by a newer '
                    'vmha; this one knows up to %d'
                    % (version, SCHEMA_VERSION), 'open')
            for number in range(version + 1, SCHEMA_VERSION + 1):
                description, statements = MIGRATIONS[number - 1]
                for statement in statements:
                    conn.execute(statement)
                LOG.info('Journal %s: schema migrated to version %d (%s)',
                         self.path, number, description)
            # Written on every start, migrated or not: this write is the
            # check that the file is writable, made now rather than at the
            # first failure it should record.
            conn.execute(
                'INSERT INTO schema_version (id, version, migrated_at, '
                'opened_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE '
                'SET version = excluded.version, opened_at = '
                'excluded.opened_at, migrated_at = CASE WHEN '
                'schema_version.version = excluded.version THEN '
                'schema_version.migrated_at ELSE excluded.migrated_at END',
                (SCHEMA_VERSION, now, now))
            conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                conn.execute('ROLLBACK')
            raise
        self.schema_version = SCHEMA_VERSION

    # --- using --------------------------------------------------------------

    def transaction(self):
        """A context manager around one write transaction.

        ``with journal.transaction() as tx:`` begins IMMEDIATE (the write
        lock is taken at once, so the commit cannot fail on a lock
        upgrade), yields a ``Transaction``, commits when the block ends
        (durably: see the module docstring) and rolls back when it
        raises.  Keep the block to database work.
        """
        return _TransactionScope(self)

    def query(self, sql, params=()):
        """Rows (``sqlite3.Row``) of one read; inside a transaction of the
        same thread it sees that transaction's writes."""
        held = self._acquire()
        try:
            return self._run(
                lambda *args: self._conn.execute(*args).fetchall(),
                sql, params)
        finally:
            if held:
                self._release()

    def close(self):
        """Close the file; later calls raise JournalError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- internals ----------------------------------------------------------

    def _acquire(self, for_transaction=False):
        """Take the lock: True when taken (release it), False when this
        thread already holds it, inside its own transaction."""
        me = threading.get_ident()
        if self._owner == me:
            if for_transaction:
                raise JournalError(
                    self.path, 'a transaction is already open in this '
                    'thread (a nested transaction(), or one held across a '
                    'greenthread switch)', 'write')
            return False
        self._lock.acquire()
        self._owner = me
        if self._conn is None:
            self._release()
            raise JournalError(self.path, 'the journal is closed')
        return True

    def _release(self):
        self._owner = None
        self._lock.release()

    def write_failing_for(self):
        """Seconds since writes began to fail, or None since a commit."""
        since = self.write_failing_since
        return None if since is None else max(0.0, self._clock() - since)

    def _write_failed(self, error):
        self.failed_writes += 1
        self.last_write_error = str(error)
        if self.write_failing_since is None:
            self.write_failing_since = self._clock()

    def _write_succeeded(self):
        if self.write_failing_since is not None:
            LOG.warning('The vmha journal %s takes writes again after %.1fs',
                        self.path, self._clock() - self.write_failing_since)
            self.write_failing_since = None

    def _run(self, function, *args):
        try:
            return function(*args)
        except sqlite3.Error as error:
            raise JournalError(self.path, _cause(error))

    def _commit(self):
        try:
            self._conn.execute('COMMIT')
        except sqlite3.Error as error:
            self._rollback()
            raise JournalError(self.path, _cause(error), 'commit to')

    def _rollback(self):
        if self._conn is None or not self._conn.in_transaction:
            return
        try:
            self._conn.execute('ROLLBACK')
        except sqlite3.Error as error:
            LOG.error('Rollback in the vmha journal %s failed: %s',
                      self.path, error)


def _cause(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _fsync_directory(directory):
    # A new file's directory entry must be on disk too, or a power loss
    # can lose the whole file with every commit in it.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
