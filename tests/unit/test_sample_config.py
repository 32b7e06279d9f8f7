"""etc/vmha/vmha.conf.sample must be what oslo-config-generator makes now."""

import difflib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / 'etc' / 'vmha' / 'vmha.conf.sample'
GENERATOR_CONF = ROOT / 'etc' / 'vmha' / 'vmha-config-generator.conf'


def test_sample_config_is_up_to_date(tmp_path):
    generated_path = tmp_path / 'vmha.conf.sample'
    # A separate process: the generator imports every namespace's options,
    # away from whatever backend this test process runs on.
    result = subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator',
         '--config-file', str(GENERATOR_CONF),
         '--output-file', str(generated_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        'oslo-config-generator failed:\n%s%s' % (result.stdout, result.stderr))

    generated = generated_path.read_text()
    committed = SAMPLE.read_text() if SAMPLE.exists() else ''
    if generated != committed:
        diff = ''.join(difflib.unified_diff(
            committed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            'etc/vmha/vmha.conf.sample (committed)',
            'etc/vmha/vmha.conf.sample (generated)'))
        pytest.fail('etc/vmha/vmha.conf.sample is stale: run tox -e genconfig'
                    '\n\n' + diff, pytrace=False)
