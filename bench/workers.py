"""Running one benchmark worker in a subprocess of its own.

Every benchmark measures in worker processes (one concurrency backend or
one size per process, RSS of its own) that print one JSON object per line
on stdout; ``run`` starts one, bounds its time, and collects those lines.
"""

import json
import subprocess


def run(command, timeout):
    """Run ``command``; returns (JSON lines, problem or None, stderr).

    ``problem`` says 'CRASHED (exit N)' or 'HUNG for T s, killed'.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        problem = proc.returncode and 'CRASHED (exit %d)' % proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        problem = 'HUNG for %.0f s, killed' % timeout
    results = [json.loads(line) for line in out.splitlines()
               if line.startswith('{')]
    return results, problem or None, err


def by_phase(results):
    """{phase: result without its 'phase' key} of a worker's lines."""
    phases = {}
    for result in results:
        result = dict(result)
        phases[result.pop('phase')] = result
    return phases
