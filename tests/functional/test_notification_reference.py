"""doc/notifications.md is what tools/notification_reference.py makes from
the samples under doc/notification_samples/.

Fails when a sample changed (or one was added) and the reference was not
regenerated (``python tools/notification_reference.py``), so the page an
operator reads never documents a notification vmha no longer sends.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.functional

ROOT = pathlib.Path(__file__).parents[2]
SCRIPT = ROOT / 'tools' / 'notification_reference.py'
SAMPLE_DIR = ROOT / 'doc' / 'notification_samples'
REFERENCE = ROOT / 'doc' / 'notifications.md'


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def copy(tmp_path):
    """A copy of the samples and of the reference, to change freely."""
    samples = tmp_path / 'samples'
    shutil.copytree(SAMPLE_DIR, samples)
    output = tmp_path / 'notifications.md'
    shutil.copyfile(REFERENCE, output)
    return samples, output


def test_reference_is_current():
    result = run('--check')
    assert result.returncode == 0, (
        'doc/notifications.md is stale: run python '
        'tools/notification_reference.py\n' + result.stderr)


def test_reference_documents_every_sample():
    text = REFERENCE.read_text()
    for path in sorted(SAMPLE_DIR.glob('*.json')):
        sample = json.loads(path.read_text())
        assert '## %s\n' % sample['event_type'] in text
        for name in sample['payload']['vmha_object.data']:
            assert '| `%s` |' % name in text, (path.name, name)


def test_changed_sample_fails_the_check(copy):
    samples, output = copy
    assert run('--check', '--samples', samples,
               '--output', output).returncode == 0

    path = samples / 'instance-failure.json'
    sample = json.loads(path.read_text())
    sample['payload']['vmha_object.data']['cause'] = 'guest_panic'
    path.write_text(json.dumps(sample, indent=4, sort_keys=True) + '\n')

    result = run('--check', '--samples', samples, '--output', output)
    assert result.returncode == 1
    assert 'is stale' in result.stderr
    assert 'guest_panic' in result.stderr  # the diff shows what changed
    assert output.read_text() == REFERENCE.read_text()  # --check writes not

    assert run('--samples', samples, '--output', output).returncode == 0
    assert '`"guest_panic"`' in output.read_text()
    assert run('--check', '--samples', samples,
               '--output', output).returncode == 0


def test_missing_reference_fails_the_check(copy):
    samples, output = copy
    output.unlink()
    result = run('--check', '--samples', samples, '--output', output)
    assert result.returncode == 1
    assert 'is missing' in result.stderr


def test_sample_without_description_is_named(copy):
    samples, output = copy
    sample = json.loads((samples / 'guest-health.json').read_text())
    sample['event_type'] = 'guest.mystery'
    (samples / 'guest-mystery.json').write_text(json.dumps(sample))

    result = run('--samples', samples, '--output', output)
    assert result.returncode == 1
    assert 'guest-mystery.json' in result.stderr
    assert "'guest.mystery' has no description" in result.stderr
    assert output.read_text() == REFERENCE.read_text()
