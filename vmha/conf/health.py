"""Options of the [health] group: the local HTTP endpoint and the bounds
behind /healthz and the systemd watchdog."""

from oslo_config import cfg

from vmha.conf import base

health_group = cfg.OptGroup('health', title='Health, metrics and status '
                                             'endpoint')

health_opts = [
    cfg.HostAddressOpt('listen_host',
                       default='127.0.0.1',
                       help="""
Address the local HTTP endpoint (``/healthz``, ``/metrics``, ``/status``)
listens on.

The endpoint has no authentication: it shows every domain's name and
state.  Keep it on the loopback unless a firewall guards the address.

Related options:

* ``[health] port``
"""),
    cfg.PortOpt('port',
                default=8917,
                help="""
TCP port of the local HTTP endpoint.

``vmha-status`` reads ``/status`` there; Prometheus scrapes ``/metrics``;
a load balancer or a monitoring check can poll ``/healthz`` (200 when
healthy, 503 otherwise).

Possible values:

* A port number.
* 0: no HTTP endpoint (``vmha-status --rpc`` still works).
"""),
    cfg.FloatOpt('stall_timeout',
                 default=20.0,
                 min=2.0,
                 help="""
Seconds the event dispatcher, the power-state audit loop or the
guest-agent monitor loop may go without turning over before the agent
counts as wedged.

Each wakes at least once a second when idle, so a longer silence means one
is stuck (a listener blocking, a libvirt call that never returns).  Then
``/healthz`` answers 503 and the agent stops sending ``WATCHDOG=1`` to
systemd, which restarts it once ``WatchdogSec`` passes.  (A journal that
cannot be written does the same at once, with no delay of its own.)

Possible values:

* Seconds, at least 2.

Related options:

* ``WatchdogSec`` in ``etc/systemd/vmha-agent.service``: keep it above
  this value.
"""),
    cfg.FloatOpt('disconnected_timeout',
                 default=60.0,
                 min=0.0,
                 help="""
Seconds the libvirt connection may stay lost before ``/healthz`` answers
503.

vmha reconnects by itself; while it cannot, it sees no event.  The
systemd watchdog does not depend on this check: restarting vmha would not
bring libvirtd back.

Related options:

* ``[libvirt] reconnect_max_interval``
"""),
]


def register_opts(conf):
    base.register_group(conf, health_group, health_opts)


def list_opts():
    return {health_group: health_opts}
