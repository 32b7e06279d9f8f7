"""vmha-guest's framing: newline-delimited JSON, bounded lines.

StarlingX once lost reject votes that came two in one read; a guest
must also never buffer an endless line from the host.
"""

import json
import pathlib
import sys

from hypothesis import given
from hypothesis import strategies as st

GUEST = pathlib.Path(__file__).resolve().parents[2] / 'guest'
sys.path.insert(0, str(GUEST))

import vmha_guest  # noqa: E402


def feed_in_pieces(data, cuts, limit=vmha_guest.MAX_LINE):
    reader = vmha_guest.LineReader(limit)
    out = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out.extend(reader.feed(data[start:cut]))
        start = cut
    return out


def test_coalesced_lines_are_each_returned():
    reader = vmha_guest.LineReader()
    assert reader.feed(b'{"a":1}\n{"b":2}\n{"c"') == [
        (b'{"a":1}', None), (b'{"b":2}', None)]
    assert reader.feed(b':3}\n') == [(b'{"c":3}', None)]


def test_a_line_of_exactly_the_limit_passes_one_more_is_too_long():
    reader = vmha_guest.LineReader(limit=10)
    assert reader.feed(b'x' * 9 + b'\n') == [(b'x' * 9, None)]
    assert reader.feed(b'y' * 10 + b'\n') == [(None, 'too_long')]
    assert reader.feed(b'ok\n') == [(b'ok', None)]


def test_an_endless_line_is_reported_once_and_never_buffered():
    reader = vmha_guest.LineReader(limit=100)
    assert reader.feed(b'z' * 150) == [(None, 'too_long')]
    for _ in range(1000):
        assert reader.feed(b'z' * 4096) == []
    assert len(reader._buffer) == 0
    assert reader.feed(b'zz\n{"next":1}\n') == [(b'{"next":1}', None)]


line_text = st.binary(max_size=40).map(lambda b: b.replace(b'\n', b''))


@given(lines=st.lists(line_text, max_size=10),
       cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=20))
def test_any_split_of_the_stream_gives_the_same_lines(lines, cuts):
    data = b''.join(line + b'\n' for line in lines)
    cuts = [c for c in cuts if c <= len(data)]
    assert feed_in_pieces(data, cuts) == [(line, None) for line in lines]


@given(lengths=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20))
def test_oversize_lines_do_not_disturb_their_neighbours(lengths, cuts):
    limit = 30
    lines = [b'x' * n for n in lengths]
    data = b''.join(line + b'\n' for line in lines)
    cuts = [c for c in cuts if c <= len(data)]
    expected = [(line, None) if len(line) + 1 <= limit else (None, 'too_long')
                for line in lines]
    assert feed_in_pieces(data, cuts, limit) == expected


def test_decode_names_what_is_wrong():
    decode = vmha_guest.decode
    assert decode(b'\xff')[1] == ('not_utf8', None)
    assert decode(b'{"version":1')[1] == ('not_json', None)
    assert decode(b'[1, 2]')[1] == ('invalid', None)
    assert decode(b'{"version":1,"type":"x"}')[1] == ('invalid', None)
    assert decode(b'{"version":1,"type":"x","seq":-1}')[1] == (
        'invalid', None)
    assert decode(b'{"version":1,"type":"x","seq":true}')[1] == (
        'invalid', None)
    assert decode(b'{"version":2,"type":"x","seq":4}')[1] == ('version', 4)
    assert decode(b'{"version":1,"type":7,"seq":4}')[1] == ('invalid', 4)
    message, problem = decode(b'{"version":1,"type":"challenge","seq":4,'
                              b'"nonce":"ab","extra":[1]}')
    assert problem is None and message['nonce'] == 'ab'


def test_encode_is_one_line_of_utf8_json():
    data = vmha_guest.encode({'reason': 'caf\u00e9\nline', 'seq': 1})
    assert data.endswith(b'\n') and data.count(b'\n') == 1
    assert json.loads(data) == {'reason': 'caf\u00e9\nline', 'seq': 1}


@given(st.text(max_size=600))
def test_clean_text_is_printable_and_bounded(text):
    cleaned = vmha_guest.clean_text(text)
    assert len(cleaned) <= vmha_guest.MAX_REASON
    assert cleaned.isprintable()


def test_the_guest_modules_parse_as_python_3_8():
    """Guests run old Pythons: no syntax newer than 3.8."""
    import ast
    for name in ('vmha_guest.py', 'vmha_guest_client.py'):
        source = (GUEST / name).read_text()
        ast.parse(source, name, feature_version=(3, 8))
    for path in (GUEST / 'examples').glob('*.py'):
        ast.parse(path.read_text(), str(path), feature_version=(3, 8))
