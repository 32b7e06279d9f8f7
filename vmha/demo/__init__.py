"""The built-in demo: ``vmha-agent --demo``.

The whole agent runs (event pipeline, failure monitor, guest-agent
monitor, audit, journal and outbox), and a short scripted story
(``story``) happens to a fleet of five domains: one crashes, one hangs,
one is shut down by an operator, and libvirtd restarts.  Every event,
guest-agent change and notification is printed as it happens, failures
with the body Masakari would get; a status table follows each step, and a
summary with the verdict ends it: "demo OK" (exit 0) only when exactly
the crash and the hang were reported, once each.

Fleets.  The story drives a *fleet*; two have the same small interface:

* ``embedded.EmbeddedFleet`` (the default): libvirt's daemon-less
  test:///default driver in this process, with what it lacks (QEMU,
  guest agents, libvirtd) simulated at vmha's edge;
* ``tests/integration/demo_fleet.py`` (``--demo --real``): real libvirtd
  and QEMU guests running qemu-ga, from the integration test bed.

Interface: ``uri``, ``title``, ``notes`` (step -> what the fleet really
does), ``boot_timeout``, ``hang_timeout``, ``shutdown_timeout``
(seconds); ``prepare()`` before the agent starts (raises
``FleetUnavailable``), ``conf_defaults()`` ({(group, option): value}),
``make_driver(conf)``, ``start()`` once the agent runs, ``boot(names)``
(returns {story name: domain name}), ``crash(name)``, ``hang(name)``,
``shutdown(name)``, ``drop_libvirt()``, ``recover(name)``,
``restore_libvirt()`` (those but ``recover`` return the monotonic time
they happened) and ``close()``.

Test hook: with ``VMHA_DEMO_TEST_HOOK=break-hang`` in the environment the
hang step changes nothing, so the story must end in "demo FAILED".
"""

import os
import pathlib
import sys

from vmha import concurrency
from vmha.demo import embedded
from vmha.demo import show
from vmha.demo import story as story_lib

TEST_HOOK = 'VMHA_DEMO_TEST_HOOK'


class FleetUnavailable(Exception):
    """The fleet cannot run here; the message says why, in one line."""


def make_fleet(backend, real=False):
    """The embedded fleet, or with ``real`` the test bed's.

    Raises FleetUnavailable.
    """
    break_hang = os.environ.get(TEST_HOOK) == 'break-hang'
    if not real:
        return embedded.EmbeddedFleet(backend, break_hang=break_hang)
    demo_fleet = _import_real_fleet()
    return demo_fleet.RealFleet(backend, break_hang=break_hang,
                                unavailable=FleetUnavailable)


def checkout_root():
    """The vmha checkout this vmha runs from (an editable install), if
    it has the real-VM fleet; else None."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if (root / 'tests' / 'integration' / 'demo_fleet.py').is_file():
        return root
    return None


def _import_real_fleet():
    try:
        from tests.integration import demo_fleet
        return demo_fleet
    except ImportError as error:
        first_error = error
    root = checkout_root()
    if root is not None and str(root) not in sys.path:
        # The console script does not run from the checkout: add it.
        sys.path.insert(0, str(root))
        try:
            from tests.integration import demo_fleet
            return demo_fleet
        except ImportError as error:
            first_error = error
    raise FleetUnavailable(
        "the real-VM fleet is tests/integration/demo_fleet.py of a vmha "
        "checkout, and this vmha (%s) has none that imports (%s): run "
        "the vmha-agent of a checkout's editable install (tools/setup.sh)"
        % (pathlib.Path(__file__).resolve().parents[1], first_error))


def run(conf, fleet, make_agent, out=None):
    """Play the story; returns the exit code (0: demo OK).

    :param fleet: a prepared fleet (``make_fleet``, then ``prepare()``)
    :param make_agent: ``callable(driver, sink)`` returning the
        ``AgentService`` over ``driver`` that sends to ``sink``
    """
    backend = concurrency.get(conf.concurrency_backend)
    screen = show.Screen(out or sys.stdout)
    sink = show.ScreenSink(screen)
    driver = fleet.make_driver(conf)
    printer = show.EventPrinter(screen, conf.events.stopped_delay)
    driver.register_event_listener(printer)
    agent = make_agent(driver, sink)
    agent_conf = conf.guest_agent
    screen.write('vmha demo: the whole agent, on')
    screen.note(fleet.title)
    screen.note('%s backend; journal %s; notifications printed here, no '
                'broker; guest agents pinged every %gs (timeout %gs, '
                'a hang judged after %d failed pings), STOPPED held back %gs'
                % (conf.concurrency_backend, conf.database.path,
                   agent_conf.interval, agent_conf.timeout,
                   agent_conf.failure_threshold, conf.events.stopped_delay))
    try:
        agent.start()
        fleet.start()
        return story_lib.Story(
            fleet, agent, screen, sink, printer,
            show.AgentWatcher(screen, agent.guest_monitor), backend.sleep,
            conf.events.stopped_delay).play()
    finally:
        agent.stop()
        fleet.close()
