"""From a dead QEMU to a VM that runs again, on real parts only.

A real libvirtd and QEMU guest with qemu-ga, the real vmha-agent and
vmha-masakari-bridge, RabbitMQ, masakari-api 22 and masakari-engine 22;
only nova is a stand-in (tests/fixtures/nova_standin.py), which stops
and starts the domain on the same libvirtd when masakari-engine asks.

What a user notices: the crashed VM runs again and its guest answers;
Masakari says ``finished``; it was recovered exactly once; a VM without
``HA_Enabled`` is left off; with the engine down the failure waits and
is recovered once the engine is back; a second crash is a second
recovery.  The stand-in's record is masakari-engine's real call
sequence: the contract the stand-in implements.

The guests are booted once for the module and reused (each recovery
boots them again); the tests run in file order and each leaves its
guests running.
"""

import json
import re
import time

import pytest

from tests.conftest import BACKEND
from tests.integration import pipeline
from tests.integration import recovery
from vmha.api import table

pytestmark = pytest.mark.realvm


@pytest.fixture(scope='module')
def loop(recovery_services, rabbitmq, tmp_path_factory):
    """vmha-agent + bridge in front of :func:`recovery_services`."""
    loop = recovery.Loop(tmp_path_factory.mktemp('loop'),
                         rabbitmq.transport_url, recovery_services,
                         BACKEND).start()
    yield loop
    agent_status, bridge_status = loop.stop()
    assert bridge_status == 0, loop.bridge.log_tail()
    assert agent_status == 0, loop.agent.log_tail()


@pytest.fixture(scope='module')
def guests(domains, loop):
    """``guests(name, ha=True)``: a booted guest of this module (made on
    first use), ``HA_Enabled`` in the stand-in's metadata if ``ha``."""
    made = {}

    def get(name, ha=True):
        if name not in made:
            guest = domains.create('loop-%s' % name)
            if ha:
                loop.nova.set_metadata(guest.uuid, HA_Enabled='True')
            recovery.wait_for_ping(guest)
            made[name] = guest
        return made[name]
    yield get
    for guest in made.values():
        domains.remove(guest.name)


def kinds(calls):
    """The record as letters: d(iscovery) t(oken) g(et server)
    S(top) T (start) R(eset) ?(other)."""
    letters = []
    for call in calls:
        if call.path == '/v3':
            letters.append('d')
        elif call.path == '/v3/auth/tokens':
            letters.append('t')
        elif call.action == 'os-stop':
            letters.append('S')
        elif call.action == 'os-start':
            letters.append('T')
        elif call.action == 'os-resetState':
            letters.append('R')
        elif call.method == 'GET' and call.server:
            letters.append('g')
        else:
            letters.append('?')
    return ''.join(letters)


def recoveries_of(received, instance_uuid):
    """The ``instance.recovery`` payload data of one instance, in the
    order they arrived."""
    return [n[4]['vmha_object.data'] for n in received
            if n[3] == 'instance.recovery'
            and n[4]['vmha_object.data']['uuid'] == instance_uuid]


def wait_for_recovery(received, instance_uuid, status, timeout=60):
    pipeline.wait_for(lambda: status in [
        d['status'] for d in recoveries_of(received, instance_uuid)],
        timeout, 'instance.recovery %s of %s' % (status, instance_uuid))
    return recoveries_of(received, instance_uuid)


def status_row(loop, instance_uuid):
    status = loop.agent.status_json()
    [row] = [r for r in status['instances'] if r['uuid'] == instance_uuid]
    return row, table.render(status)


def test_crashed_vm_runs_again_recovered_once(loop, guests,
                                              realvm_measure, tmp_path):
    guest = guests('a')
    before = len(loop.nova.calls)
    with pipeline.listen(loop.transport_url, loop.topic,
                         '%s_recoveries' % loop.topic, tmp_path) as received:
        killed = time.monotonic()
        guest.kill9_qemu()

        row = loop.wait_for_row(guest.uuid)
        assert row['status'] == 'finished', loop.log_tail()
        recovery.wait_for_ping(guest)
        realvm_measure('kill -9 -> guest answers after recovery',
                       time.monotonic() - killed)
        wait_for_recovery(received, guest.uuid, 'finished')
        time.sleep(3)  # room for a second recovery, were one coming

    # The bridge's account, in order, one each, one episode, Masakari's id.
    published = recoveries_of(received, guest.uuid)
    statuses = [d['status'] for d in published]
    assert statuses in (['accepted', 'running', 'finished'],
                        ['accepted', 'finished']), statuses
    assert {d['episode'] for d in published} == {published[0]['episode']}
    assert published[0]['episode']
    assert {d['notification_uuid'] for d in published} == {
        row['notification_uuid']}
    # The agent's account (the bridge's RPC cast): RECOVERY finished N.Ns.
    agent_row, text = status_row(loop, guest.uuid)
    assert agent_row['recovery']['status'] == 'finished', agent_row
    assert agent_row['recovery']['took'] > 0, agent_row
    line = [t for t in text.splitlines() if guest.name in t]
    assert line and re.search(r'finished \d+\.\ds', line[0]), text

    assert [r['status'] for r in loop.recovery.rows(guest.uuid)] == [
        'finished']
    assert loop.nova.actions(guest.uuid) == ['os-stop', 'os-start']
    assert guest.is_running() and guest.ping()
    # The contract: masakari-engine authenticates for every nova call
    # (a new keystone session each time: discovery, token, the call)...
    calls = loop.nova.calls[before:]
    assert re.fullmatch(r'(dt[gST])+', kinds(calls)), kinds(calls)
    # ...and for the instance: show it, stop it, show it until stopped,
    # show it, start it, show it until active.
    mine = [c for c in calls if c.server == guest.uuid]
    assert re.fullmatch(r'gSg+Tg+', kinds(mine)), kinds(mine)
    assert all(c.body == {c.action: None} for c in mine if c.action)
    assert loop.nova.errors == []
    # Masakari's own account of it (microversion 1.1).
    details = json.dumps(loop.recovery.workflow(row['notification_uuid']))
    assert 'Confirmed instance' in details, details


