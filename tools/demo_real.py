#!/usr/bin/env python3
"""``tools/demo.sh --real``: the demo's story on the real-VM test bed.

The same ``vmha-agent --demo`` run, on the fleet of
``tests/integration/demo_fleet.py``: a libvirtd of its own and QEMU
guests running qemu-ga, built by the integration test bed (run as root;
boots under TCG take minutes).  The test bed is part of a checkout, not
of vmha: this script, which only a checkout has, hands it to
``vmha.cmd.agent.main``.  Arguments go to vmha-agent.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_fleet(backend):
    """The real fleet on the concurrency backend called ``backend``
    (imported late: after vmha-agent chose the backend)."""
    from tests.integration import demo_fleet
    from vmha import demo
    return demo_fleet.RealFleet(backend, unavailable=demo.FleetUnavailable)


def main(argv):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from vmha.cmd import agent
    return agent.main(['--demo', *argv], demo_fleet=make_fleet)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
