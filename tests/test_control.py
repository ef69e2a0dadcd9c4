"""Unit tests of the control channel's message rules (peer.control), without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer import control
from peer.control import MAX_ID_CHARS, MAX_MESSAGE_BYTES, BadControlMessage, ControlMessage, parse


@pytest.mark.parametrize("text, expected", [
    ('{"type": "ping"}', ControlMessage("ping")),
    ('{"type": "pong", "extra": [1, 2]}', ControlMessage("pong")),
    ('{"type": "bye"}', ControlMessage("bye")),
    ('{"type": "data", "data": {"a": [1, "b", null]}}', ControlMessage("data", data={"a": [1, "b", None]})),
    ('{"type": "data"}', ControlMessage("data", data=None)),
    ('{"type": "moved", "id": "Xy_z-0123456789abcdef"}', ControlMessage("moved", id="Xy_z-0123456789abcdef")),
])
def test_what_our_peers_send_is_read(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("message", [
    '"str"', "5", "null", "[]", "true", '{"type": 5}', "{}", '{"type": "shout"}', '{"type": null}',
    '{"type": "moved", "id": {}}', '{"type": "moved"}', '{"type": "moved", "id": ""}',
    '{"type": "moved", "id": 7}', '{"type": "moved", "id": "' + "x" * (MAX_ID_CHARS + 1) + '"}',
    '{"type": "moved", "id": "a\\nb"}', '{"type": "moved", "id": "\\u001b]0;x\\u0007"}',
    '{"type": "data", "data": NaN}', '{"type": "data", "data": -Infinity}',
    '{"type": "data", "data": 1' + "0" * 5000 + '}',
    "[" * 50_000, "not json", "", '{"type": "data", "data": "' + "x" * MAX_MESSAGE_BYTES + '"}',
    "\u00e9" * (MAX_MESSAGE_BYTES // 2 + 1), b'{"type": "ping"}', b"\xff\xfe\xfd", b"",
])
def test_anything_else_is_refused_with_a_reason(message):
    with pytest.raises(BadControlMessage) as caught:
        parse(message)
    assert str(caught.value)


def test_the_size_cap_is_in_utf8_bytes():
    padding = MAX_MESSAGE_BYTES - len('{"type": "data", "data": ""}')
    assert parse('{"type": "data", "data": "' + "x" * padding + '"}').data == "x" * padding
    with pytest.raises(BadControlMessage, match="larger than"):
        parse('{"type": "data", "data": "' + "\u00e9" * (padding // 2 + 1) + '"}')


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_data_goes_through_unchanged(value):
    assert parse(control.encode(control.DATA, data=value)) == ControlMessage("data", data=value)


@given(st.text())
def test_any_text_is_read_or_refused_never_raises_otherwise(text):
    try:
        parse(text)
    except BadControlMessage:
        pass


def test_encode_keeps_the_wire_format_and_refuses_what_the_other_side_would_drop():
    assert json.loads(control.encode(control.MOVED, id="abc")) == {"type": "moved", "id": "abc"}
    assert json.loads(control.encode(control.PING)) == {"type": "ping"}
    with pytest.raises(ValueError, match="larger than"):
        control.encode(control.DATA, data="x" * MAX_MESSAGE_BYTES)
    with pytest.raises(ValueError):
        control.encode(control.DATA, data=float("nan"))
