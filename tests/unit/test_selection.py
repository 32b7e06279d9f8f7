"""Per-VM metadata is untrusted input: every value vmha cannot use is
ignored with one warning naming the domain, and the defaults stay.

Regression (issue 11 item 8): ``interval="inf"``, ``1e308`` and a huge
``failure_threshold`` were accepted and switched hang detection off for
the VM; ``timeout="1e400"`` raised instead of being ignored.
"""

import logging

import pytest

from vmha.manager import guest_monitor
from vmha.manager import selection

NAME, UUID = 'web-1', '6f1b8c2e-3f1e-4a47-9a8e-0d4c1f2b3a4c'
DEFAULTS = guest_monitor.Settings(True, 5.0, 2.0, 2, 'notify')


def element(attributes, root='monitoring', namespace=selection.NAMESPACE):
    return '<%s xmlns="%s"><guest-agent %s/></%s>' % (
        root, namespace, attributes, root)


def warnings_about_the_domain(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and NAME in r.getMessage()
            and UUID in r.getMessage()]


@pytest.mark.parametrize('attributes', [
    'interval="inf"',
    'interval="1e308"',
    'interval="3601"',
    'interval="nan"',
    'interval="-1"',
    'interval="0.1"',
    'timeout="1e400"',
    'timeout="601"',
    'timeout="-0.5"',
    'timeout="5"',  # not below the default interval
    'failure_threshold="99999999999999999999"',
    'failure_threshold="101"',
    'failure_threshold="0"',
    'failure_threshold="-3"',
    'failure_threshold="1e3"',
    'enabled="maybe"',
    'action="explode"',
    'frequency="often"',
])
def test_a_value_out_of_bounds_is_ignored_with_one_warning(caplog,
                                                          attributes):
    settings = selection.guest_agent_settings(element(attributes), NAME,
                                              UUID, DEFAULTS)

    assert settings == {}
    assert len(warnings_about_the_domain(caplog)) == 1
    assert attributes.split('=')[1].strip('"') in caplog.text


def test_good_values_within_the_bounds_are_kept(caplog):
    settings = selection.guest_agent_settings(element(
        'interval="3600" timeout="600" failure_threshold="100" '
        'action="reset" enabled="yes"'), NAME, UUID, DEFAULTS)

    assert settings == {'interval': 3600.0, 'timeout': 600.0,
                        'failure_threshold': 100, 'action': 'reset',
                        'enabled': True}
    assert warnings_about_the_domain(caplog) == []


def test_one_bad_value_leaves_the_others_in_force(caplog):
    settings = selection.guest_agent_settings(element(
        'interval="inf" timeout="1" failure_threshold="3"'), NAME, UUID,
        DEFAULTS)

    assert settings == {'timeout': 1.0, 'failure_threshold': 3}
    assert len(warnings_about_the_domain(caplog)) == 1


def test_a_timeout_not_below_its_own_interval_ignores_both(caplog):
    settings = selection.guest_agent_settings(element(
        'interval="10" timeout="10"'), NAME, UUID, DEFAULTS)

    assert settings == {}
    assert len(warnings_about_the_domain(caplog)) == 2


@pytest.mark.parametrize('xml', [
    element('interval="10"', root='monitor'),
    element('interval="10"', namespace='http://example.com/other'),
    '<monitoring xmlns="%s"><guest-agent' % selection.NAMESPACE,
])
def test_a_wrong_or_broken_root_element_is_ignored_with_one_warning(
        caplog, xml):
    assert selection.guest_agent_settings(xml, NAME, UUID, DEFAULTS) == {}
    assert selection.metadata_choice(
        xml.replace('<monitor ', '<monitor enabled="false" '), NAME,
        UUID) is None
    assert len(warnings_about_the_domain(caplog)) == 2  # one per reader


@pytest.mark.parametrize('value, choice', [
    ('false', False), ('no', False), ('0', False),
    ('true', True), ('YES', True), ('1', True),
])
def test_enabled_says_yes_or_no(caplog, value, choice):
    xml = '<monitoring xmlns="%s" enabled="%s"/>' % (selection.NAMESPACE,
                                                      value)
    assert selection.metadata_choice(xml, NAME, UUID) is choice
    assert warnings_about_the_domain(caplog) == []


@pytest.mark.parametrize('value', ['maybe', '', 'inf', 'nein'])
def test_enabled_maybe_is_ignored_with_one_warning(caplog, value):
    xml = '<monitoring xmlns="%s" enabled="%s"/>' % (selection.NAMESPACE,
                                                      value)
    assert selection.metadata_choice(xml, NAME, UUID) is None
    [warning] = warnings_about_the_domain(caplog)
    assert repr(value) in warning


def test_no_metadata_at_all_says_nothing_and_warns_nothing(caplog):
    assert selection.metadata_choice(None, NAME, UUID) is None
    assert selection.guest_agent_settings(None, NAME, UUID, DEFAULTS) == {}
    assert caplog.records == []


def test_a_parsed_element_is_read_as_it_is():
    xml = '<monitoring xmlns="%s" enabled="no"/>' % selection.NAMESPACE
    parsed = selection.parse_monitoring(xml, NAME, UUID)
    assert selection.parse_monitoring(parsed, NAME, UUID) is parsed
    assert selection.metadata_choice(parsed, NAME, UUID) is False


def test_the_selector_hands_its_one_parse_to_the_override_reader(caplog):
    """The selector parses a domain's metadata once: the operator-choice
    reader gets the same element, and a broken text warns once."""
    selector = selection.Selector(driver=None)
    seen = []
    selector.on_metadata_override = (
        lambda uuid, name, found: seen.append(found))
    xml = '<monitoring xmlns="%s" enabled="no"/>' % selection.NAMESPACE

    assert selector.decide(UUID, NAME, xml) is False
    [found] = seen
    assert found.get('enabled') == 'no'

    assert selector.decide(UUID, NAME, '<monitoring') is True  # names
    assert len(seen) == 1
    assert len(warnings_about_the_domain(caplog)) == 1
