"""Options of the [database] group: vmha's local journal."""

from oslo_config import cfg

from vmha.conf import base

database_group = cfg.OptGroup('database', title='Local journal')

database_opts = [
    cfg.StrOpt('path',
               default='/var/lib/vmha/vmha.sqlite',
               help="""
SQLite file holding vmha's state and the outbox of notifications.

Created on first start, with its directory (mode 0700) when missing.  The
file is in WAL mode, so ``<path>-wal`` and ``<path>-shm`` live beside it and
the directory must be writable.  A corrupt or unwritable file stops
vmha-agent at start-up with an error naming the file; vmha never falls back
to keeping its state in memory.  Keep it on a local file system.

Possible values:

* An absolute path writable by the user vmha-agent runs as.

Related options:

* ``retention``
"""),
    cfg.IntOpt('retention',
               default=7 * 24 * 3600,
               min=0,
               help="""
Seconds a delivered notification is kept in the journal before it is
deleted.

Undelivered notifications are never deleted, whatever their age.  Kept
rows show what was reported and when.

Possible values:

* 0: delete delivered notifications at the next prune (about once a
  minute).
* A positive number of seconds (default: 7 days).

Related options:

* ``path``
"""),
]


def register_opts(conf):
    base.register_group(conf, database_group, database_opts)


def list_opts():
    return {database_group: database_opts}
