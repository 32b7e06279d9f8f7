"""``AgentEndpoint.request_action``, called as oslo.messaging's executor
calls it, on this run's backend (the functional tests run the RPC
server on threading only: see tests/functional/test_rpc_api.py).

The runner is the real ``ActionRunner`` on the fake libvirt; the
inventory is a stub naming the VMs (the endpoint only resolves names).
"""

from oslo_messaging.rpc import dispatcher
import pytest

from tests.conftest import BACKEND
from tests.fixtures import virt
from vmha import concurrency
from vmha import rpcapi
from vmha.api import rpc as rpc_api
from vmha.manager import action_runner
from vmha.manager import inventory

RUNNING, PAUSED = 1, 3


class Inventory:
    def __init__(self, domains):
        self._rows = [{'uuid': d.UUIDString(), 'name': d.name()}
                      for d in domains]

    def instance(self, key):
        for row in self._rows:
            if key in (row['uuid'], row['name']):
                return row
        raise inventory.InstanceNotFound('no domain %r on this host' % key)


class Service:
    host = 'compute-1'

    def __init__(self, driver, domains):
        self.inventory = Inventory(domains)
        self.actions = action_runner.ActionRunner(
            driver, None, None, None, self.host, concurrency.get(BACKEND),
            shutdown_timeout=1.0, call_timeout=5.0)


@pytest.fixture
def setup():
    driver = virt.make_driver()
    driver.init_host()
    dom = driver.fake.add_domain('web-1')
    yield driver, dom, Service(driver, [dom])
    driver.cleanup()


def raised(call, *args, **kwargs):
    """The exception the endpoint marked expected (oslo.messaging sends
    it to the client as that class)."""
    with pytest.raises(dispatcher.ExpectedException) as caught:
        call(*args, **kwargs)
    return caught.value.exc_info[1]


def endpoint(service, allow_changes=True):
    return rpc_api.AgentEndpoint(service, concurrency.get(BACKEND),
                                 allow_changes=allow_changes)


def test_request_action_by_name_pauses_the_vm(setup):
    driver, dom, service = setup
    ctxt = {'user_id': 'alice', 'request_id': 'req-1'}

    answer = endpoint(service).request_action(ctxt, 'web-1', 'pause')

    assert answer['done'] and dom.state_value[0] == PAUSED
    assert answer['instance'] == dom.UUIDString()
    assert answer['name'] == 'web-1'


def test_event_names_are_accepted_as_actions(setup):
    driver, dom, service = setup
    answer = endpoint(service).request_action({}, 'web-1', 'resize_begin')
    assert answer['action'] == 'resize-begin'


def test_read_only_api_refuses_and_changes_nothing(setup):
    driver, dom, service = setup
    error = raised(endpoint(service, allow_changes=False).request_action,
                   {}, 'web-1', 'stop')
    assert isinstance(error, rpcapi.ChangesRefused)
    assert 'no stop of web-1' in str(error)
    assert dom.calls == []


@pytest.mark.parametrize('vote_only', ['yes', 1, None])
def test_vote_only_must_be_a_boolean(setup, vote_only):
    driver, dom, service = setup
    error = raised(endpoint(service).request_action, {}, 'web-1', 'stop',
                   vote_only=vote_only)
    assert isinstance(error, ValueError) and 'vote_only' in str(error)
    assert dom.calls == []


def test_unknown_action_and_instance(setup):
    driver, dom, service = setup
    assert isinstance(raised(endpoint(service).request_action, {},
                             'web-1', {'a': 1}), action_runner.UnknownAction)
    assert isinstance(raised(endpoint(service).request_action, {}, 'nope',
                             'stop'), inventory.InstanceNotFound)
    assert dom.calls == []


def test_the_endpoint_serves_1_1():
    # 1.3 (live_migrate, migration_task) serves every 1.x before it.
    assert rpc_api.AgentEndpoint.target.version == '1.3'
    assert rpcapi.AgentAPI.VERSION == '1.3'
