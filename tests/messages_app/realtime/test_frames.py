"""Frames as the fan-out handles them: parsing what services publish, and coalescing."""

from __future__ import annotations

import json

import pytest

from messages_app import protocol
from messages_app.realtime import frames
from tests.messages_app.realtime.helpers import delta, message


def test_coalesce_joins_consecutive_writes_of_one_reply() -> None:
    given = [
        delta(7, 3, 0, "Hel"),
        delta(7, 4, 3, "lo"),
        delta(8, 3, 0, "x"),
        delta(7, 5, 5, " wo"),
        delta(7, 6, 8, "rld"),
        message(7, 7, "Hello world"),
        delta(7, 8, 11, "!"),
    ]
    out = frames.coalesce(given)
    assert [json.loads(f.text) for f in out] == [
        {"type": "delta", "id": 7, "version": 4, "offset": 0, "text": "Hello"},
        {"type": "delta", "id": 8, "version": 3, "offset": 0, "text": "x"},
        {"type": "delta", "id": 7, "version": 6, "offset": 5, "text": " world"},
        json.loads(given[5].text),
        {"type": "delta", "id": 7, "version": 8, "offset": 11, "text": "!"},
    ]
    assert out[3] is given[5] and out[4] is given[6]  # single frames are not re-serialised


def test_coalesce_keeps_writes_that_do_not_follow_each_other() -> None:
    given = [delta(7, 3, 0, "a"), delta(7, 5, 2, "c"), delta(7, 4, 1, "b")]
    assert frames.coalesce(given) == given


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"type": "delta", "id": 1}', b'{"type": "message"}', b"[1, 2]"],
)
def test_parse_event_refuses_a_malformed_event(data: bytes) -> None:
    with pytest.raises(ValueError):
        frames.parse_event(data)


def test_parse_event_keeps_the_published_bytes() -> None:
    frame = delta(7, 3, 0, "é")
    assert frame.payload == '{"type":"delta","id":7,"version":3,"offset":0,"text":"é"}'.encode()
    assert (frame.kind, frame.message_id, frame.first_version, frame.last_version) == (
        "delta",
        7,
        3,
        3,
    )


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        '{"type": "sockets.close"}',
        '{"type": "sockets.close", "user_id": 1, "code": 1000}',
        '{"type": "other", "user_id": 1, "code": 4401}',
        '{"type": "sockets.close", "user_id": "x", "code": 4401}',
    ],
)
def test_parse_command_refuses_a_malformed_command(data: str) -> None:
    with pytest.raises(ValueError):
        protocol.parse_command(data)


def test_sockets_close_command_round_trips() -> None:
    for room_id in (None, 7):
        command = protocol.SocketsClose(user_id=3, code=protocol.CLOSE_FORBIDDEN, room_id=room_id)
        assert protocol.parse_command(protocol.sockets_close_command(command)) == command


def test_heartbeat_frame_lists_id_and_version_pairs() -> None:
    assert json.loads(protocol.heartbeat_frame([(4, 9), (6, 2)])) == {
        "type": "heartbeat",
        "open": [[4, 9], [6, 2]],
    }
