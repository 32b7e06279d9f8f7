"""Options of the [DEFAULT] group."""

import socket

from oslo_config import cfg

BACKENDS = ('eventlet', 'threading')

default_opts = [
    cfg.StrOpt('host',
               default=socket.gethostname(),
               sample_default='<current hostname>',
               help="""
Name of this compute host, as nova and Masakari know it.

Notifications carry it, and Masakari looks the host up by this name in its
failover segments, so it must match nova-compute's ``[DEFAULT] host``.

Possible values:

* A hostname, FQDN or any string nova uses for this host.
"""),
    cfg.StrOpt('concurrency_backend',
               default='eventlet',
               choices=[
                   ('eventlet', 'Events are dispatched in an eventlet '
                    'greenthread; the process is monkey patched.'),
                   ('threading', 'Events are dispatched in a native thread; '
                    'no monkey patching.'),
               ],
               help="""
How vmha runs concurrent work.

Both backends deliver the same events in the same order; choose the one
that matches the rest of the host (nova-compute runs on native threads by
default since 2026.2).  libvirt's event loop always runs in a native thread.
"""),
]


def register_opts(conf):
    conf.register_opts(default_opts)


def list_opts():
    return {'DEFAULT': default_opts}
