"""Evidence before the verdict: is a guest that stopped answering hung?

Pure functions over host-side observations made across the failing
window (from the first failed ping to the verdict).  In order:

1. The guest closed the agent channel (AGENT_LIFECYCLE DISCONNECTED with
   reason CHANNEL) during the episode: only a running guest kernel closes
   its end of the port, so the guest lives and its agent does not.
   -> ``agent_down`` (a warning, not a failure).
2. No counters (the driver has none, or the calls failed): nothing says
   the guest lives -> ``hung``.
3. The vCPUs did not run at all (< 0.1 % of one vCPU): QEMU is stopped
   or the vCPUs halted for good -> ``hung``.
4. The guest sent network packets or issued disk requests: it lives ->
   ``agent_down``.
5. Otherwise the vCPUs ran but the guest did no I/O: a spinning or
   deadlocked kernel, or an idle guest whose agent froze (the host cannot
   tell those apart) -> ``hung``.
"""

import collections

from vmha.manager import guest_states

Judgement = collections.namedtuple('Judgement', ['verdict', 'evidence'])

# vCPU use below this share of one vCPU counts as "did not run".
IDLE_SHARE = 0.001


def _delta(before, after, field):
    a = getattr(after, field) if after is not None else None
    b = getattr(before, field) if before is not None else None
    if a is None or b is None:
        return None
    return max(0, a - b)


def judge(failures, seconds, before, after, disk_delta=None,
          channel_closed_at=None):
    """The Judgement for a guest after ``failures`` failed pings.

    :param seconds: the window between the two counter readings
    :param before: ``Counters`` at the first failed ping (or None)
    :param after: ``Counters`` now (or None)
    :param disk_delta: disk requests over a short extra reading, or None
    :param channel_closed_at: how many seconds ago the guest closed the
        agent channel, if it did during the episode
    """
    lead = '%d failed ping(s)' % failures
    if channel_closed_at is not None:
        return Judgement(guest_states.AGENT_DOWN, (
            '%s; the guest closed the agent channel %.1fs ago (AGENT_'
            'LIFECYCLE DISCONNECTED/CHANNEL): the guest runs, its agent '
            'does not' % (lead, channel_closed_at)))
    cpu = _delta(before, after, 'cpu_time')
    if cpu is None or seconds <= 0:
        return Judgement(guest_states.HUNG, (
            '%s; no host-side counters to tell a live guest from a hung '
            'one' % lead))
    share = cpu / (seconds * 1e9)
    window = '%.1fs' % seconds
    if share < IDLE_SHARE:
        return Judgement(guest_states.HUNG, (
            '%s; vCPUs used %.3fs of CPU in %s: QEMU is stopped or the '
            'vCPUs halted' % (lead, cpu / 1e9, window)))
    packets = _delta(before, after, 'net_tx_packets') or 0
    if packets or disk_delta:
        return Judgement(guest_states.AGENT_DOWN, (
            '%s; vCPUs used %.0f%% of a vCPU, the guest sent %d packet(s) '
            'and issued %d disk request(s) in %s: the guest runs, its agent '
            'does not answer' % (lead, share * 100, packets, disk_delta or 0,
                                 window)))
    return Judgement(guest_states.HUNG, (
        '%s; vCPUs used %.0f%% of a vCPU but the guest sent no packet and '
        'issued no disk request in %s: a hung or spinning kernel'
        % (lead, share * 100, window)))
