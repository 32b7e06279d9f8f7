"""The heartbeat wire format: framing, parsing, encoding, what is granted.

The guest is untrusted: every malformed line must come back as a
``ProtocolError`` carrying the contract's nack reason (and the seq when
there was a valid one), never as another exception, and the framer must
hold no more than one line's worth of bytes whatever it is fed.
"""

import json

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from vmha.manager import heartbeat_protocol as protocol

NONCE = 'ab' * 16


def line(**obj):
    return json.dumps(obj).encode()


def response(**extra):
    obj = dict(version=1, type='challenge_response', seq=5, nonce=NONCE,
               health='healthy')
    obj.update(extra)
    return json.dumps(obj).encode()


# -- framing ---------------------------------------------------------------

def test_several_messages_in_one_read_are_each_a_line():
    framer = protocol.Framer()
    assert framer.feed(b'a\nbb\nccc\n') == [
        protocol.Line(b'a'), protocol.Line(b'bb'), protocol.Line(b'ccc')]
    assert framer.pending() == 0


def test_one_message_over_several_reads_is_one_line():
    framer = protocol.Framer()
    assert framer.feed(b'{"ver') == []
    assert framer.feed(b'sion"') == []
    assert framer.feed(b':1}\n{"x"') == [protocol.Line(b'{"version":1}')]
    assert framer.feed(b':2}\n') == [protocol.Line(b'{"x":2}')]


def test_a_line_of_exactly_the_limit_passes_one_byte_more_does_not():
    framer = protocol.Framer(max_line=8)
    assert framer.feed(b'1234567\n') == [protocol.Line(b'1234567')]
    assert framer.feed(b'12345678\n') == [protocol.Oversize(9)]
    assert framer.feed(b'ok\n') == [protocol.Line(b'ok')]


def test_any_bytes_like_read_is_accepted():
    framer = protocol.Framer()
    assert framer.feed(memoryview(b'a\nb')) == [protocol.Line(b'a')]
    assert framer.feed(bytearray(b'c\n')) == [protocol.Line(b'bc')]


def test_an_over_long_line_is_discarded_up_to_its_newline_unbuffered():
    framer = protocol.Framer(max_line=4096)
    chunk = b'x' * 65536
    for _ in range(64):  # 4 MiB with no newline
        assert framer.feed(chunk) == []
        assert framer.pending() == 0
    assert framer.feed(b'tail\n{"a":1}\n') == [
        protocol.Oversize(64 * 65536 + 5), protocol.Line(b'{"a":1}')]


def test_a_partial_line_that_grows_past_the_limit_is_dropped():
    framer = protocol.Framer(max_line=10)
    assert framer.feed(b'12345') == []
    assert framer.pending() == 5
    assert framer.feed(b'67890') == []
    assert framer.pending() == 0
    assert framer.feed(b'\nnext\n') == [protocol.Oversize(11),
                                        protocol.Line(b'next')]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=30),
       st.integers(min_value=2, max_value=64))
