"""Configuration objects are independent of each other."""

from oslo_config import cfg
import pytest

import vmha.conf
from vmha.conf import base


def make_conf():
    conf = cfg.ConfigOpts()
    vmha.conf.register_opts(conf)
    conf([], project='vmha')
    return conf


def test_an_override_stays_in_its_own_config():
    """Regression: a module-level OptGroup registered on two ConfigOpts
    shared its options, so one test's override leaked into the next."""
    first, second = make_conf(), make_conf()
    for group, opt, value in (('events', 'stopped_delay', 1.0),
                              ('libvirt', 'connection_uri', 'test:///x'),
                              ('database', 'path', '/tmp/x.sqlite'),
                              ('outbox', 'batch_size', 7)):
        default = second[group][opt]
        first.set_override(opt, value, group=group)
        assert first[group][opt] == value
        assert second[group][opt] == default, (group, opt)


def test_register_group_leaves_the_module_group_untouched():
    """The module-level OptGroup stays empty: each ConfigOpts holds its
    own copy, so one config's options and overrides never reach
    another's."""
    group = cfg.OptGroup('example')
    opts = [cfg.IntOpt('answer', default=42)]
    conf = cfg.ConfigOpts()
    base.register_group(conf, group, opts)
    conf([], project='vmha')
    conf.set_override('answer', 7, group='example')
    assert conf.example.answer == 7
    assert 'answer' not in group._opts


def test_defaults_validate():
    vmha.conf.validate(make_conf())


@pytest.mark.parametrize('option, value', [
    ('interval', 3601.0), ('timeout', 601.0), ('failure_threshold', 101),
])
def test_guest_agent_settings_are_bounded_from_above(option, value):
    """Regression (issue 11 item 8): a huge interval, timeout or
    threshold switched hang detection off without a word; the same
    bounds hold for each domain's metadata."""
    conf = make_conf()
    with pytest.raises(ValueError):
        conf.set_override(option, value, group='guest_agent')


@pytest.mark.parametrize('overrides, message', [
    ({'min_interval': 5.0, 'max_interval': 2.0},
     '[heartbeat] min_interval (5.0) must not be more than '
     '[heartbeat] max_interval (2.0)'),
    ({'default_interval': 20.0},
     '[heartbeat] default_interval (20.0) must be between min_interval '
     '(0.4) and max_interval (10.0)'),
    ({'reconnect_interval': 9.0},
     '[heartbeat] reconnect_interval (9.0) must not be more than '
     '[heartbeat] reconnect_max_interval (5.0)'),
    ({'channel_name': 'has space'},
     "[heartbeat] channel_name ('has space') must be a virtio port name: "
     '1 to 255 printable characters, no spaces'),
])
def test_inconsistent_heartbeat_bounds_stop_the_agent_in_one_line(
        overrides, message):
    conf = make_conf()
    for option, value in overrides.items():
        conf.set_override(option, value, group='heartbeat')
    with pytest.raises(vmha.conf.ConfigError) as error:
        vmha.conf.validate(conf)
    assert str(error.value) == message


def test_an_unknown_heartbeat_max_action_is_refused():
    conf = make_conf()
    with pytest.raises(ValueError):
        conf.set_override('max_action', 'destroy', group='heartbeat')
