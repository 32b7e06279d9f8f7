"""The agent's start-up check of libvirt's daemon limits: the daemon must
run both guest-agent ping budgets beside nova's calls, or hung guests
delay healthy ones inside libvirt."""

import logging

from tests.unit.test_conf import make_conf
from vmha import agent as agent_lib
from vmha.virt.libvirt import daemon_conf


class Driver:
    def __init__(self, found):
        self.found = found

    def daemon_limits(self):
        return self.found


def test_the_settings_are_read_and_the_rest_are_libvirts_defaults():
    text = ('# max_workers = 500\n'
            'max_workers = 200  # raised for vmha\n'
            'min_workers = 5\n')
    assert daemon_conf.parse_limits(text) == {
        'max_workers': 200, 'max_client_requests': 5}
    assert daemon_conf.parse_limits('') == daemon_conf.DEFAULTS


def test_the_modular_daemon_is_read_when_it_runs(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    assert daemon_conf.config_path('/c', str(run)) == '/c/libvirtd.conf'
    (run / 'virtqemud-sock').touch()
    assert daemon_conf.config_path('/c', str(run)) == '/c/virtqemud.conf'


def test_a_missing_file_is_unreadable_not_an_error(tmp_path):
    path = str(tmp_path / 'libvirtd.conf')
    assert daemon_conf.read_limits(path) == (path, None)
    with open(path, 'w') as conf:
        conf.write('max_workers = 180\nmax_client_requests = 5\n')
    assert daemon_conf.read_limits(path) == (
        path, {'max_workers': 180, 'max_client_requests': 5})


def test_enough_workers_says_nothing(caplog):
    conf = make_conf()
    found = ('/etc/libvirt/libvirtd.conf',
             {'max_workers': 32 + 128 + 20, 'max_client_requests': 5})
    with caplog.at_level(logging.INFO):
        assert agent_lib.check_daemon_limits(conf, Driver(found)) is None
    assert caplog.records == []


def test_libvirts_default_workers_are_named_with_what_to_set(caplog):
    conf = make_conf()
    found = ('/etc/libvirt/libvirtd.conf', dict(daemon_conf.DEFAULTS))
    warning = agent_lib.check_daemon_limits(conf, Driver(found))
    assert 'max_workers = 20, vmha needs at least 180' in warning
    assert 'libvirtd.conf' in warning
    [record] = caplog.records
    assert record.levelno == logging.WARNING


def test_a_client_limit_other_than_vmhas_is_named(caplog):
    conf = make_conf()
    found = ('/etc/libvirt/virtqemud.conf',
             {'max_workers': 500, 'max_client_requests': 10})
    warning = agent_lib.check_daemon_limits(conf, Driver(found))
    assert 'max_client_requests = 10' in warning
    assert 'max_workers' not in warning


def test_no_daemon_or_no_guest_agent_monitor_checks_nothing(caplog):
    conf = make_conf()
    assert agent_lib.check_daemon_limits(conf, Driver(None)) is None
    conf.set_override('enabled', False, 'guest_agent')
    found = ('/etc/libvirt/libvirtd.conf', dict(daemon_conf.DEFAULTS))
    assert agent_lib.check_daemon_limits(conf, Driver(found)) is None
    assert caplog.records == []
