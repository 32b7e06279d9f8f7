"""RabbitMQ outages lose no failure and report none twice.

The main case: the agent (``outbox_agent``, sender running) reports 500
failures of distinct instances, the first 300 just before RabbitMQ stops,
the other 200 while it is down for 30 s.  When it stops, the bridge is
still working through the first ones: the broker holds them as delivered
but not acknowledged, and the bridge's acknowledgements fail.  The last
200 wait in the agent's outbox.  After the restart Masakari must hold
exactly one row per instance: the outbox sent what it kept, and the
notifications the broker delivers a second time (it kept them, since the
queue is durable and the messages persistent) are recognised by their
message id and not posted again.

The second case is a controller restart: RabbitMQ restarts while the
bridge is down, with notifications waiting in the bridge's queue.  They
survive only because that queue is durable (``amqp_durable_queues =
true`` on both sides; with ``false`` the queue and all of them are gone).

Masakari here runs with ``fake:/`` RPC: the shared one casts to the same
broker after storing a notification and would hang every POST during the
outage, making the test about Masakari's RPC instead of vmha's delivery.
"""

import collections
import time
import uuid

import pytest

from tests.integration import pipeline

COUNT = 500
BEFORE = 300
OUTAGE = 30.0


@pytest.fixture
def host(masakari_without_bus):
    name = 'compute-broker-%s' % uuid.uuid4().hex[:6]
    masakari_without_bus.add_host(name)
    return name


def per_instance(masakari, host):
    """How many rows Masakari stored for each instance of ``host``."""
    return collections.Counter(row['payload']['instance_uuid']
                               for row in masakari.notifications(host))


def test_500_failures_across_a_30s_broker_outage_arrive_once_each(
        rabbitmq, masakari_without_bus, host, make_agent, start_bridge):
    masakari = masakari_without_bus
    bridge = start_bridge(masakari)
    agent = make_agent(host)
    instances = [str(uuid.uuid4()) for _ in range(COUNT)]
    before, during = instances[:BEFORE], instances[BEFORE:]
    process = agent.popen('--stdin', '--send', '--timeout', '180')
    try:
        process.stdin.write(''.join(u + '\n' for u in before))
        process.stdin.flush()
        # The agent sends faster than the bridge posts to Masakari: once
        # the broker has all of these, the bridge is still behind.
        pipeline.wait_for(lambda: agent.delivered() == BEFORE, 60,
                          'the first %d on the broker' % BEFORE)

        with rabbitmq.outage():
            stopped = time.monotonic()
            process.stdin.write(''.join(u + '\n' for u in during))
            process.stdin.flush()
            pipeline.wait_for(lambda: len(agent.outbox()) == COUNT, 30,
                              'the other %d in the outbox' % len(during))
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
            # Nothing got out while the broker was down.
            assert agent.delivered() == BEFORE
        # End of input: the agent exits once its outbox is empty.
        process.stdin.close()
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, agent.log_text()
    assert agent.delivered() == COUNT
    pipeline.wait_for(lambda: sum(per_instance(masakari, host).values())
                      >= COUNT, 120, 'all %d failures in Masakari' % COUNT)
    time.sleep(2)  # room for late duplicates, were there any
    counts = per_instance(masakari, host)
    assert sorted(counts) == sorted(instances)
    assert set(counts.values()) == {1}
    # What made "none twice" a real risk here did happen: the broker
    # delivered again notifications the bridge had already posted.
    assert bridge.log_lines('was already handled; not forwarded again')
    assert bridge.running()


def test_queued_failures_survive_a_broker_restart_while_the_bridge_is_down(
        rabbitmq, masakari_without_bus, host, make_agent, start_bridge):
    masakari = masakari_without_bus
    # The bridge declares its queue, then goes away (the controller
    # reboots): what the agent sends now waits in that queue.
    first = start_bridge(masakari)
    assert first.stop() == 0
    agent = make_agent(host)
    instances = [str(uuid.uuid4()) for _ in range(50)]
    result = agent.run('--write', *instances, '--send')
    assert result.returncode == 0, result.stdout + result.stderr
    assert agent.delivered() == len(instances)

    rabbitmq.stop_app()
    rabbitmq.start_app()
    start_bridge(masakari)

    pipeline.wait_for(lambda: len(masakari.notifications(host))
                      >= len(instances), 60, 'the queued failures')
    time.sleep(1)  # room for duplicates, were there any
    counts = per_instance(masakari, host)
    assert sorted(counts) == sorted(instances)
    assert set(counts.values()) == {1}
