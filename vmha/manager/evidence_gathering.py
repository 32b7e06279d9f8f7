"""The host-side counters a guest-agent verdict is judged on, read on a
native thread.

``evidence.judge`` decides; this module only reads, and may block: every
reading is a libvirt call that asks QEMU, which a hung guest can delay.
So ``gather`` runs on the monitor's ``NativePool`` (never on the eventlet
hub, never on the monitor's loop), and the monitor gives up waiting on it
after ``JUDGE_BOUND`` seconds.
"""

import logging

from vmha.virt import exception

LOG = logging.getLogger(__name__)


class CounterGatherer:
    """:param get_counters: the driver's ``get_guest_counters(uuid,
        disk=False)``
    :param native_sleep: sleeps the calling native thread (the backend's)
    :param settle: seconds between two readings
    :param clock: monotonic clock
    """

    def __init__(self, get_counters, native_sleep, settle, clock):
        self._counters = get_counters
        self._sleep = native_sleep
        self._settle = settle
        self._clock = clock

    def gather(self, uuid, baseline):
        """Native thread: ``(baseline, after, disk requests)`` for the
        verdict.

        The counters now against ``baseline`` (read at the first failed
        ping; without one, two readings ``settle`` apart), and, if the
        vCPUs ran and the guest sent nothing, its disk requests over
        ``settle`` seconds: disk counters ask QEMU, so only once it is
        seen running.
        """
        counters = self._counters
        settle = self._sleep
        try:
            if baseline is None:
                baseline = (counters(uuid), self._clock())
                settle(self._settle)
            after = (counters(uuid), self._clock())
        except exception.HypervisorError as error:
            LOG.info('%s: no counters for the verdict: %s', uuid, error)
            return baseline, None, None
        before, now = baseline[0], after[0]
        disk = None
        if None not in (before.cpu_time, now.cpu_time) and \
                now.cpu_time > before.cpu_time and \
                not (now.net_tx_packets or 0) - (before.net_tx_packets or 0):
            try:
                first = counters(uuid, disk=True)
                settle(self._settle)
                second = counters(uuid, disk=True)
                if None not in (first.disk_requests, second.disk_requests):
                    disk = second.disk_requests - first.disk_requests
            except exception.HypervisorError as error:
                LOG.info('%s: no disk counters for the verdict: %s', uuid,
                         error)
        return baseline, after, disk
