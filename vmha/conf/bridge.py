"""Options of the [bridge] group: vmha-masakari-bridge."""

import copy

from oslo_config import cfg

bridge_group = cfg.OptGroup('bridge', title='vmha-masakari-bridge')

bridge_opts = [
    cfg.StrOpt('pool',
               default='vmha-masakari-bridge',
               help="""
Listener pool the bridge consumes in.

Every bridge with the same pool name shares one queue: each notification
goes to one of them, so any number of copies can run for availability.
Bridges with different pool names each get every notification (and
forward each failure again; Masakari then answers 409 within its 180 s
duplicate window).
"""),
    cfg.IntOpt('executor_threads',
               default=8,
               min=1,
               help="""
Notifications the bridge handles at once (oslo.messaging threading
executor pool size).

Each one may wait on Masakari for up to ``[masakari] timeout`` times
``[masakari] retry_max + 1`` plus the retry waits.
"""),
    cfg.IntOpt('dedupe_size',
               default=10000,
               min=1,
               help="""
Most message ids the bridge remembers as forwarded.

A notification whose message id is remembered is acknowledged without
being forwarded again (the bus may deliver one twice; the agent resends a
notification whose delivery it could not confirm).  The oldest ids are
forgotten first.  About 100 bytes each.

Related options:

* ``dedupe_window``
"""),
    cfg.IntOpt('dedupe_window',
               default=86400,
               min=0,
               help="""
Seconds a forwarded message id is remembered.

Possible values:

* 0: remember nothing (every delivery is forwarded; Masakari's own
  duplicate check still answers 409 within 180 s).
* A number of seconds; ids also go when ``dedupe_size`` is reached.

Related options:

* ``dedupe_size``
"""),
]


def register_opts(conf):
    # A copy per ConfigOpts: register_group copies the group shallowly, so
    # a shared OptGroup would share option overrides between them.
    conf.register_group(copy.deepcopy(bridge_group))
    conf.register_opts(bridge_opts, group=bridge_group)


def list_opts():
    return {bridge_group: bridge_opts}
