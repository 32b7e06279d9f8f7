"""vmha-guest's heartbeat.conf: defaults, the Titanium keys, bad lines.

A configuration the daemon cannot use must stop it with one line that
names the file, the line and the key, never start it with a default
the operator did not ask for.
"""

import pathlib
import subprocess
import sys

import pytest

GUEST = pathlib.Path(__file__).resolve().parents[2] / 'guest'
sys.path.insert(0, str(GUEST))

import vmha_guest  # noqa: E402


def test_empty_file_gives_the_documented_defaults():
    config = vmha_guest.parse_config('')
    assert config == {
        'HB_INTERVAL': 1000, 'CORRECTIVE_ACTION': 'reboot',
        'HEALTH_CHECK_SCRIPT': '', 'HEALTH_CHECK_INTERVAL': 30,
        'VOTE': 8, 'SHUTDOWN_NOTICE': 8, 'SUSPEND_NOTICE': 8,
        'RESUME_NOTICE': 13, 'RESTART': 300, 'EVENT_HANDLING_SCRIPT': '',
        'DEVICE': '/dev/virtio-ports/org.vmha.heartbeat.0',
        'API_SOCKET': '/run/vmha-guest/api.sock'}


def test_comments_blank_lines_quotes_and_spaces():
    config = vmha_guest.parse_config(
        '# a comment\n\n  HB_INTERVAL = 500 \n'
        'CORRECTIVE_ACTION="stop"\n'
        "HEALTH_CHECK_SCRIPT='/etc/vmha-guest/check'\n"
        'VOTE=2.5\n')
    assert config['HB_INTERVAL'] == 500
    assert config['CORRECTIVE_ACTION'] == 'stop'
    assert config['HEALTH_CHECK_SCRIPT'] == '/etc/vmha-guest/check'
    assert config['VOTE'] == 2.5


@pytest.mark.parametrize('text, words', [
    ('HB_INTERVAL\n', ['expected KEY=value']),
    ('HB_INTERVALL=1000\n', ['unknown key', 'HB_INTERVALL']),
    ('HB_INTERVAL=fast\n', ['HB_INTERVAL', 'not a number']),
    ('HB_INTERVAL=10\n', ['HB_INTERVAL', 'between 100 and 3600000']),
    ('CORRECTIVE_ACTION=none\n', ['CORRECTIVE_ACTION', 'log|reboot|stop']),
    ('VOTE=-1\n', ['VOTE', 'above 0']),
    ('RESTART=nan\n', ['RESTART', 'above 0']),
    ('RESTART=86401\n', ['RESTART', 'at most 86400']),
    ('SUSPEND_NOTICE=inf\n', ['SUSPEND_NOTICE', 'at most 86400']),
    ('HEALTH_CHECK_SCRIPT=check.sh\n', ['absolute path']),
    ('DEVICE=\n', ['DEVICE', 'empty']),
])
def test_bad_line_names_file_line_and_key(text, words):
    with pytest.raises(vmha_guest.ConfigError) as caught:
        vmha_guest.parse_config('# first\n' + text, 'hb.conf')
    message = str(caught.value)
    assert '\n' not in message
    assert 'hb.conf:2' in message
    for word in words:
        assert word in message


def test_missing_default_file_means_defaults_but_a_named_one_is_an_error(
        tmp_path):
    missing = str(tmp_path / 'none.conf')
    assert vmha_guest.load_config(missing, required=False)['VOTE'] == 8
    with pytest.raises(vmha_guest.ConfigError, match='no such file'):
        vmha_guest.load_config(missing, required=True)


def test_a_script_that_cannot_run_is_refused_at_start(tmp_path):
    script = tmp_path / 'check'
    script.write_text('#!/bin/sh\nexit 0\n')       # not executable
    config = vmha_guest.parse_config('HEALTH_CHECK_SCRIPT=%s\n' % script)
    with pytest.raises(vmha_guest.ConfigError, match='not an executable'):
        vmha_guest.check_scripts(config)
    script.chmod(0o755)
    vmha_guest.check_scripts(config)


def run_cli(*args):
    return subprocess.run([sys.executable, str(GUEST / 'vmha_guest.py')]
                          + list(args), capture_output=True, text=True,
                          timeout=10)


def test_check_config_prints_the_result_and_device_overrides(tmp_path):
    conf = tmp_path / 'hb.conf'
    conf.write_text('HB_INTERVAL=700\n')
    proc = run_cli('--config', str(conf), '--device', '/tmp/x.sock',
                   '--check-config')
    assert proc.returncode == 0, proc.stderr
    assert 'HB_INTERVAL=700\n' in proc.stdout
    assert 'DEVICE=/tmp/x.sock\n' in proc.stdout


@pytest.mark.parametrize('args', [['--bogus'], ['--config'],
                                  ['--config', '/nonexistent/hb.conf']])
def test_bad_command_line_exits_2_with_one_line(args):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith('vmha-guest: ')
