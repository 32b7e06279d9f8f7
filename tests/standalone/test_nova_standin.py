"""The Keystone/Nova stand-in on libvirt's test:///default driver.

What masakari-engine relies on, checked without a real libvirtd: a
keystoneauth password session gets a token and finds ``compute`` in the
catalog; server show has the fields masakari reads; stop and start act on
the domain and move ``vm_state`` as nova does; nova refuses what nova
refuses.  The real engine against the stand-in:
tests/integration/test_recovery_loop.py.
"""

import time
import uuid as uuid_lib

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import generic
import libvirt
import pytest

from tests.fixtures import nova_standin

pytestmark = pytest.mark.functional

URI = 'test:///default'
XML = """<domain type='test'>
  <name>%s</name><uuid>%s</uuid><memory>65536</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def domain():
    connection = libvirt.open(URI)
    uuid = str(uuid_lib.uuid4())
    dom = connection.defineXML(XML % ('standin-%s' % uuid[:8], uuid))
    dom.create()
    yield dom
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    connection.close()


@pytest.fixture
def standin():
    server = nova_standin.NovaStandin(URI, 'compute-7').start()
    yield server
    server.stop()


@pytest.fixture
def compute(standin):
    """A keystoneauth session as masakari builds one (password auth on
    the v3 URL), bound to the catalog's public compute endpoint."""
    auth = generic.Password(auth_url=standin.auth_url, username='masakari',
                            password='secret', project_name='service',
                            user_domain_name='default',
                            project_domain_name='default')
    session = ks_session.Session(auth=auth)

    def call(method, path, **kwargs):
        return session.request(
            path, method, endpoint_filter={'service_type': 'compute',
                                           'interface': 'public'},
            raise_exc=False, **kwargs)
    return call


def wait(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


def test_show_has_what_masakari_reads(standin, compute, domain):
    standin.set_metadata(domain.UUIDString(), HA_Enabled='True')
    reply = compute('GET', '/servers/%s' % domain.UUIDString())
    assert reply.status_code == 200
    server = reply.json()['server']
    assert server['id'] == domain.UUIDString()
    assert server['metadata'] == {'HA_Enabled': 'True'}
    assert (server['status'], server['OS-EXT-STS:vm_state'],
            server['OS-EXT-STS:power_state']) == ('ACTIVE', 'active',
                                                  nova_standin.RUNNING)
    assert server['OS-EXT-SRV-ATTR:host'] == 'compute-7'
    # The catalog pointed keystoneauth at the stand-in's compute URL,
    # after a token: discovery, token, then the call, in the record.
    assert [(c.method, c.path) for c in standin.calls] == [
        ('GET', '/v3'), ('POST', '/v3/auth/tokens'),
        ('GET', '/compute/v2.1/servers/%s' % domain.UUIDString())]


def test_stop_then_start_act_on_the_domain(standin, compute, domain):
    server_id = domain.UUIDString()
    reply = compute('POST', '/servers/%s/action' % server_id,
                    json={'os-stop': None})
    assert reply.status_code == 202
    wait(lambda: standin.vm_state(server_id) == 'stopped')
    assert not domain.isActive()
    server = compute('GET', '/servers/%s' % server_id).json()['server']
    assert (server['status'], server['OS-EXT-STS:power_state']) == (
        'SHUTOFF', nova_standin.SHUTDOWN)

    reply = compute('POST', '/servers/%s/action' % server_id,
                    json={'os-start': None})
    assert reply.status_code == 202
    wait(lambda: standin.vm_state(server_id) == 'active')
    assert domain.isActive()
    assert standin.actions(server_id) == ['os-stop', 'os-start']
    assert standin.errors == []


def test_a_crashed_domain_is_still_active_to_nova(standin, compute,
                                                  domain):
    # Right after a crash nova has not synced the power state yet: the
    # server is ACTIVE with power state SHUTDOWN, so masakari stops it
    # before it starts it.
    domain.destroy()
    server = compute('GET', '/servers/%s' % domain.UUIDString()).json()[
        'server']
    assert (server['OS-EXT-STS:vm_state'],
            server['OS-EXT-STS:power_state']) == ('active',
                                                  nova_standin.SHUTDOWN)
    reply = compute('POST', '/servers/%s/action' % domain.UUIDString(),
                    json={'os-stop': None})
    assert reply.status_code == 202
    wait(lambda: standin.vm_state(domain.UUIDString()) == 'stopped')
    assert standin.errors == []


def test_nova_refuses_what_nova_refuses(standin, compute, domain):
    server_id = domain.UUIDString()
    start = compute('POST', '/servers/%s/action' % server_id,
                    json={'os-start': None})
    assert start.status_code == 409  # it is active
    assert domain.isActive()
    missing = compute('GET', '/servers/%s' % uuid_lib.uuid4())
    assert missing.status_code == 404
    reset = compute('POST', '/servers/%s/action' % server_id,
                    json={'os-resetState': {'state': 'error'}})
    assert reset.status_code == 202
    assert standin.vm_state(server_id) == 'error'
    unknown = compute('POST', '/servers/%s/action' % server_id,
                      json={'os-migrateLive': {}})
    assert unknown.status_code == 400
    # The call record keeps what the stand-in does not serve.
    assert 'os-migrateLive' in [c.action for c in standin.calls]


def test_no_token_no_nova(standin, domain):
    import urllib.error
    import urllib.request

    request = urllib.request.Request('%s/servers/%s' % (
        standin.compute_url, domain.UUIDString()))
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 401
    assert standin.actions(domain.UUIDString()) == []
