"""The bridge's state file: the recoveries it follows, across restarts.

One small SQLite file (``[bridge] state_file``), one row per forwarded
failure episode (instance, episode): Masakari's notification id, the
status last seen and last published, and when to poll next.  A bridge
that restarts reads it and goes on polling where it left off; a status
seen but not yet published (the bus was down, the bridge died) is
published after the restart, so every change reaches the bus at least
once.

One bridge per file.  Copies of the bridge share the work of forwarding
(one listener pool), and each copy follows the failures *it* forwarded,
in its own file: the copy that got Masakari's 202 is the only one that
knows the id.  The file is locked (``flock``) for as long as the bridge
runs, so a second copy pointed at the same file refuses to start rather
than double every ``instance.recovery``.  A copy that is gone for good
takes its followed recoveries with it until it (or its file, on another
host) comes back; the failures themselves were delivered.

Rows are kept ``KEEP_FINISHED`` seconds after their outcome, then
pruned.
"""

import collections
import fcntl
import json
import logging
import os
import sqlite3
import threading

LOG = logging.getLogger(__name__)

#: Seconds a settled recovery stays in the file (for /status).
KEEP_FINISHED = 7 * 86400

Followed = collections.namedtuple('Followed', [
    'uuid', 'episode', 'host', 'notification_uuid', 'detected_at',
    'accepted_at', 'status', 'reason', 'masakari_status', 'error_since',
    'next_poll_at', 'interval', 'polls', 'get_failures', 'published_status',
    'details', 'changed_at', 'final'])

_COLUMNS = ', '.join(Followed._fields)

_SCHEMA = """CREATE TABLE IF NOT EXISTS followed (
    uuid TEXT NOT NULL,
    episode TEXT NOT NULL,
    host TEXT NOT NULL,
    notification_uuid TEXT,
    detected_at REAL NOT NULL,
    accepted_at REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    masakari_status TEXT,
    error_since REAL,
    next_poll_at REAL,
    interval REAL NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    get_failures INTEGER NOT NULL DEFAULT 0,
    published_status TEXT,
    details TEXT,
    changed_at REAL NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (uuid, episode))"""


class StateFileError(Exception):
    """The state file cannot be opened, locked or written (one line)."""


class RecoveryStore:
    """The state file, opened, locked and created if missing.

    :param path: the file (``[bridge] state_file``); its directory is
        created (mode 0700) when missing
    :raises StateFileError: cannot be opened, or another bridge holds it
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn = None
        self._lock_fd = None
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._lock_fd = os.open(self.path + '.lock',
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                    0o600)
        except OSError as error:
            raise StateFileError('cannot open the bridge state file %s: %s'
                                 % (self.path, error)) from error
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StateFileError(
                'the bridge state file %s is in use by another '
                'vmha-masakari-bridge; give each copy a [bridge] '
                'state_file of its own' % self.path) from None
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute('PRAGMA journal_mode=WAL')
            self._conn.execute('PRAGMA synchronous=FULL')
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as error:
            self.close()
            raise StateFileError('cannot use the bridge state file %s: %s'
                                 % (self.path, error)) from error

    def close(self):
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _run(self, sql, params=()):
        with self._lock:
            if self._conn is None:
                raise StateFileError('the bridge state file %s is closed'
                                     % self.path)
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StateFileError('cannot write the bridge state file '
                                     '%s: %s' % (self.path, error)) from error

    def add(self, record):
        """A newly forwarded failure (a ``Followed``).  A second answer
        for the same (instance, episode) keeps the first row: the first
        answer is the one Masakari acts on (a redelivery gets 409)."""
        values = record._replace(details=_dump(record.details))
        self._run('INSERT INTO followed (%s) VALUES (%s) ON CONFLICT DO '
                  'NOTHING' % (_COLUMNS, ', '.join('?' * len(values))),
                  tuple(values))

    def get(self, uuid, episode):
        rows = self._run('SELECT %s FROM followed WHERE uuid = ? AND '
                         'episode = ?' % _COLUMNS, (uuid, episode))
        return _load(rows[0]) if rows else None

    def save(self, record):
        """Write every field of ``record`` (its row exists)."""
        fields = [f for f in Followed._fields if f not in ('uuid', 'episode')]
        values = record._replace(details=_dump(record.details))._asdict()
        self._run('UPDATE followed SET %s WHERE uuid = ? AND episode = ?'
                  % ', '.join('%s = ?' % f for f in fields),
                  tuple(values[f] for f in fields)
                  + (record.uuid, record.episode))

    def due(self, now):
        """Rows with something to do: a poll due, or a status to publish."""
        rows = self._run(
            'SELECT %s FROM followed WHERE (final = 0 AND next_poll_at <= ?) '
            'OR published_status IS NULL OR published_status != status '
            'ORDER BY changed_at' % _COLUMNS, (now,))
        return [_load(row) for row in rows]

    def all(self):
        return [_load(row) for row in self._run(
            'SELECT %s FROM followed ORDER BY accepted_at' % _COLUMNS)]

    def prune(self, now, keep=KEEP_FINISHED):
        """Forget settled, published recoveries older than ``keep``."""
        self._run('DELETE FROM followed WHERE final = 1 AND '
                  'published_status = status AND changed_at < ?',
                  (now - keep,))


def _dump(details):
    return None if details is None else json.dumps(details)


def _load(row):
    record = Followed(*row)
    if record.details is not None:
        try:
            record = record._replace(details=json.loads(record.details))
        except ValueError:
            record = record._replace(details=None)
    return record
