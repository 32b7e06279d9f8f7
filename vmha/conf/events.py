"""Options of the [events] group."""

from oslo_config import cfg

from vmha.conf import base

events_group = cfg.OptGroup('events', title='Event pipeline')

events_opts = [
    cfg.FloatOpt('stopped_delay',
                 default=15.0,
                 min=0,
                 help="""
Seconds a STOPPED event is held back before it is delivered.

A later lifecycle event of the same domain within that time (a STARTED
after a hard reboot, say) cancels it, so a reboot is not mistaken for a
stop.  Definition changes (DEFINED, UNDEFINED) deliver it at once instead.
STOPPED_FAILED (QEMU died) and STOPPED_CRASHED (guest panic) are never
part of a reboot and are never held back.

Possible values:

* 0: deliver STOPPED at once.
* A positive number of seconds.
"""),
    cfg.IntOpt('queue_size',
               default=10000,
               min=1,
               help="""
Most events waiting for dispatch.

Past this bound new events are dropped, counted and logged, and listeners
get one RESYNC_REQUIRED event so that they re-read every domain's state
instead of trusting what they last saw.
"""),
]


def register_opts(conf):
    base.register_group(conf, events_group, events_opts)


def list_opts():
    return {events_group: events_opts}
