"""Options of the [actions] group: lifecycle actions asked for over RPC
(``request_action``, ``vmha-action``), voted on by heartbeat guests."""

from oslo_config import cfg

from vmha.conf import base

actions_group = cfg.OptGroup(
    'actions', title='Lifecycle actions (request_action, vmha-action)')

actions_opts = [
    cfg.FloatOpt('shutdown_timeout',
                 default=60.0,
                 min=0.0,
                 max=3600.0,
                 help="""
Seconds a ``stop`` waits for the guest to shut down after the ACPI power
button (a graceful shutdown) before vmha destroys the domain.

nova's ``[DEFAULT] shutdown_timeout`` has the same default and meaning: a
guest that ignores the power button is powered off once it runs out.

Possible values:

* 0: destroy at once (no graceful shutdown).
* 0 to 3600.

Related options:

* ``call_timeout``
"""),
    cfg.FloatOpt('call_timeout',
                 default=30.0,
                 min=1.0,
                 max=600.0,
                 help="""
Seconds vmha waits for one libvirt call of an action (reboot, pause,
managed save, ...) before it gives up on it and reports the action
failed.

A QEMU that is stopped (SIGSTOP) blocks libvirt's calls on it until it
runs again; the call then goes on in the background and the RPC caller
is told at once.  A ``stop`` may take ``shutdown_timeout`` plus this.

Related options:

* ``shutdown_timeout``
* ``max_concurrent``
"""),
    cfg.IntOpt('max_concurrent',
               default=4,
               min=1,
               max=64,
               help="""
Most libvirt calls of actions in flight at once (each on a native
thread).  A request beyond that, or while that many calls hang in
libvirt, is refused with a clear error instead of queueing.  One VM has
at most one action at a time whatever this says.
"""),
]


def register_opts(conf):
    base.register_group(conf, actions_group, actions_opts)


def list_opts():
    return {actions_group: actions_opts}
