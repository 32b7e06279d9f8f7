"""The built-in demo (``vmha-agent --demo``, the README's first command).

It runs as operators run it, in a subprocess (it commits the process to a
concurrency backend, which a test process must not do), under the backend
of this test run, and tells its story on test:///default: a crash and a
hang reported once each, a shutdown that is no failure, libvirtd lost and
back.  These tests read its summary and exit status.
"""

import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import BACKEND
from vmha import demo
from vmha import objects
from vmha.cmd import agent
from vmha.demo import embedded

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.functional


def run_demo(tmp_path, *args, env=None, timeout=120):
    config = tmp_path / 'vmha.conf'
    config.write_text('[DEFAULT]\nconcurrency_backend = %s\n' % BACKEND)
    return subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.agent', '--demo', '--config-file',
         str(config), *args],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **(env or {})))


@pytest.fixture(scope='module')
def story(tmp_path_factory):
    """One run of the demo, shared by the tests that read it."""
    return run_demo(tmp_path_factory.mktemp('demo'))


def summary(out):
    return out.rsplit('\n== summary\n', 1)[1]


def test_demo_ends_ok(story):
    assert story.returncode == 0, story.stdout + story.stderr
    assert story.stdout.rstrip().endswith('\ndemo OK')
    assert 'Traceback' not in story.stderr, story.stderr


def test_the_crash_and_the_hang_are_reported_once_each(story):
    out = story.stdout
    assert 'decisions by cause: guest_hung 1, qemu_died 1' in summary(out)
    assert out.count('notify  instance.failure ') == 2
    assert out.count('instance.failure    web-2  FAILURE, cause '
                     'qemu_died') == 1
    assert out.count('instance.failure    db-1  FAILURE, cause '
                     'guest_hung') == 1
    # Each with the body Masakari gets (the bridge's translation).
    assert out.count('-> Masakari: POST /v1/notifications') == 2
    assert '"event": "LIFECYCLE",' in out
    assert '"event": "QEMU_GUEST_AGENT_ERROR",' in out
    assert out.count('"vir_domain_event": "STOPPED_FAILED"') == 2
    # The hang was judged on host-side evidence, not on pings alone.
    assert 'vCPUs used 0.000s of CPU' in out


def test_detection_latencies_are_measured(story):
    text = summary(story.stdout)
    crash = re.search(r'web-2 +qemu_died .* detected ([0-9.]+)s after the '
                      r'crash', text)
    hang = re.search(r'db-1 +guest_hung .* detected ([0-9.]+)s after the '
                     r'hang', text)
    assert crash and hang, text
    # The crash skips the STOPPED delay; the hang takes two failed pings
    # 1 s apart (0.5 s timeout) and one counter reading.
    assert float(crash.group(1)) < 1.0
    assert 1.0 < float(hang.group(1)) < 6.0
    assert re.search(r'events dispatched: \d+; dispatch latency .*median '
                     r'[0-9.]+ ms', text), text


def test_the_shutdown_is_recorded_not_a_failure(story):
    out = story.stdout
    assert 'instance.lifecycle  batch-1  STOPPED_SHUTDOWN' in out
    assert 'instance.failure    batch-1' not in out
    assert 'batch-1 shutdown: recorded (STOPPED_SHUTDOWN), not a failure' \
        in summary(out)


def test_libvirt_is_lost_restored_and_audited(story):
    out = story.stdout
    assert 'host.connection     test:///default  LOST (EOF)' in out
    assert re.search(r'host\.connection     test:///default  RESTORED after '
                     r'[0-9.]+s, \d+ attempt', out), out
    assert 'libvirt connection: lost -> restored; audits run: 2' in \
        summary(out)
    # web-2 came back while vmha was disconnected: the audit after the
    # reconnect finds it running and closes its failure episode.
    assert 'power-state audit #2 after the reconnect' in out
    assert re.search(r'web-2: journal had shutdown \(SHUTOFF_FAILED\), '
                     r'now running\s+\(RUNNING_BOOTED\);\s+failure '
                     r'episode \(qemu_died\) closed', out), out


def test_status_table_after_each_step(story):
    out = story.stdout
    assert out.count('NAME     UUID ') == 6  # five steps, one outage
    assert 'libvirt DISCONNECTED' in out
    assert re.search(r'db-1 .* reported .* guest_hung \d+s ago, open', out)


class FleetWhoseGuestDoesNotHang(embedded.EmbeddedFleet):
    """The embedded fleet, but the hang step changes nothing."""

    def hang(self, name):
        return time.monotonic()


def demo_in_process(tmp_path, make_fleet=None):
    """vmha-agent's demo branch in this process, without main()'s
    process-wide backend choice (the eventlet backend works unpatched);
    returns (exit status, what it printed)."""
    config = tmp_path / 'vmha.conf'
    config.write_text('[DEFAULT]\nconcurrency_backend = %s\n'
                      '[database]\npath = %s\n'
                      % (BACKEND, tmp_path / 'vmha.sqlite'))
    conf = agent.parse_config(['--demo', '--config-file', str(config)])
    objects.register_all()
    logger = logging.getLogger('vmha')
    level = logger.level
    try:
        return agent._demo(conf, make_fleet)
    finally:
        logger.setLevel(level)  # the demo quiets vmha's own log


def test_demo_fails_when_an_expected_failure_does_not_come(tmp_path,
                                                           capsys):
    status = demo_in_process(tmp_path, FleetWhoseGuestDoesNotHang)
    out = capsys.readouterr().out
    assert status == 1, out
    assert 'no failure reported for db-1 within' in out
    last = out.rstrip().splitlines()[-1]
    assert last == ("demo FAILED: db-1's hang was not reported (expected "
                    "once, guest_hung)"), out
    # The rest of the story still played.
    assert 'decisions by cause: qemu_died 1' in summary(out)


def test_demo_branch_in_process(tmp_path, capsys):
    status = demo_in_process(tmp_path)
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'decisions by cause: guest_hung 1, qemu_died 1' in summary(out)
    assert out.rstrip().endswith('\ndemo OK')


def test_real_vms_are_no_mode_of_vmha_agent(tmp_path):
    # The real-VM fleet is the checkout's test bed: tools/demo.sh --real
    # runs it (tools/demo_real.py); the product has no such option.
    result = subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.agent', '--demo', '--real'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert 'unrecognized arguments: --real' in result.stderr


def test_fleet_unavailable_is_one_readable_line(tmp_path, capsys):
    class Unavailable(embedded.EmbeddedFleet):
        def prepare(self):
            raise demo.FleetUnavailable('this host has no KVM')

    assert demo_in_process(tmp_path, Unavailable) == 1
    assert capsys.readouterr().err == (
        'vmha-agent: --demo: this host has no KVM\n')


def test_tools_demo_real_hands_the_test_bed_fleet_to_the_agent():
    spec = importlib.util.spec_from_file_location(
        'demo_real', ROOT / 'tools' / 'demo_real.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    fleet = tool.make_fleet(BACKEND)  # defines nothing until prepare()
    assert type(fleet).__name__ == 'RealFleet'
    assert fleet.uri == 'qemu:///system'
    defaults = fleet.conf_defaults()
    assert defaults[('libvirt', 'connection_uri')] == fleet.uri
    assert defaults[('guest_agent', 'interval')] == 2.0
