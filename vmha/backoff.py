"""Exponential backoff with jitter, shared by every retry loop in vmha.

A wait doubles from ``minimum`` up to ``maximum`` with each attempt
(``ceiling``); ``jittered`` draws it from the upper half of that ceiling
so that agents failing together do not retry in step.
"""

import random


def ceiling(attempt, minimum, maximum):
    """``minimum`` doubled ``attempt`` times, at most ``maximum``."""
    return min(maximum, minimum * 2 ** min(attempt, 64))


def jittered(limit, rand=random.random):
    """A wait drawn uniformly from the upper half of ``limit``."""
    return limit / 2 + rand() * limit / 2
