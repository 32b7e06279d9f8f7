"""Options of the [outbox] group: sending stored notifications."""

from oslo_config import cfg

from vmha.conf import base

outbox_group = cfg.OptGroup('outbox', title='Notification outbox sender')

outbox_opts = [
    cfg.FloatOpt('retry_min_interval',
                 default=0.5,
                 min=0.01,
                 help="""
Seconds before the first retry after a notification could not be sent.

Notifications go out in order: while the oldest one fails, the later ones
wait behind it.  Each later attempt waits up to twice as long as the one
before, with random jitter, up to ``retry_max_interval``.

Possible values:

* A positive number of seconds.

Related options:

* ``retry_max_interval``
"""),
    cfg.FloatOpt('retry_max_interval',
                 default=30.0,
                 min=0.01,
                 help="""
Longest wait, in seconds, between two attempts to send a notification.

It bounds how late a notification can arrive once its destination is back.

Possible values:

* A positive number of seconds, at least ``retry_min_interval``.

Related options:

* ``retry_min_interval``
"""),
    cfg.IntOpt('batch_size',
               default=100,
               min=1,
               help="""
Most undelivered notifications sent in one pass.

They are sent one by one, in order, and marked delivered together at the
end of the pass (one disk sync).  An agent killed in the middle of a pass
sends at most this many again at its next start, with the same message
ids, which consumers drop.

Possible values:

* A positive integer.
"""),
]


def register_opts(conf):
    base.register_group(conf, outbox_group, outbox_opts)


def list_opts():
    return {outbox_group: outbox_opts}
