"""vmha-masakari-bridge under a systemd-like supervisor (Type=notify,
WatchdogSec): READY once it consumes from the real RabbitMQ, WATCHDOG=1
while it runs, STOPPING=1 on SIGTERM.  The supervisor's side is a datagram
socket in the test's temp dir, as systemd's NOTIFY_SOCKET would be."""

import socket
import time

import pytest

from tests.integration import pipeline

pytestmark = [pytest.mark.integration, pytest.mark.one_backend]


def parsed(datagrams):
    return [dict(line.split('=', 1) for line in d.splitlines())
            for d in datagrams]


def test_bridge_tells_systemd_it_is_ready_and_alive(rabbitmq, topic,
                                                    tmp_path):
    path = str(tmp_path / 'notify')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    datagrams = []

    def receive_until(predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate(parsed(datagrams)):
            assert time.monotonic() < deadline, datagrams
            try:
                datagrams.append(sock.recv(4096).decode())
            except TimeoutError:
                pass

    # Masakari is never called: nothing is published on this topic.
    bridge = pipeline.Bridge(tmp_path / 'bridge', rabbitmq.transport_url,
                             'http://127.0.0.1:9/v1', topic)
    try:
        bridge.start(env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '1000000'})
        receive_until(lambda fields: sum('WATCHDOG' in f for f in fields)
                      >= 3, 30)
        fields = parsed(datagrams)
        assert fields[0]['READY'] == '1'
        assert sum('READY' in f for f in fields) == 1
        assert 'forwarding failures from %s' % topic in fields[0]['STATUS']
    finally:
        status = bridge.stop()
    assert status == 0
    receive_until(lambda fields: 'STOPPING' in fields[-1], 10)
    sock.close()