def test_framer_memory_never_passes_the_limit(chunks, max_line):
    framer = protocol.Framer(max_line=max_line)
    for chunk in chunks:
        for item in framer.feed(chunk):
            if type(item) is protocol.Line:
                assert len(item.data) < max_line
                assert b'\n' not in item.data
        assert framer.pending() < max_line


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.data())
def test_framer_output_does_not_depend_on_read_boundaries(stream, data):
    cuts = sorted(data.draw(st.lists(
        st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    whole = protocol.Framer(max_line=64).feed(stream)
    framer = protocol.Framer(max_line=64)
    pieces = []
    for start, end in zip([0] + cuts, cuts + [len(stream)], strict=True):
        pieces.extend(framer.feed(stream[start:end]))
    assert pieces == whole


# -- parsing ---------------------------------------------------------------

def reason_of(data):
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse(data)
    return caught.value.reason, caught.value.seq


@pytest.mark.parametrize('data, reason, seq', [
    (b'\xff\xfe{}', 'not_utf8', None),
    (b'{"version": 1,', 'not_json', None),
    (b'{"version":1,"type":"exit","seq":1,"x":NaN}', 'not_json', None),
    (b'{"version":1,"type":"exit","seq":1,"x":Infinity}', 'not_json', None),
    (b'[' * 3000 + b']' * 3000, 'not_json', None),
    (b'[1, 2]', 'invalid', None),
    (b'"init"', 'invalid', None),
    (line(version=1, type='exit'), 'invalid', None),
    (line(version=1, type='exit', seq=-1), 'invalid', None),
    (line(version=1, type='exit', seq=2 ** 53 + 1), 'invalid', None),
    (line(version=1, type='exit', seq=1.0), 'invalid', None),
    (line(version=1, type='exit', seq=True), 'invalid', None),
    (line(type='exit', seq=3), 'invalid', 3),
    (line(version=True, type='exit', seq=3), 'invalid', 3),
    (line(version=2, type='exit', seq=3), 'version', 3),
    (line(version=1, seq=3), 'invalid', 3),
    (line(version=1, type=7, seq=3), 'invalid', 3),
    (line(version=1, type='hello', seq=3), 'unknown_type', 3),
    (response(health='fine'), 'invalid', 5),
    (response(nonce='AB' * 16), 'invalid', 5),
    (response(nonce='ab' * 15), 'invalid', 5),
    (response(nonce=None), 'invalid', 5),
    (response(reason=7), 'invalid', 5),
    (response(corrective_action='destroy'), 'invalid', 5),
    (line(version=1, type='challenge_response', seq=5, health='healthy'),
     'invalid', 5),
    (line(version=1, type='init', seq=1, heartbeat_interval_ms=True),
     'invalid', 1),
    (line(version=1, type='init', seq=1, heartbeat_interval_ms=0),
     'invalid', 1),
    (line(version=1, type='init', seq=1, heartbeat_interval_ms=1000.5),
     'invalid', 1),
    (line(version=1, type='init', seq=1, vote_secs=-1), 'invalid', 1),
    (line(version=1, type='init', seq=1, vote_secs=1e300), 'invalid', 1),
    (b'{"version":1,"type":"init","seq":1,"vote_secs":1e400}', 'invalid', 1),
    (line(version=1, type='init', seq=1, vote_secs='8'), 'invalid', 1),
    (line(version=1, type='action_response', seq=4, action_id=NONCE,
          event='stop', notification='revocable', phase='pre',
          result='maybe'), 'invalid', 4),
])
def test_bad_lines_raise_the_contracts_nack_reason(data, reason, seq):
    assert reason_of(data) == (reason, seq)


def test_a_valid_response_parses_with_defaults_and_extras_dropped():
    message = protocol.parse(response(future_field={'a': 1}))
    assert message == protocol.Message('challenge_response', 5, {
        'nonce': NONCE, 'health': 'healthy', 'reason': '',
        'corrective_action': None})


def test_init_defaults_are_the_contracts():
    message = protocol.parse(line(version=1, type='init', seq=0))
    assert message.fields == {
        'client_version': '', 'heartbeat_interval_ms': None,
        'corrective_action': 'reboot', 'vote_secs': 8,
        'shutdown_notice_secs': 8, 'suspend_notice_secs': 8,
        'resume_notice_secs': 13, 'restart_secs': 300}


def test_guest_strings_are_cut_and_made_printable():
    message = protocol.parse(response(
        health='unhealthy', reason='db\x1b[31m down\n\u2028' + 'x' * 1000))
    reason = message.fields['reason']
    assert reason.startswith('db[31m down')
    assert len(reason) == protocol.MAX_STRING
    assert all(char.isprintable() for char in reason)


def test_seq_bounds_are_inclusive():
    assert protocol.parse(line(version=1, type='exit', seq=0)).seq == 0
    assert protocol.parse(
        line(version=1, type='exit', seq=2 ** 53)).seq == 2 ** 53


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_of_any_bytes_returns_or_raises_protocol_error(data):
    try:
        message = protocol.parse(data)
    except protocol.ProtocolError as error:
        assert error.reason in protocol.NACK_REASONS
    else:
        assert message.type in protocol.SCHEMAS


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(protocol.SCHEMAS)),
       st.dictionaries(st.sampled_from(
           ['seq', 'version', 'nonce', 'health', 'reason', 'action_id',
            'event', 'notification', 'phase', 'result', 'vote_secs',
            'heartbeat_interval_ms', 'corrective_action', 'nack_seq']),
           _json, max_size=8))
def test_parse_of_any_json_object_returns_or_raises_protocol_error(kind,
                                                                   obj):
    obj.setdefault('type', kind)
    data = json.dumps(obj).encode()
    try:
        message = protocol.parse(data)
    except protocol.ProtocolError as error:
        assert error.reason in protocol.NACK_REASONS
    else:
        for value in message.fields.values():
            assert type(value) is not bool


# -- encoding --------------------------------------------------------------

def test_encode_is_one_compact_line_that_parses_back():
    data = protocol.encode('challenge', 7, nonce=NONCE)
    assert data == (b'{"version":1,"type":"challenge","seq":7,'
                    b'"nonce":"' + NONCE.encode() + b'"}\n')
    assert protocol.parse(data[:-1]) == protocol.Message(
        'challenge', 7, {'nonce': NONCE})


def test_encode_refuses_what_would_not_round_trip():
    with pytest.raises(ValueError):
        protocol.encode('action_notify', 1, timeout_secs=float('nan'))
    with pytest.raises(ValueError):
        protocol.encode('nack', 1, detail='x' * protocol.MAX_LINE)


# -- what is granted -------------------------------------------------------

BOUNDS = protocol.Bounds(min_interval=0.5, max_interval=10.0,
                         default_interval=1.0, max_action='reboot',
                         max_notice=60.0)


def init(**fields):
    return protocol.parse(line(version=1, type='init', seq=1,
                               **fields)).fields


@pytest.mark.parametrize('wished_ms, granted_ms', [
    (None, 1000), (100, 500), (500, 500), (2500, 2500), (10000, 10000),
    (60000, 10000)])
def test_interval_is_clamped_into_the_operators_bounds(wished_ms, granted_ms):
    fields = {} if wished_ms is None else {'heartbeat_interval_ms': wished_ms}
    assert protocol.clamp(init(**fields), BOUNDS)[
        'heartbeat_interval_ms'] == granted_ms


@pytest.mark.parametrize('max_action, wished, granted', [
    ('log', 'log', 'log'), ('log', 'reboot', 'log'), ('log', 'stop', 'log'),
    ('reboot', 'log', 'log'), ('reboot', 'reboot', 'reboot'),
    ('reboot', 'stop', 'reboot'),
    ('stop', 'log', 'log'), ('stop', 'reboot', 'reboot'),
    ('stop', 'stop', 'stop')])
def test_action_is_capped_no_more_drastic_than_max_action(max_action, wished,
                                                          granted):
    bounds = BOUNDS._replace(max_action=max_action)
    assert protocol.clamp(init(corrective_action=wished), bounds)[
        'corrective_action'] == granted


def test_timeouts_are_capped_by_max_notice_and_kept_below_it():
    granted = protocol.clamp(init(vote_secs=2.5, shutdown_notice_secs=90,
                                  restart_secs=600), BOUNDS)
    assert granted == {
        'heartbeat_interval_ms': 1000, 'corrective_action': 'reboot',
        'vote_secs': 2.5, 'shutdown_notice_secs': 60.0,
        'suspend_notice_secs': 8, 'resume_notice_secs': 13,
        'restart_secs': 60.0}


def test_init_ack_of_what_is_granted_parses_as_the_contract_says():
    granted = protocol.clamp(init(), protocol.Bounds())
    data = protocol.encode('init_ack', 1, init_seq=1, **granted)
    assert protocol.parse(data[:-1]).fields == dict(granted, init_seq=1)
