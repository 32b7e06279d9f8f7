"""Options of the [bridge] group: vmha-masakari-bridge, its duplicate
memory, its local HTTP endpoint and the bounds behind its /healthz."""

from oslo_config import cfg

from vmha.conf import base

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
    cfg.HostAddressOpt('listen_host',
                       default='127.0.0.1',
                       help="""
Address the bridge's local HTTP endpoint (``/healthz``, ``/metrics``)
listens on.

The endpoint has no authentication.  Keep it on the loopback unless a
firewall guards the address.

Related options:

* ``[bridge] port``
"""),
    cfg.PortOpt('port',
                default=8918,
                help="""
TCP port of the bridge's local HTTP endpoint.

Prometheus scrapes ``/metrics``; a load balancer or a monitoring check
can poll ``/healthz`` (200 when healthy, 503 otherwise).  The default is
not the agent's ``[health] port`` (8917), so that an agent and a bridge
can run on one host.

Possible values:

* A port number.
* 0: no HTTP endpoint.

Related options:

* ``[bridge] listen_host``
* ``[health] port``: the agent's endpoint
"""),
    cfg.FloatOpt('stall_timeout',
                 default=300.0,
                 min=1.0,
                 help="""
Seconds a notification may stay in the bridge's hands (received from the
bus, not yet acknowledged or requeued) before the bridge counts as wedged.

Handling one failure takes at most ``[masakari] timeout`` times
``[masakari] retry_max + 1`` plus the retry waits; a notification held
much longer means the executor threads are stuck.  Then ``/healthz``
answers 503 and the bridge stops sending ``WATCHDOG=1`` to systemd, which
restarts it.

Related options:

* ``[masakari] timeout``, ``retry_max``, ``retry_interval``: keep this
  above the longest handling they allow
* ``WatchdogSec`` in ``etc/systemd/vmha-masakari-bridge.service``
"""),
    cfg.FloatOpt('masakari_failing_timeout',
                 default=300.0,
                 min=0.0,
                 help="""
Seconds Masakari may keep failing (no answer, or an answer other than
2xx, 400 or 409, after every retry) before ``/healthz`` answers 503.

The failures wait on the bus meanwhile (requeued), so nothing is lost,
but none is recovered either.  The systemd watchdog does not depend on
this check: restarting the bridge would not bring Masakari back.

Possible values:

* 0: unhealthy from the first failed request until Masakari answers.
* A number of seconds.

Related options:

* ``[masakari] retry_max``, ``retry_interval``
"""),
    cfg.IntOpt('bad_message_log_rate',
               default=10,
               min=1,
               help="""
Most log lines per minute about bad messages on the bridge's queue.

A bad message (one oslo.messaging cannot decode, a notification without
a valid priority or message id, a malformed ``instance.failure``) is
dropped with one WARNING line naming what is known of it.  Beyond this
many lines in a minute the bridge only counts them, and says once how
many it did not log; ``vmha_bridge_bad_messages_total`` counts them all.
A broken or hostile publisher thus cannot fill the disk.
"""),
]


def register_opts(conf):
    base.register_group(conf, bridge_group, bridge_opts)


def list_opts():
    return {bridge_group: bridge_opts}
