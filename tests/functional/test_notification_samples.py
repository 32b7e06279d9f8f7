"""Each sample under doc/notification_samples/ is exactly what vmha sends.

Fails when a notification changes and its sample was not regenerated
(``python -m tests.functional.notification_samples``), or when a sample
exists that no notification produces.
"""

import json

import pytest

from tests.functional import notification_samples as samples

pytestmark = pytest.mark.functional


@pytest.mark.parametrize('name', sorted(samples.BUILDERS))
def test_sample_matches_what_is_sent(name):
    path = samples.SAMPLE_DIR / ('%s.json' % name)
    assert path.exists(), 'missing sample %s' % path
    assert json.loads(path.read_text()) == json.loads(samples.render(name)), (
        '%s is stale: run python -m tests.functional.notification_samples'
        % path)


def test_no_orphan_samples():
    files = {p.stem for p in samples.SAMPLE_DIR.glob('*.json')}
    assert files == set(samples.BUILDERS)