def test_second_crash_after_recovery_is_a_second_recovery(loop, guests):
    guest = guests('a')
    recovery.wait_for_ping(guest)
    stops = loop.nova.actions(guest.uuid).count('os-stop')
    rows = len(loop.recovery.rows(guest.uuid))
    guest.kill9_qemu()

    row = loop.wait_for_row(guest.uuid, count=rows + 1)
    assert row['status'] == 'finished', loop.log_tail()
    recovery.wait_for_ping(guest)
    assert loop.nova.actions(guest.uuid)[2 * stops:] == ['os-stop',
                                                          'os-start']
    assert len(loop.recovery.rows(guest.uuid)) == rows + 1


def test_vm_without_ha_enabled_is_left_off(loop, guests, tmp_path):
    guest = guests('plain', ha=False)
    with pipeline.listen(loop.transport_url, loop.topic,
                         '%s_recoveries' % loop.topic, tmp_path) as received:
        guest.kill9_qemu()
        row = loop.wait_for_row(guest.uuid)
        published = wait_for_recovery(received, guest.uuid, 'ignored')
    # masakari-engine 22 skips such an instance and calls the
    # notification "finished", not "ignored" (SkipInstanceRecovery-
    # Exception in engine/manager.py); only the workflow details say so.
    assert row['status'] == 'finished'
    details = json.dumps(loop.recovery.workflow(row['notification_uuid']))
    assert 'not Ha_Enabled' in details, details
    # ...and vmha says what it means: nothing was recovered.
    assert [d['status'] for d in published][-1] == 'ignored', published
    assert 'not Ha_Enabled' in published[-1]['reason'], published
    assert 'finished' not in [d['status'] for d in published]
    time.sleep(3)
    assert loop.nova.actions(guest.uuid) == []
    assert guest.state().startswith('shut off')
    assert [c.method for c in loop.nova.calls_for(guest.uuid)] == ['GET']


def test_with_the_engine_down_the_failure_waits_then_recovers(
        loop, guests):
    guest = guests('a')
    recovery.wait_for_ping(guest)
    actions = len(loop.nova.actions(guest.uuid))
    rows = len(loop.recovery.rows(guest.uuid))
    with loop.recovery.engine.outage():
        guest.kill9_qemu()
        row = loop.wait_for_row(guest.uuid, count=rows + 1,
                                status=('new',))
        time.sleep(5)  # nothing recovers it meanwhile
        assert loop.recovery.rows(guest.uuid)[-1]['status'] == 'new'
        assert guest.state().startswith('shut off')
        assert len(loop.nova.actions(guest.uuid)) == actions
    # The cast waited in the engine's queue; the periodic task would
    # take the row too: either way it is recovered once.
    row = loop.wait_for_row(guest.uuid, count=rows + 1)
    assert row['status'] == 'finished', loop.log_tail()
    recovery.wait_for_ping(guest)
    time.sleep(5)  # the engine's periodic retry ran meanwhile
    assert loop.nova.actions(guest.uuid)[actions:] == ['os-stop',
                                                        'os-start']
    assert len(loop.recovery.rows(guest.uuid)) == rows + 1


def test_three_vms_crashing_together_are_three_recoveries(loop, guests):
    crashing = [guests(name) for name in ('a', 'b', 'c')]
    for guest in crashing:
        recovery.wait_for_ping(guest)
    actions = {g.uuid: len(loop.nova.actions(g.uuid)) for g in crashing}
    rows = {g.uuid: len(loop.recovery.rows(g.uuid)) for g in crashing}
    for guest in crashing:
        guest.kill9_qemu()

    for guest in crashing:
        row = loop.wait_for_row(guest.uuid, count=rows[guest.uuid] + 1,
                                timeout=180)
        assert row['status'] == 'finished', loop.log_tail()
    for guest in crashing:
        recovery.wait_for_ping(guest)
    for guest in crashing:
        assert loop.nova.actions(guest.uuid)[actions[guest.uuid]:] == [
            'os-stop', 'os-start']
        assert len(loop.recovery.rows(guest.uuid)) == rows[guest.uuid] + 1
