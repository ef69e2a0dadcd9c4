"""Unit tests of the data channels' message rules (peer.wire: control and files), without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer import wire
from peer.wire import (MAX_ID_CHARS, MAX_MESSAGE_BYTES, Accept, BadControlMessage, BadFilesMessage, BadMessage,
                       ControlMessage, End, Failed, Received, Start, encode_files, parse_control, parse_files)


# The control channel


@pytest.mark.parametrize("text, expected", [
    ('{"type": "ping"}', ControlMessage("ping")),
    ('{"type": "pong", "extra": [1, 2]}', ControlMessage("pong")),
    ('{"type": "bye"}', ControlMessage("bye")),
    ('{"type": "data", "data": {"a": [1, "b", null]}}', ControlMessage("data", data={"a": [1, "b", None]})),
    ('{"type": "data"}', ControlMessage("data", data=None)),
    ('{"type": "moved", "id": "Xy_z-0123456789abcdef"}', ControlMessage("moved", id="Xy_z-0123456789abcdef")),
])
def test_what_our_peers_send_is_read(text, expected):
    assert parse_control(text) == expected


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
        parse_control(message)
    assert str(caught.value)


def test_the_size_cap_is_in_utf8_bytes():
    padding = MAX_MESSAGE_BYTES - len('{"type": "data", "data": ""}')
    assert parse_control('{"type": "data", "data": "' + "x" * padding + '"}').data == "x" * padding
    with pytest.raises(BadControlMessage, match="larger than"):
        parse_control('{"type": "data", "data": "' + "\u00e9" * (padding // 2 + 1) + '"}')


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_data_goes_through_unchanged(value):
    assert parse_control(wire.encode_control(wire.DATA, data=value)) == ControlMessage("data", data=value)


@given(st.text())
def test_any_text_is_read_or_refused_never_raises_otherwise(text):
    try:
        parse_control(text)
    except BadControlMessage:
        pass


def test_encode_keeps_the_wire_format_and_refuses_what_the_other_side_would_drop():
    assert json.loads(wire.encode_control(wire.MOVED, id="abc")) == {"type": "moved", "id": "abc"}
    assert json.loads(wire.encode_control(wire.PING)) == {"type": "ping"}
    with pytest.raises(ValueError, match="larger than"):
        wire.encode_control(wire.DATA, data="x" * MAX_MESSAGE_BYTES)
    with pytest.raises(ValueError):
        wire.encode_control(wire.DATA, data=float("nan"))


# The files channel

@pytest.mark.parametrize("text, expected", [
    ('{"type": "start", "name": "a.bin", "size": 5}', Start("a.bin", 5)),
    ('{"type": "start", "name": "", "size": 0}', Start("", 0)),
    ('{"type": "end", "sha256": "' + "ab" * 32 + '"}', End("ab" * 32)),
    ('{"type": "received", "sha256": "' + "0" * 64 + '"}', Received("0" * 64)),
    ('{"type": "failed", "reason": "declined"}', Failed("declined")),
    ('{"type": "failed", "reason": ["x"]}', Failed("no reason given")),
    ('{"type": "failed", "reason": "' + "x" * 5000 + '"}', Failed("x" * 200)),
])
def test_files_messages_parse_into_their_types(text, expected):
    assert parse_files(text) == expected


BAD_FILES_MESSAGES = [
    '"str"', "5", "null", "[]", "{}", "not json", "[" * 100_000, "1" * 5000,
    '{"type": "start", "name": "x", "size": 1e400}', '{"type": "start", "name": 5, "size": 1}',
    '{"type": "start", "name": "x", "size": true}', '{"type": "start", "name": "x", "size": -1}',
    '{"type": "start", "name": "x", "size": 1.5}', '{"type": "start", "name": "x", "size": "5"}',
    '{"type": "start", "name": "x"}', '{"type": "end", "sha256": 5}', '{"type": "end", "sha256": "zz"}',
    '{"type": "received"}', '{"type": 5}', '{"type": ["start"]}', '{"type": "explode"}',
]


@pytest.mark.parametrize("text", BAD_FILES_MESSAGES)
def test_wrong_typed_files_messages_are_refused_with_a_reason(text):
    with pytest.raises(BadMessage) as refused:
        parse_files(text)
    assert str(refused.value) and len(str(refused.value)) < 80


@pytest.mark.parametrize("message, text", [
    (Start("a.bin", 5), '{"type": "start", "name": "a.bin", "size": 5}'),
    (Accept(), '{"type": "accept"}'),
    (End("ab" * 32), '{"type": "end", "sha256": "' + "ab" * 32 + '"}'),
    (Received("0" * 64), '{"type": "received", "sha256": "' + "0" * 64 + '"}'),
    (Failed("declined"), '{"type": "failed", "reason": "declined"}'),
])
def test_files_messages_are_written_as_documented_and_read_back(message, text):
    assert encode_files(message) == text
    assert parse_files(text) == message


def test_the_files_channel_reads_text_of_at_most_the_size_a_peer_sends():
    name = "x" * (MAX_MESSAGE_BYTES - len('{"type": "start", "name": "", "size": 1}'))
    assert parse_files(encode_files(Start(name, 1))) == Start(name, 1)
    for message in (encode_files(Start(name + "x", 1)), encode_files(Start("\u00e9" * (len(name) // 2 + 1), 1)),
                    b'{"type": "accept"}'):
        with pytest.raises(BadFilesMessage):
            parse_files(message)


@given(st.text())
def test_any_text_on_the_files_channel_is_read_or_refused_never_raises_otherwise(text):
    try:
        parse_files(text)
    except BadFilesMessage:
        pass


# Both channels

def test_each_channel_refuses_the_others_messages_with_its_own_error():
    with pytest.raises(BadControlMessage):
        parse_control(encode_files(Accept()))
    with pytest.raises(BadFilesMessage):
        parse_files(wire.encode_control(wire.PING))
    assert issubclass(BadControlMessage, BadMessage) and issubclass(BadFilesMessage, BadMessage)
    assert issubclass(BadMessage, ValueError)


def test_control_messages_keep_their_bytes():
    assert wire.encode_control(wire.PING) == '{"type": "ping"}'
    assert wire.encode_control(wire.MOVED, id="abc") == '{"type": "moved", "id": "abc"}'
    assert wire.encode_control(wire.DATA, data=[1, "\u00e9"]) == '{"type": "data", "data": [1, "\\u00e9"]}'
