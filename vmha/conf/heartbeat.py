"""Options of the [heartbeat] group: the guest heartbeat channel.

The bounds an operator sets here clamp what each guest asks for in its
``init`` (doc/heartbeat-protocol.md); ``validate`` checks that they are
consistent with one another, so a bad combination stops the agent at
start-up with one line instead of surprising a guest later.
"""

from oslo_config import cfg

from vmha.conf import base

heartbeat_group = cfg.OptGroup(
    'heartbeat', title='Guest heartbeat (challenge/response channel)')

# Least to most drastic: ``max_action`` caps a guest's wish to "no more
# drastic than" this.
ACTIONS = ('log', 'reboot', 'stop')

heartbeat_opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help="""
Serve the guest heartbeat.  A running domain opts in by having a
virtio-serial channel named ``channel_name`` (``<channel type='unix'>
<source mode='bind'/><target type='virtio' name='org.vmha.heartbeat.0'/>
</channel>``); vmha connects to the host end of its unix socket.  A
domain without that channel is never touched.

Related options:

* ``channel_name``
"""),
    cfg.StrOpt('channel_name',
               default='org.vmha.heartbeat.0',
               help="""
The ``<target name=...>`` of the virtio-serial channel the heartbeat
uses.  In the guest it is ``/dev/virtio-ports/<channel_name>``.
"""),
    cfg.FloatOpt('default_interval',
                 default=1.0,
                 min=0.1,
                 max=3600.0,
                 help="""
Seconds between two challenges when the guest does not say which
interval it wishes.

Possible values:

* Between ``min_interval`` and ``max_interval``.
"""),
    cfg.FloatOpt('min_interval',
                 default=0.4,
                 min=0.1,
                 max=3600.0,
                 help="""
The shortest challenge interval a guest is granted (a guest asking for
less gets this).

Related options:

* ``max_interval``, ``default_interval``
"""),
    cfg.FloatOpt('max_interval',
                 default=10.0,
                 min=0.1,
                 max=3600.0,
                 help="""
The longest challenge interval a guest is granted (a guest asking for
more gets this).  A hung guest is found after about
``miss_threshold`` intervals.

Related options:

* ``min_interval``, ``miss_threshold``
"""),
    cfg.IntOpt('miss_threshold',
               default=2,
               min=1,
               max=100,
               help="""
Consecutive challenges a guest leaves unanswered within the interval
before its heartbeat is declared lost (a failure).  A challenge the host
itself sent late (by more than half an interval: a busy host) counts no
miss.
"""),
    cfg.FloatOpt('answer_window',
                 default=0.5,
                 min=0.1,
                 max=1.0,
                 help="""
The part of the granted interval a guest has to answer a challenge
before the challenge counts as missed (1.0: until the next challenge is
due).  With the defaults (1 s, 0.5, ``miss_threshold`` 2) a hung guest is
declared lost 1.5-2.5 s after it stopped; a healthy guest answers in
milliseconds (3.5 ms median measured on a TCG guest), so half a second
is a wide margin even when the host is busy.

Related options:

* ``miss_threshold``
"""),
    cfg.StrOpt('max_action',
               default='reboot',
               choices=[
                   ('log', 'Never act: a failure is reported to Masakari '
                           '(which recovers the instance).'),
                   ('reboot', 'vmha may hard-reset a failed guest that '
                              'asked for it; no report to Masakari.'),
                   ('stop', 'vmha may also power off a failed guest that '
                            'asked for it; recorded, not recovered.'),
               ],
               help="""
The most drastic corrective action vmha takes for a guest whose
heartbeat failed, whatever the guest asks for (``log`` < ``reboot`` <
``stop``).  Actions run within ``[guest_agent] action_budget`` and after
``[guest_agent] action_min_uptime``, shared with the guest-agent
monitor; past them the failure is reported to Masakari.
"""),
    cfg.FloatOpt('max_notice',
                 default=60.0,
                 min=1.0,
                 max=3600.0,
                 help="""
The longest vote or notice timeout (``vote_secs``, the
``*_notice_secs``) a guest is granted, in seconds.
"""),
    cfg.IntOpt('max_messages_per_second',
               default=20,
               min=1,
               max=10000,
               help="""
A guest sending more messages than this per second, averaged over 5 s,
is cut off: its connection is closed, a warning notification is sent
(never a failure), and vmha connects again after ``cut_off_time``.
Other guests are never affected.
"""),
    cfg.FloatOpt('cut_off_time',
                 default=60.0,
                 min=1.0,
                 max=86400.0,
                 help="""
Seconds vmha leaves a cut-off guest's channel closed before connecting
again.
"""),
    cfg.FloatOpt('reconnect_interval',
                 default=1.0,
                 min=0.1,
                 max=60.0,
                 help="""
Seconds before vmha connects again to a channel that closed or could not
be opened while its domain runs; doubled on each failure up to
``reconnect_max_interval``.
"""),
    cfg.FloatOpt('reconnect_max_interval',
                 default=5.0,
                 min=0.1,
                 max=600.0,
                 help="""
The longest wait between two connection attempts to one channel.

Related options:

* ``reconnect_interval``
"""),
]


def register_opts(conf):
    base.register_group(conf, heartbeat_group, heartbeat_opts)


def list_opts():
    return {heartbeat_group: heartbeat_opts}


def problems(group):
    """What is inconsistent in the ``[heartbeat]`` values of ``group``
    (a ``conf.heartbeat``): a list of one-line messages."""
    found = []
    if group.min_interval > group.max_interval:
        found.append('[heartbeat] min_interval (%s) must not be more than '
                     '[heartbeat] max_interval (%s)'
                     % (group.min_interval, group.max_interval))
    elif not group.min_interval <= group.default_interval <= \
            group.max_interval:
        found.append('[heartbeat] default_interval (%s) must be between '
                     'min_interval (%s) and max_interval (%s)'
                     % (group.default_interval, group.min_interval,
                        group.max_interval))
    if group.reconnect_interval > group.reconnect_max_interval:
        found.append('[heartbeat] reconnect_interval (%s) must not be more '
                     'than [heartbeat] reconnect_max_interval (%s)'
                     % (group.reconnect_interval,
                        group.reconnect_max_interval))
    if not group.channel_name or len(group.channel_name) > 255 or \
            not group.channel_name.isprintable() or ' ' in \
            group.channel_name:
        found.append('[heartbeat] channel_name (%r) must be a virtio port '
                     'name: 1 to 255 printable characters, no spaces'
                     % group.channel_name)
    return found
