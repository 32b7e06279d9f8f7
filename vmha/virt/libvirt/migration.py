"""Live-migration calls in libvirt's terms: the flags vmha migrates
with and job statistics turned into a hypervisor-neutral dict.

No policy here (``vmha.manager.migration_policy`` decides downtimes and
timeouts); only the translation between what the manager asks for and
libvirt's numbers, which are its stable ABI (no libvirt import needed).
"""

# virDomainMigrateFlags.
MIGRATE_LIVE = 1
MIGRATE_PEER2PEER = 2
MIGRATE_PERSIST_DEST = 8
MIGRATE_UNDEFINE_SOURCE = 16
MIGRATE_NON_SHARED_INC = 128
MIGRATE_AUTO_CONVERGE = 8192
MIGRATE_POSTCOPY = 32768

#: What every migration vmha starts uses, as nova's defaults do: live
#: (the guest runs during the copy), peer to peer (the source libvirtd
#: talks to the destination's itself, so the migration survives this
#: agent), persistent on the destination (a restart there keeps the
#: domain) and undefined on the source once done (the domain is defined
#: on one host only: two definitions would let an operator start it
#: twice on shared storage).
BASE_FLAGS = (MIGRATE_LIVE | MIGRATE_PEER2PEER | MIGRATE_PERSIST_DEST
              | MIGRATE_UNDEFINE_SOURCE)

# virDomainJobType and virDomainJobOperation.
JOB_NONE = 0
JOB_BOUNDED = 1
JOB_UNBOUNDED = 2
ACTIVE_JOBS = (JOB_BOUNDED, JOB_UNBOUNDED)
OPERATION_MIGRATION_IN = 4
OPERATION_MIGRATION_OUT = 5

# Typed parameter of virDomainMigrateToURI3.
PARAM_BANDWIDTH = 'bandwidth'


def flags(features=(), block_migration=False):
    """The virDomainMigrateFlags for ``features`` (a subset of
    {'postcopy', 'auto_converge'}, from ``migration_policy.features``).

    ``postcopy`` only allows a later switch (``start_postcopy``): the
    migration starts as a pre-copy either way.  ``block_migration``
    copies local disks too (incrementally, over disks the destination
    already created, as nova does)."""
    value = BASE_FLAGS
    if 'postcopy' in features:
        value |= MIGRATE_POSTCOPY
    if 'auto_converge' in features:
        value |= MIGRATE_AUTO_CONVERGE
    if block_migration:
        value |= MIGRATE_NON_SHARED_INC
    return value


def neutral_stats(stats, state_reason):
    """libvirt's ``virDomainGetJobStats`` dict as the manager reads it.

    ``active``: a migration (or another job) runs; ``direction``:
    'outgoing', 'incoming' or None (a job of another kind, or a libvirt
    that does not say); the figures are None when libvirt gave none;
    ``postcopy``: the domain is in post-copy (its state says so: the
    job statistics do not); ``state_reason``: the domain's state, read
    with the statistics (how a job that ended, ended).
    """
    def number(key):
        value = stats.get(key)
        return value if isinstance(value, int) and value >= 0 else None

    operation = stats.get('operation')
    direction = {OPERATION_MIGRATION_OUT: 'outgoing',
                 OPERATION_MIGRATION_IN: 'incoming'}.get(operation)
    return {
        'active': stats.get('type') in ACTIVE_JOBS,
        'direction': direction,
        'data_total': number('data_total'),
        'data_processed': number('data_processed'),
        'data_remaining': number('data_remaining'),
        'memory_total': number('memory_total'),
        'memory_dirty_rate': number('memory_dirty_rate'),
        'iteration': number('memory_iteration'),
        'downtime_ms': number('downtime'),
        'elapsed_ms': number('time_elapsed'),
        'postcopy': 'POSTCOPY' in state_reason
                    and 'POSTCOPY_FAILED' not in state_reason,
        'state_reason': state_reason,
    }
