"""vmha-agent as operators run it: bad input gives one line and an exit code.

Each case runs the real console entry point in a subprocess (it commits
the process to a concurrency backend, which a test process must not do).
"""

import subprocess
import sys

import pytest

from tests.conftest import BACKEND

pytestmark = pytest.mark.functional


def run_agent(tmp_path, config_text, *args, timeout=60):
    config = tmp_path / 'vmha.conf'
    config.write_text('[DEFAULT]\nconcurrency_backend = %s\n'
                      '[database]\npath = %s\n'
                      '[notifications]\nsinks = log\n%s'
                      % (BACKEND, tmp_path / 'vmha.sqlite', config_text))
    return subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(config), *args],
        capture_output=True, text=True, timeout=timeout)


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_bad_connection_uri_is_one_line_and_nonzero(tmp_path):
    result = run_agent(tmp_path,
                       '[libvirt]\nconnection_uri = bogus:///nowhere\n')
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith('vmha-agent: cannot connect to bogus:///nowhere: ')


@pytest.mark.parametrize('config_text, expected', [
    ('[events]\nstopped_delay = soon\n',
     'invalid value for [events] stopped_delay'),
    ('[events]\nqueue_size = 0\n', 'invalid value for [events] queue_size'),
    ('[libvirt]\nkeepalive_interval = -1\n',
     'invalid value for [libvirt] keepalive_interval'),
    ('[DEFAULT]\nconcurrency_backend = asyncio\n', "found 'asyncio'"),
    ('[guest_agent]\ninterval = 2\ntimeout = 3\n',
     '[guest_agent] timeout (3.0) must be less than [guest_agent] interval'),
    ('[guest_agent]\naction = reboot\n',
     'invalid value for [guest_agent] action'),
    ('this is not ini\n', 'Failed to parse'),
])
def test_bad_configuration_is_one_line_and_nonzero(tmp_path, config_text,
                                                    expected):
    result = run_agent(tmp_path, config_text)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith('vmha-agent: configuration error: ')
    assert expected in line


def test_damaged_database_is_one_line_and_nonzero(tmp_path):
    (tmp_path / 'vmha.sqlite').write_bytes(b'this is no database' * 100)
    result = run_agent(tmp_path,
                       '[libvirt]\nconnection_uri = test:///default\n')
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith('vmha-agent: cannot open the vmha journal ')
    assert 'vmha.sqlite' in line


def test_unknown_sink_is_a_configuration_error(tmp_path):
    result = run_agent(tmp_path, '[notifications]\nsinks = carrier-pigeon\n')
    assert result.returncode == 2
    assert 'carrier-pigeon' in one_line(result.stderr)


def test_missing_config_file(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(tmp_path / 'absent.conf')],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'absent.conf' in one_line(result.stderr)


def test_agent_starts_and_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import time
    config = tmp_path / 'vmha.conf'
    config.write_text('[DEFAULT]\nconcurrency_backend = %s\n'
                      '[libvirt]\nconnection_uri = test:///default\n'
                      '[database]\npath = %s\n'
                      '[notifications]\nsinks = log\n'
                      % (BACKEND, tmp_path / 'vmha.sqlite'))
    log_file = tmp_path / 'agent.log'
    agent = subprocess.Popen(
        [sys.executable, '-m', 'vmha.cmd.agent', '--config-file',
         str(config), '--log-file', str(log_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while 'watching 1 domain' not in (
                log_file.read_text() if log_file.exists() else ''):
            assert agent.poll() is None, agent.communicate()
            assert time.monotonic() < deadline, 'agent did not start'
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert 'Signal %d received; stopping' % signal.SIGTERM in \
        log_file.read_text()


def test_an_unusable_transport_url_is_one_line_and_exit_2(tmp_path):
    result = run_agent(tmp_path, '[DEFAULT]\ntransport_url = nosuch://x\n'
                       '[libvirt]\nconnection_uri = test:///default\n')
    assert result.returncode == 2, result.stderr
    assert one_line(result.stderr).startswith(
        'vmha-agent: configuration error: ')
