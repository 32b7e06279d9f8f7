"""Options of the [bridge] group: vmha-masakari-bridge, its duplicate
memory, its local HTTP endpoint, the bounds behind its /healthz, and how
it follows each forwarded failure to its recovery."""

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
    cfg.StrOpt('state_file',
               default='/var/lib/vmha/bridge-recoveries.sqlite',
               help="""
SQLite file where the bridge keeps the recoveries it follows.

Masakari's notification id of every failure the bridge forwarded, and
what Masakari last said about it, so that a restarted bridge goes on
following them.  One file per bridge copy: a copy that finds the file
locked by another one refuses to start.  Each copy follows the failures
it forwarded.
"""),
    cfg.FloatOpt('recovery_poll_interval',
                 default=2.0,
                 min=0.1,
                 help="""
Seconds from Masakari's 202 to the first look at the recovery
(``GET /v1/notifications/{id}``), and after each change.

Each look that sees no change (or fails) doubles the wait, up to
``recovery_poll_max_interval``.

Related options:

* ``recovery_poll_max_interval``
"""),
    cfg.FloatOpt('recovery_poll_max_interval',
                 default=60.0,
                 min=0.1,
                 help="""
Longest wait between two looks at one recovery.

Related options:

* ``recovery_poll_interval``
"""),
    cfg.FloatOpt('recovery_give_up',
                 default=6.0,
                 min=0.0,
                 help="""
Hours after which a recovery without an outcome is no longer followed.

The bridge then publishes ``instance.recovery`` ``failed``, saying that
Masakari gave no outcome in time.  masakari-engine itself marks a
notification that stays running or in error for
``notifications_expired_interval`` (24 h) failed.
"""),
    cfg.FloatOpt('recovery_error_timeout',
                 default=300.0,
                 min=0.0,
                 help="""
Seconds Masakari may report a recovery in ``error`` before the bridge
takes it as failed.

masakari-engine retries an errored notification from a periodic task
(``process_unfinished_notifications_interval``, 120 s) and marks it
failed itself when the retry errors too; an error that lasts longer than
two of its periods means no engine retries it.
"""),
    cfg.BoolOpt('tell_agents',
                default=True,
                help="""
Tell the failed VM's vmha-agent about each change of its recovery, by an
RPC cast on ``[DEFAULT] transport_url`` (topic ``vmha-agent``, server:
the agent's host), so that ``vmha-status`` shows it.

Needs ``[DEFAULT] transport_url`` and agents with ``[rpc] enabled``.
The ``instance.recovery`` notifications are published either way.
"""),
]


def register_opts(conf):
    base.register_group(conf, bridge_group, bridge_opts)


def list_opts():
    return {bridge_group: bridge_opts}
