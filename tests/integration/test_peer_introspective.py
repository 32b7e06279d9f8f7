"""The peer: masakari-monitors' introspective instance monitor on a real
guest, and how long it takes to report a hung one (see peer_monitor.py).

The monitor runs with its own defaults (interval 10 s, ping timeout 2 s,
failure threshold 3), watching only this test's guest; it reports on the
(threshold + 2)-th unanswered guest-ping in a row.  Measured (libvirt
9.0, TCG): the first unanswered ping fails after the 2 s timeout, the
later ones after 5 s (libvirt's guest-sync wait), so the notification
comes (threshold + 1) * interval + 5 s after the first ping that follows
the hang: 45 to 55 s with the defaults, depending on the phase.
"""

import datetime
import random
import socket
import time

import pytest

from tests.conftest import BACKEND
from tests.integration import peer_monitor
from tests.integration import testbed

pytestmark = [
    pytest.mark.realvm,
    # The peer does not depend on vmha's backend: measured in one run.
    pytest.mark.skipif(BACKEND == 'eventlet', reason='runs under threading'),
]

INTERVAL = 10
TIMEOUT = 2
THRESHOLD = 3
LABEL = 'masakari-monitors: hung guest -> notification'


def test_hung_guest_reported_once(vm_factory, libvirtd, tmp_path,
                                  realvm_measure):
    guest = vm_factory()
    peer = peer_monitor.IntrospectiveMonitor(
        tmp_path / 'peer', libvirt_uri=libvirtd.uri, interval=INTERVAL,
        timeout=TIMEOUT, failure_threshold=THRESHOLD,
        sock_path=peer_monitor.sock_path_regex(guest.domains.channel_path(
            guest.name, testbed.AGENT_CHANNEL)))
    peer.ensure_installed()
    try:
        peer.start()
        peer.wait_watching(guest.uuid)
        # A second cycle without a miss: the guest is 'healthy' to it.
        time.sleep(INTERVAL + TIMEOUT)
        assert peer.missed_pings(guest.uuid) == 0, peer.log_tail()
        assert peer.notifications() == []
        # Hang at a random point of the monitor's cycle (it pings at
        # start + k * INTERVAL), as a real failure would.
        time.sleep(random.uniform(0, INTERVAL))

        guest.stop_qemu()
        stopped = time.monotonic()
        try:
            arrived, body = peer.wait_for(
                guest.uuid, (THRESHOLD + 3) * (INTERVAL + TIMEOUT) + 30)
            realvm_measure(LABEL, arrived - stopped)
            # Reported on the (threshold + 2)-th missed ping in a row.
            assert peer.missed_pings(guest.uuid) == THRESHOLD + 2, \
                peer.log_tail()
            # Still hung for two more cycles: no second notification.
            time.sleep(2 * INTERVAL + TIMEOUT + 1)
            assert peer.missed_pings(guest.uuid) >= THRESHOLD + 4
        finally:
            guest.cont_qemu()
    finally:
        status = peer.stop()

    assert [b for _, b in peer.notifications()] == [body], peer.log_tail()
    notification = body['notification']
    assert notification['type'] == 'VM'
    assert notification['hostname'] == socket.gethostname()
    assert notification['payload'] == {
        'event': 'QEMU_GUEST_AGENT_ERROR',
        'instance_uuid': guest.uuid,
        'vir_domain_event': 'STOPPED_FAILED'}
    # Naive UTC, ISO 8601, made just before the POST.
    generated = datetime.datetime.fromisoformat(notification['generated_time'])
    assert generated.tzinfo is None
    age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - generated
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=2)
    assert set(notification) == {'type', 'hostname', 'generated_time',
                                 'payload'}
    # It signed in once: Keystone, then Masakari.
    assert [(m, p) for _, m, p in peer.capture.requests] == [
        ('GET', '/identity'), ('POST', '/identity/v3/auth/tokens'),
        ('POST', '/v1/notifications')]
    assert status == 0, 'the monitor exited %s on SIGTERM\n%s' % (
        status, peer.log_tail())
