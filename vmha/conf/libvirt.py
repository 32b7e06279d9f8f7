"""Options of the [libvirt] group."""

from oslo_config import cfg

from vmha.conf import base

libvirt_group = cfg.OptGroup('libvirt', title='libvirt connection')

libvirt_opts = [
    cfg.StrOpt('connection_uri',
               default='qemu:///system',
               help="""
libvirt URI of the hypervisor to watch.

Possible values:

* ``qemu:///system`` (default): the host's QEMU/KVM domains, as nova uses.
* ``test:///default``: libvirt's daemon-less test driver, for the demo and
  tests.
"""),
    cfg.IntOpt('keepalive_interval',
               default=5,
               min=0,
               help="""
Seconds between keepalive probes to libvirtd; 0 disables keepalive.

With keepalive a hung libvirtd closes the connection after about
``keepalive_interval * (keepalive_count + 1)`` seconds, and vmha reconnects.
Drivers without keepalive (``test:///``) are used without it.

Related options:

* ``keepalive_count``
"""),
    cfg.IntOpt('keepalive_count',
               default=3,
               min=1,
               help="""
Keepalive probes without an answer before the connection is closed.

Related options:

* ``keepalive_interval``
"""),
    cfg.FloatOpt('reconnect_min_interval',
                 default=0.5,
                 min=0.01,
                 help="""
Seconds before the first reconnect attempt after the connection is lost.

Each later attempt waits up to twice as long as the one before, with
random jitter, up to ``reconnect_max_interval``.

Related options:

* ``reconnect_max_interval``
"""),
    cfg.FloatOpt('reconnect_max_interval',
                 default=30.0,
                 min=0.01,
                 help="""
Longest wait, in seconds, between two reconnect attempts.

Related options:

* ``reconnect_min_interval``
"""),
]


def register_opts(conf):
    base.register_group(conf, libvirt_group, libvirt_opts)


def list_opts():
    return {libvirt_group: libvirt_opts}
