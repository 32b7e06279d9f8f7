"""The nova stand-in's own tests, in a process of their own.

In the functional run's shared process the stand-in's HTTP server once
stopped answering its first request (the session hung on the token
request after other tests had run there; not yet understood), so its
tests run in a fresh interpreter, under the same concurrency backend,
and this test fails with their output when any of them does.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_nova_standin_in_its_own_process():
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         'tests/standalone/test_nova_standin.py'],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-4000:]
                                    + result.stderr[-2000:])
    assert ' passed' in result.stdout
