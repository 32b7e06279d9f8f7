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
* ``tests/integration/demo_fleet.py`` (``tools/demo.sh --real``, from a
  checkout): real libvirtd and QEMU guests running qemu-ga, from the
  integration test bed.  The product never imports the test tree:
  ``tools/demo_real.py`` hands that fleet to ``vmha.cmd.agent.main``.

Interface: ``uri``, ``title``, ``notes`` (step -> what the fleet really
does), ``boot_timeout``, ``hang_timeout``, ``shutdown_timeout``
(seconds); ``prepare()`` before the agent starts (raises
``FleetUnavailable``), ``conf_defaults()`` ({(group, option): value}),
``make_driver(conf)``, ``start()`` once the agent runs, ``boot(names)``
(returns {story name: domain name}), ``crash(name)``, ``hang(name)``,
``shutdown(name)``, ``drop_libvirt()``, ``recover(name)``,
``restore_libvirt()`` (those but ``recover`` return the monotonic time
they happened) and ``close()``.
"""

import sys

from vmha import concurrency
from vmha.demo import embedded
from vmha.demo import show
from vmha.demo import story as story_lib


class FleetUnavailable(Exception):
    """The fleet cannot run here; the message says why, in one line."""


def make_fleet(backend):
    """The embedded fleet on the concurrency backend called ``backend``."""
    return embedded.EmbeddedFleet(backend)


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
