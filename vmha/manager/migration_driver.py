"""Driving live migrations: what the RPC API's ``live_migrate`` and
``migration_task`` call.

``MigrationDriver.live_migrate`` runs the virt driver's blocking
``live_migrate`` (libvirt's migrateToURI3, peer to peer: see
``vmha.virt.libvirt.migration.BASE_FLAGS``) on a ``NativePool`` of its
own, off the dispatcher, the eventlet hub and the RPC executor, and
tells the ``MigrationMonitor`` first (``drive``): the monitor then
applies nova's policy to it at each job-statistics read (the downtime
steps, the completion timeout and its action, the stall detection) and
concludes it, with its notifications.  When the call returns, the
monitor is told (``call_ended``) and reads libvirt's state to say how it
ended.

Operator tasks (``force_complete``, ``abort``, ``pause``) are queued on
the monitor's inbox and run at its next step, on its pool.

At most ``max_concurrent`` migrations out of this host at once (nova's
``max_concurrent_live_migrations``, 1 by default; here 2): a migration
asked beyond that is refused, never queued behind the others where it
could wait for hours unseen.
"""

import logging

from vmha.manager import migration_policy as policy

LOG = logging.getLogger(__name__)


class MigrationRefused(Exception):
    """The migration cannot start: unknown option, a migration of the
    domain already running, or too many at once."""


#: Migrations out of this host at once, at most.
MAX_CONCURRENT = 2

#: Options ``live_migrate`` accepts.
OPTIONS = ('block_migration', 'bandwidth_mib')


class MigrationDriver:
    """:param driver: the virt driver
    :param monitor: the ``MigrationMonitor``
    :param pool: a ``NativePool`` for the migration calls (each holds
        one thread for the whole migration)
    :param settings: the monitor's ``Settings`` (``[migration]``)
    """

    def __init__(self, driver, monitor, pool, settings,
                 max_concurrent=MAX_CONCURRENT):
        self._driver = driver
        self._monitor = monitor
        self._pool = pool
        self._settings = settings
        self.max_concurrent = max_concurrent
        self._running = {}  # uuid -> Job

    def live_migrate(self, uuid, name, destination_uri, options=None):
        """Start migrating ``uuid`` to ``destination_uri``; returns at
        once (the migration's progress and end are notified).  Raises
        MigrationRefused."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise MigrationRefused('unknown migration option(s) %s '
                                   '(known: %s)' % (', '.join(unknown),
                                                    ', '.join(OPTIONS)))
        if not isinstance(destination_uri, str) or \
                '://' not in destination_uri:
            raise MigrationRefused('the destination must be a libvirt URI '
                                   '(qemu+tls://host/system), not %r'
                                   % (destination_uri,))
        self._reap()
        if uuid in self._running or self._monitor.migrating(uuid):
            raise MigrationRefused('%s is already migrating' % uuid)
        if len(self._running) >= self.max_concurrent:
            raise MigrationRefused(
                '%d migration(s) already running from this host (at most '
                '%d at once)' % (len(self._running), self.max_concurrent))
        features = policy.features(self._settings.permit_post_copy,
                                   self._settings.permit_auto_converge)
        self._monitor.drive(uuid, name, destination_uri, features)
        LOG.info('%s (%s): live migration to %s started (features: %s)',
                 name, uuid, destination_uri,
                 ', '.join(sorted(features)) or 'none')
        self._running[uuid] = self._pool.submit(
            ('migrate', uuid), self._migrate, uuid, destination_uri,
            features, bool(options.get('block_migration')),
            options.get('bandwidth_mib'))
        return {'instance': uuid, 'destination': destination_uri,
                'features': sorted(features)}

    def _migrate(self, uuid, destination_uri, features, block, bandwidth):
        error = None
        try:
            self._driver.live_migrate(uuid, destination_uri, features,
                                      block_migration=block,
                                      bandwidth_mib=bandwidth)
        except Exception as failure:  # any: the monitor must hear of it
            error = str(failure) or failure.__class__.__name__
            LOG.warning('Live migration of %s to %s failed: %s', uuid,
                        destination_uri, error)
        self._monitor.call_ended(uuid, error)

    def task(self, uuid, task):
        """Queue an operator task for ``uuid``'s outgoing migration.
        Raises ValueError (unknown task, not migrating out)."""
        self._monitor.task(uuid, task)
        return {'instance': uuid, 'task': task, 'queued': True}

    def _reap(self):
        for uuid, job in list(self._running.items()):
            if job.done:
                del self._running[uuid]
        self._pool.collect()

    def stop(self):
        self._pool.close()
