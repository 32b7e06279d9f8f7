"""Options of the [audit] group."""

import copy

from oslo_config import cfg

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
]


def register_opts(conf):
    # A copy per ConfigOpts: register_group copies the group shallowly, so
    # a shared OptGroup would share option overrides between them.
    conf.register_group(copy.deepcopy(audit_group))
    conf.register_opts(audit_opts, group=audit_group)


def list_opts():
    return {audit_group: audit_opts}
