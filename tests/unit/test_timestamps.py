"""POSIX times print as the UTC text notifications, samples and
vmha-status show."""

import datetime

from vmha import timestamps

# 2026-05-04 03:02:01.234567 UTC
WHEN = 1777863721.234567


def test_utc_is_aware_and_in_utc():
    when = timestamps.utc(WHEN)
    assert when.tzinfo is datetime.UTC
    assert when.timestamp() == WHEN


def test_isotime_prints_seconds_with_the_offset():
    assert timestamps.isotime(WHEN) == '2026-05-04T03:02:01+00:00'


def test_isotime_prints_milliseconds_for_events():
    assert (timestamps.isotime(WHEN, 'milliseconds')
            == '2026-05-04T03:02:01.234+00:00')


def test_isotime_of_nothing_is_nothing():
    assert timestamps.isotime(None) is None
