"""Functional tests that run in a process of their own.

``tests/standalone/`` holds functional tests that failed only after
other tests had run in the same process: the nova stand-in's HTTP server
once stopped answering its first request, and the recovery follow-up
saw its failure forwarded twice (409 from Masakari) after
test_agent_notifications.py had run, and the guest daemon's
unregistration test stayed unhealthy in a full functional run; none of
the causes is understood yet.
Each file runs in a fresh interpreter under the same concurrency backend,
and the test fails with its output when any of its tests does.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = sorted(p.name for p in (ROOT / 'tests' / 'standalone').glob(
    'test_*.py'))


@pytest.mark.parametrize('name', FILES)
def test_in_a_process_of_its_own(name):
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         'tests/standalone/' + name],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-4000:]
                                    + result.stderr[-2000:])
    assert ' passed' in result.stdout
