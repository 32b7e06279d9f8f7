"""The limits on failure notifications Masakari does not act on (issue 11
item 6), as pure logic on a fake clock.

What a user notices: how many notifications are sent for a repeating
failure, what count each carries, and when the host cap drops some.
"""

import logging

from oslo_config import cfg

from tests.fixtures import virt
import vmha.conf
from vmha.manager import rate_limit

VM_1 = '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c'
VM_2 = '0d4c1f2b-3a4c-4a47-9a8e-6f1b8c2e3f1e'


def make(repeat_window=300, per_minute=60):
    clock = virt.FakeClock()
    return rate_limit.NotificationLimiter(repeat_window, per_minute,
                                          clock=clock), clock


def sent(limiter, clock, uuid, cause, times, every):
    """The counts carried by the notifications sent, one per second."""
    counts = []
    for _ in range(times):
        admission = limiter.admit(uuid, cause)
        if admission.send:
            counts.append(admission.suppressed)
        clock.advance(every)
    return counts


def test_a_repeat_every_second_is_sent_once_per_window_with_its_count():
    limiter, clock = make(repeat_window=300)

    counts = sent(limiter, clock, VM_1, 'watchdog', 3600, every=1)

    assert counts == [0] + [299] * 11
    assert limiter.suppressed_total == {'repeat': 3600 - 12, 'host_cap': 0}


def test_repeats_are_counted_per_domain_and_per_cause():
    limiter, clock = make()
    assert limiter.admit(VM_1, 'watchdog').send
    assert limiter.admit(VM_1, 'control_error').send
    assert limiter.admit(VM_2, 'watchdog').send
    assert not limiter.admit(VM_1, 'watchdog').send
    clock.advance(300)
    assert limiter.admit(VM_1, 'watchdog') == (True, 1)
    assert limiter.admit(VM_2, 'watchdog') == (True, 0)


def test_no_window_sends_every_one():
    limiter, clock = make(repeat_window=0, per_minute=0)

    assert sent(limiter, clock, VM_1, 'watchdog', 100, every=0.1) == \
        [0] * 100


def test_the_host_cap_drops_the_rest_of_the_minute_with_one_warning(caplog):
    limiter, clock = make(per_minute=60)
    uuids = ['00000000-0000-4000-8000-%012d' % i for i in range(1000)]
    caplog.set_level(logging.WARNING)

    admissions = []
    for uuid in uuids:
        admissions.append(limiter.admit(uuid, 'watchdog').send)
        clock.advance(0.05)  # 1,000 in 50 s

    assert admissions == [True] * 60 + [False] * 940
    assert limiter.suppressed_total == {'repeat': 0, 'host_cap': 940}
    [warning] = caplog.records
    assert 'More than 60 failure notifications' in warning.getMessage()
    assert 'host_cap' in warning.getMessage()
    # A new minute: sending resumes, and a dropped one's count travels
    # with the next notification of that domain and cause.
    clock.advance(11)
    assert limiter.admit(uuids[999], 'watchdog') == (True, 1)
    assert len(caplog.records) == 1


def test_the_cap_warns_again_in_a_later_minute_only_if_it_bites_again(
        caplog):
    limiter, clock = make(repeat_window=0, per_minute=2)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        for uuid in (VM_1, VM_2, VM_1, VM_2):
            limiter.admit(uuid, 'watchdog')
        clock.advance(60)

    assert len(caplog.records) == 3
    assert limiter.suppressed_total['host_cap'] == 6


def test_memory_is_bounded_by_the_domains_that_still_have_a_count():
    limiter, clock = make(repeat_window=300, per_minute=0)
    for i in range(500):
        limiter.admit('00000000-0000-4000-8000-%012d' % i, 'watchdog')
    limiter.admit(VM_1, 'watchdog')
    limiter.admit(VM_1, 'watchdog')  # a repeat: a count to carry
    assert len(limiter) == 501

    clock.advance(300)
    limiter.admit(VM_2, 'watchdog')
    assert len(limiter) == 2  # VM_1's count and VM_2's window
    clock.advance(rate_limit.FORGET_AFTER)
    limiter.admit(VM_2, 'watchdog')
    assert len(limiter) == 1


def test_options_and_their_defaults():
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha', default_config_files=[])
    assert conf.notifications.repeat_window == 300
    assert conf.notifications.max_error_notifications_per_minute == 60
    conf.set_override('max_error_notifications_per_minute', 1,
                      group='notifications')
    clock = virt.FakeClock()
    limiter = rate_limit.NotificationLimiter.from_conf(conf, clock=clock)
    assert limiter.admit(VM_1, 'watchdog').send
    assert not limiter.admit(VM_2, 'watchdog').send
