"""Options of the [migration] group: watching and driving live migrations.

The defaults are nova's (``[libvirt] live_migration_*``) for the
downtime steps, the completion timeout and its action, and KubeVirt's
for the progress timeout.  The rules that use them are in
``vmha.manager.migration_policy``.
"""

from oslo_config import cfg

from vmha.conf import base

migration_group = cfg.OptGroup('migration', title='Live migration')

migration_opts = [
    cfg.FloatOpt('progress_interval',
                 default=5.0,
                 min=0.5,
                 max=60.0,
                 help="""
Seconds between two reads of an outgoing migration's job statistics
(data total, processed and remaining, dirty rate, iteration, downtime).

Each read is one libvirt call per migrating domain; the downtime steps,
the completion timeout and the progress timeout are checked at each
read, so they act at most this late.

Possible values:

* 0.5 to 60.
"""),
    cfg.IntOpt('progress_timeout',
               default=150,
               min=0,
               max=86400,
               help="""
Seconds without progress after which a migration is stalled and the
``timeout_action`` is taken.

Progress means the data remaining went below 96 % of its lowest point
over the previous ``progress_timeout`` seconds, or a memory iteration
began with less to send than the one before: the data remaining is a
saw tooth, so a rise alone is not a stall.  Each new downtime step
restarts the count.  A migration in post-copy is never stalled.

Possible values:

* 0: no stall detection (nova's behaviour: only the completion timeout
  acts).
* A number of seconds up to 86400.

Related options:

* ``timeout_action``
* ``downtime_delay``: with large guests the steps are further apart than
  this timeout, so a migration that does not converge at one step is
  acted on before the next.
"""),
    cfg.IntOpt('completion_timeout',
               default=800,
               min=0,
               max=86400,
               help="""
Seconds per GiB of data to move within which a migration must complete,
after which the ``timeout_action`` is taken.

The data is the guest's RAM plus each block-migrated disk, each counted
at least 2 GiB (nova's rule): 1600 s for a 1 GiB guest, 6400 s for an
8 GiB one.  Not applied once the migration is in post-copy.

Possible values:

* 0: no completion timeout.
* A number of seconds per GiB up to 86400.

Related options:

* ``timeout_action``
"""),
    cfg.StrOpt('timeout_action',
               default='abort',
               choices=[
                   ('abort', 'Abort the migration; the VM runs on, on the '
                             'source.'),
                   ('force_complete',
                    'Switch to post-copy if ``permit_post_copy``, else '
                    'pause the guest until the migration completes (it '
                    'is resumed if the migration then fails).'),
               ],
               help="""
What vmha does with a migration past its completion timeout or stalled.

A migration still making no progress ``progress_timeout`` seconds after
a force-complete is aborted, so a guest is never left paused.

Related options:

* ``completion_timeout``
* ``progress_timeout``
* ``permit_post_copy``
"""),
    cfg.IntOpt('downtime',
               default=500,
               min=100,
               max=60000,
               help="""
Maximum downtime of the switch-over, in milliseconds, reached at the
last downtime step.

vmha starts a migration at ``downtime / downtime_steps`` and raises it
linearly: step ``i`` (0 to ``downtime_steps``) is
``downtime * (steps + i * (steps - 1)) / steps**2`` ms, set after
``i * downtime_delay * GiB`` seconds.

Possible values:

* 100 to 60000 (nova's minimum is 100).

Related options:

* ``downtime_steps``
* ``downtime_delay``
"""),
    cfg.IntOpt('downtime_steps',
               default=10,
               min=3,
               max=1000,
               help="""
Number of increments to reach ``downtime``.

Possible values:

* 3 to 1000 (nova's minimum is 3).

Related options:

* ``downtime``
* ``downtime_delay``
"""),
    cfg.IntOpt('downtime_delay',
               default=75,
               min=3,
               max=86400,
               help="""
Seconds per GiB of data to move between two downtime steps.

The data is counted as for ``completion_timeout``: with the default a
1 GiB guest's steps are 150 s apart, an 8 GiB guest's 600 s.

Possible values:

* 3 to 86400 (nova's minimum is 3).

Related options:

* ``downtime``
* ``downtime_steps``
"""),
    cfg.BoolOpt('permit_post_copy',
                default=False,
                help="""
Allow migrations vmha drives to switch to post-copy when forced to
complete.

In post-copy the guest runs on the destination at once and fetches the
memory it still lacks from the source: the migration always completes,
but if the network or either host fails meanwhile the VM is lost (vmha
then reports it as failed).  Takes precedence over
``permit_auto_converge``.

Related options:

* ``timeout_action``
* ``permit_auto_converge``
"""),
    cfg.BoolOpt('permit_auto_converge',
                default=False,
                help="""
Allow migrations vmha drives to slow the guest's vCPUs down so that it
dirties memory slower than the link sends it.

Used only when ``permit_post_copy`` is off.

Related options:

* ``permit_post_copy``
"""),
]


def register_opts(conf):
    base.register_group(conf, migration_group, migration_opts)


def list_opts():
    return {migration_group: migration_opts}
