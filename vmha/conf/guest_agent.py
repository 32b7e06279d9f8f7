"""Options of the [guest_agent] group: pinging guests through qemu-ga."""

from oslo_config import cfg

from vmha.conf import base

guest_agent_group = cfg.OptGroup(
    'guest_agent', title='Guest-agent monitor (hung guests)')

ACTIONS = ('notify', 'reset', 'restart')

# Bounds of the per-VM settings, checked here and in each domain's
# metadata (``vmha.manager.selection``): above them a guest is, for all
# practical purposes, never judged, which nobody asks for on purpose.
INTERVAL_MIN, INTERVAL_MAX = 0.5, 3600.0
TIMEOUT_MIN, TIMEOUT_MAX = 0.1, 600.0
FAILURE_THRESHOLD_MIN, FAILURE_THRESHOLD_MAX = 1, 100

guest_agent_opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help="""
Ping every running, monitored domain that has a QEMU guest agent channel
(``<channel type='unix'><target type='virtio'
name='org.qemu.guest_agent.0'/></channel>``) and report guests that stop
answering while libvirt still says "running".
"""),
    cfg.FloatOpt('interval',
                 default=5.0,
                 min=INTERVAL_MIN,
                 max=INTERVAL_MAX,
                 help="""
Seconds between two pings of one guest.

With the defaults (interval 5, timeout 2, threshold 2) a guest that
hangs is reported within about 2 x interval + timeout (12 s) plus the
time to read its counters.

Possible values:

* 0.5 to 3600.  A domain's ``<vmha:guest-agent interval=.../>`` metadata
  is held to the same bounds; a value outside them is ignored with a
  warning naming the domain.
"""),
    cfg.FloatOpt('timeout',
                 default=2.0,
                 min=TIMEOUT_MIN,
                 max=TIMEOUT_MAX,
                 help="""
Seconds a guest has to answer one guest-ping.

libvirt rounds it up to whole seconds.  Once a ping of a guest timed
out, libvirt answers the next ones for that guest only after about 5 s,
whatever this says: vmha then counts a failure when the timeout passes
instead of waiting for libvirt.  Must be less than ``interval``.

Possible values:

* 0.1 to 600, less than ``interval`` (in a domain's metadata too).

Related options:

* ``interval``
"""),
    cfg.IntOpt('failure_threshold',
               default=2,
               min=FAILURE_THRESHOLD_MIN,
               max=FAILURE_THRESHOLD_MAX,
               help="""
Consecutive failed pings after which the guest is judged (host-side
evidence, then a failure or a warning notification).

Possible values:

* 1 to 100 (in a domain's metadata too).
"""),
    cfg.FloatOpt('discovery_timeout',
                 default=300.0,
                 min=1.0,
                 help="""
Seconds after a boot within which the guest agent should first answer.
A guest whose agent never answers by then gets one warning notification
(``guest.health``, state ``discovery``); it is never reported as failed
before its agent answered once.
"""),
    cfg.IntOpt('max_concurrent_pings',
               default=32,
               min=1,
               help="""
Most pings of healthy guests in flight at once (and the other
guest-agent calls: the counters read before a verdict).  A ping of a
guest known to be failing, or one not answered within 0.1 s, counts
against ``max_suspect_pings`` instead, so hung guests never take these
slots.

Each call holds one libvirtd worker thread until the guest answers or
times out.  libvirtd runs at most ``max_workers`` calls at once for all
its clients (libvirtd.conf, default 20) and nova-compute needs some of
them: set ``max_workers`` to at least this value plus
``max_suspect_pings`` plus 20 (180 for the defaults; the agent warns at
start-up when it reads less).  Calls beyond libvirtd's limits wait in
libvirtd: late, never counted as failures.
"""),
    cfg.IntOpt('max_suspect_pings',
               default=128,
               min=0,
               help="""
Most guest-agent pings in flight at once for guests known to be failing
(a ping missed, or a failure reported), and for pings that have not
been answered within 0.1 s, besides ``max_concurrent_pings``.

Once a guest missed a ping, libvirt holds each of its next pings about
5 s whatever the timeout.  Those pings run on this budget of their own,
so hung guests never take the slots of healthy ones: with the defaults,
100 of 1,000 guests hanging at once still leave every healthy guest
pinged on time, and each hung guest's next ping (its verdict) is sent
on time.  0: every ping shares ``max_concurrent_pings`` (then hung
guests delay the healthy ones).

Each call holds a libvirtd worker thread: for the budgets to hold on a
real host, libvirtd's ``max_workers`` must be at least
``max_concurrent_pings + max_suspect_pings`` plus what nova-compute
needs (about 20); calls beyond it wait in libvirtd (late, never counted
as failures).  The agent warns at start-up when the libvirtd
configuration it can read has less.
"""),
    cfg.IntOpt('max_client_requests',
               default=5,
               min=1,
               help="""
libvirtd's ``max_client_requests`` (libvirtd.conf, default 5): how many
calls libvirtd serves at once on one client connection.  vmha opens
``max_concurrent_pings / max_client_requests`` extra connections for
guest-agent calls so that pings never queue behind each other; set the
same value as libvirtd.
"""),
    cfg.StrOpt('action',
               default='notify',
               choices=[
                   ('notify', 'Send the failure notification; Masakari '
                              'recovers the instance.'),
                   ('reset', 'Reset the guest (virDomainReset) and notify; '
                             'no failure goes to Masakari.'),
                   ('restart', 'Destroy and start the domain again and '
                               'notify; no failure goes to Masakari.'),
               ],
               help="""
What vmha does with a guest it judged hung.

``reset`` and ``restart`` act only within ``action_budget`` and after
``action_min_uptime``; otherwise vmha notifies (the failure goes to
Masakari) and the notification says why it did not act.
"""),
    cfg.IntOpt('action_budget',
               default=3,
               min=1,
               help="""
Most corrective actions (reset or restart) per guest within
``action_window`` seconds.
"""),
    cfg.FloatOpt('action_window',
                 default=3600.0,
                 min=1.0,
                 help='Seconds over which ``action_budget`` counts.'),
    cfg.FloatOpt('action_min_uptime',
                 default=300.0,
                 min=0.0,
                 help="""
Seconds a guest must have run (since vmha saw it boot, or since vmha
started watching it) before vmha resets or restarts it: a guest that
hangs again right after a restart is not restarted in a loop.
"""),
]


def register_opts(conf):
    base.register_group(conf, guest_agent_group, guest_agent_opts)


def list_opts():
    return {guest_agent_group: guest_agent_opts}
