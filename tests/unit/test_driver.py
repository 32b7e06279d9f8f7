"""What the driver answers about domains and guest agents (fake libvirt)."""

import pytest

from tests.fixtures import fakelibvirt
from tests.fixtures import virt
from vmha.virt import exception
from vmha.virt import power_state


@pytest.fixture
def driver():
    driver = virt.make_driver()
    driver.init_host()
    yield driver
    driver.cleanup()


def test_list_instances_reports_power_state_and_reason(driver):
    fake = driver.fake
    fake.add_domain('running', state=1, reason=1)
    fake.add_domain('paused-io', state=3, reason=5)
    fake.add_domain('crashed-off', state=5, reason=3)
    fake.add_domain('daemon-off', state=5, reason=8)
    fake.add_domain('odd', state=42, reason=0)
    infos = {i.name: (i.power_state, i.state_reason)
             for i in driver.list_instances()}
    assert infos == {
        'running': (power_state.RUNNING, 'RUNNING_BOOTED'),
        'paused-io': (power_state.PAUSED, 'PAUSED_IOERROR'),
        'crashed-off': (power_state.SHUTDOWN, 'SHUTOFF_CRASHED'),
        'daemon-off': (power_state.SHUTDOWN, 'SHUTOFF_DAEMON'),
        'odd': (power_state.NOSTATE, 'UNKNOWN_42_UNKNOWN'),
    }


def test_domain_vanishing_while_listing_is_skipped(driver):
    keep = driver.fake.add_domain('keep')
    gone = driver.fake.add_domain('gone')
    listed = driver.fake.connection.listAllDomains()
    del driver.fake.domains[gone.UUIDString()]
    driver.fake.connection.listAllDomains = lambda flags=0: listed
    assert [i.uuid for i in driver.list_instances()] == [keep.UUIDString()]


def test_get_instance_info_of_unknown_uuid(driver):
    with pytest.raises(exception.DomainNotFound):
        driver.get_instance_info('00000000-0000-0000-0000-000000000000')


def test_guest_agent_reply_is_decoded(driver):
    dom = driver.fake.add_domain('vm')
    dom.agent_reply = {'return': {}}
    assert driver.guest_agent_command(
        dom.UUIDString(), {'execute': 'guest-ping'}, 2) == {'return': {}}


@pytest.mark.parametrize('code, error', [
    (fakelibvirt.VIR_ERR_NO_SUPPORT, exception.NotSupported),
    (fakelibvirt.VIR_ERR_AGENT_UNRESPONSIVE, exception.AgentTimeout),
    (fakelibvirt.VIR_ERR_OPERATION_TIMEOUT, exception.AgentTimeout),
    (fakelibvirt.VIR_ERR_INTERNAL_ERROR, exception.AgentError),
])
def test_guest_agent_errors_are_translated(driver, code, error):
    dom = driver.fake.add_domain('vm')
    dom.agent_error = fakelibvirt.libvirtError('agent says no', code)
    with pytest.raises(error, match='agent says no'):
        driver.guest_agent_command(dom.UUIDString(),
                                   {'execute': 'guest-ping'}, 2)


def test_untrusted_agent_reply_that_is_not_json(driver):
    dom = driver.fake.add_domain('vm')
    dom.agent_reply = '{"return": '
    with pytest.raises(exception.AgentError, match='not JSON'):
        driver.guest_agent_command(dom.UUIDString(),
                                   {'execute': 'guest-ping'}, 2)
