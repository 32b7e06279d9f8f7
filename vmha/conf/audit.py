"""Options of the [audit] group."""

from oslo_config import cfg

from vmha.conf import base

audit_group = cfg.OptGroup('audit', title='Power-state audit')

audit_opts = [
    cfg.IntOpt('interval',
               default=60,
               help="""
Seconds between two power-state audits.

The audit lists every domain with its state, compares it with what the
journal last knew, and reports the failures events missed (a crash while
the agent or libvirtd was down, a lost event).  It also runs at start-up,
right after the libvirt connection is restored, and when events were
dropped, whatever this value.

Possible values:

* A positive number of seconds.
* 0 or a negative number: no periodic audit (the others still run).
"""),
    cfg.FloatOpt('settle_time',
                 default=10.0,
                 min=0.0,
                 max=300.0,
                 help="""
Seconds to keep auditing after the libvirt connection is restored.

A libvirtd that has just started lists every domain as it last knew it
while it reconnects to their QEMU processes: a QEMU killed meanwhile
still shows as running for a second or so, then ends "shut off
(daemon)" or "shut off (crashed)" with no lifecycle event.  The audit
therefore runs again every ``settle_interval`` seconds for this long, so
such a death is reported within this time of libvirtd answering again
rather than at the next periodic audit.

Possible values:

* 0: only the one audit right after the reconnect.
* A number of seconds up to 300.

Related options:

* ``settle_interval``
* ``interval``
"""),
    cfg.FloatOpt('settle_interval',
                 default=2.0,
                 min=0.1,
                 max=60.0,
                 help="""
Seconds between two audits while the connection settles (see
``settle_time``).  Each audit is one domain listing.

Possible values:

* A number of seconds from 0.1 to 60.

Related options:

* ``settle_time``
"""),
]


def register_opts(conf):
    base.register_group(conf, audit_group, audit_opts)


def list_opts():
    return {audit_group: audit_opts}
