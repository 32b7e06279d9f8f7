"""The limits of the libvirt daemon that serves ``qemu:///system``, as
its configuration file says, for the agent's start-up check.

Every guest-agent call holds one of the daemon's worker threads until the
guest answers or libvirt gives up (about 5 s for a hung guest), and the
daemon serves at most ``max_client_requests`` calls at once on one
connection.  ``read_limits`` reads both from ``virtqemud.conf`` when the
modular daemon runs (its socket exists), else from ``libvirtd.conf``;
a setting absent or commented out has libvirt's default.
"""

import os
import re

CONF_DIR = '/etc/libvirt'
RUN_DIR = '/run/libvirt'
DEFAULTS = {'max_workers': 20, 'max_client_requests': 5}
_SETTING = re.compile(r'^\s*(max_workers|max_client_requests)\s*=\s*(\d+)')


def config_path(conf_dir=CONF_DIR, run_dir=RUN_DIR):
    """The configuration file of the daemon that runs the QEMU driver."""
    if os.path.exists(os.path.join(run_dir, 'virtqemud-sock')):
        return os.path.join(conf_dir, 'virtqemud.conf')
    return os.path.join(conf_dir, 'libvirtd.conf')


def parse_limits(text):
    """{'max_workers': n, 'max_client_requests': n} from a daemon's
    configuration text (libvirt's defaults for what it does not set)."""
    limits = dict(DEFAULTS)
    for line in text.splitlines():
        found = _SETTING.match(line)
        if found:
            limits[found.group(1)] = int(found.group(2))
    return limits


def read_limits(path=None):
    """(path, limits) of the daemon's configuration, or (path, None) when
    it cannot be read (not there, or no permission)."""
    path = path or config_path()
    try:
        with open(path, encoding='utf-8', errors='replace') as conf:
            return path, parse_limits(conf.read())
    except OSError:
        return path, None
