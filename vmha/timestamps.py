"""POSIX times as aware UTC datetimes and as ISO 8601 text.

Written here rather than taken from ``oslo_utils.timeutils``: oslo.utils
10 has no formatter for a POSIX time any more (``isotime`` and
``iso8601_from_timestamp`` are gone), and its ``utcnow()`` reads the real
clock and returns a naive datetime.  vmha stamps with clocks it is given
(fake in tests), and its notifications, samples and ``vmha-status`` carry
aware times that print with a ``+00:00`` offset.
"""

import datetime


def utc(timestamp):
    """The aware UTC datetime of a POSIX time."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def isotime(timestamp, timespec='seconds'):
    """ISO 8601 UTC text of a POSIX time (``timespec`` as for
    ``datetime.isoformat``), or None for None."""
    if timestamp is None:
        return None
    return utc(timestamp).isoformat(timespec=timespec)
