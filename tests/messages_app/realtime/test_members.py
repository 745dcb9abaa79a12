"""What each socket is written: order, versions, the hold until its snapshot, the bound."""

from __future__ import annotations

import asyncio
from typing import Any

from messages_app import protocol
from tests.messages_app.realtime.helpers import Socket, delta, message, settle


async def test_member_holds_frames_until_its_snapshot_then_skips_what_it_holds() -> None:
    socket = Socket()
    member = socket.member()
    # events that arrive while the snapshot is read: v3 and v4 are in it, v5 is not
    member.deliver([delta(7, 3, 0, "Hel"), delta(7, 4, 3, "lo")])
    from messages_app.realtime.frames import coalesce

    member.deliver(coalesce([delta(7, 4, 3, "lo"), delta(7, 5, 5, " there")]))
    await settle()
    assert socket.frames == []
    member.start({7: 4})
    member.deliver([delta(7, 6, 11, "!"), delta(7, 6, 11, "!"), message(7, 5, "stale")])
    await settle()
    # v5 (the part of the merged 4+5 above the snapshot) and v6, queued together,
    # leave as one frame; the repeated v6 and the older message are not written
    assert socket.frames == [
        {"type": "delta", "id": 7, "version": 6, "offset": 5, "text": " there!"},
    ]
    member.close()


async def test_member_merges_deltas_queued_behind_a_slow_socket() -> None:
    socket = Socket(delay=0.05)
    member = socket.member()
    member.start({})
    member.deliver([delta(7, 1, 0, "a")])
    await asyncio.sleep(0.01)  # "a" is being written; the rest queues up
    for version, text in enumerate("bcd", start=2):
        member.deliver([delta(7, version, version - 1, text)])
    await asyncio.sleep(0.2)
    assert socket.frames == [
        {"type": "delta", "id": 7, "version": 1, "offset": 0, "text": "a"},
        {"type": "delta", "id": 7, "version": 4, "offset": 1, "text": "bcd"},
    ]
    member.close()


async def test_member_over_its_byte_limit_is_closed_as_too_slow_and_written_no_more() -> None:
    # given a socket whose client does not read (its send never returns)
    socket = Socket(blocked=True)
    member = socket.member(limit=4096)
    member.start({})
    # when a reply streams into it past the limit
    offset = 0
    for version in range(1, 200):
        member.deliver([delta(7, version, offset, "x" * 40)])
        offset += 40
    # then it is closed once, with "too slow", and holds nothing any more
    assert socket.closed_with == [protocol.CLOSE_TOO_SLOW]
    assert member.closed
    assert member.writer.queued_bytes() == 0
    member.deliver([delta(7, 500, offset, "late")])
    socket.unblock.set()
    await settle()
    assert socket.frames == []
    assert socket.closed_with == [protocol.CLOSE_TOO_SLOW]


async def test_member_under_its_limit_gets_every_frame_in_order() -> None:
    socket = Socket()
    member = socket.member(limit=4096)
    member.start({})
    for version in range(1, 100):
        member.deliver([delta(7, version, version - 1, "y")])
        await settle()
    assert socket.closed_with == []
    assert "".join(f["text"] for f in socket.frames) == "y" * 99
    member.close()


async def test_member_whose_snapshot_takes_too_long_is_bounded_too() -> None:
    # frames held before the snapshot count against the same limit
    socket = Socket()
    member = socket.member(limit=4096)
    for version in range(1, 200):
        member.deliver([delta(7, version, (version - 1) * 40, "z" * 40)])
    assert socket.closed_with == [protocol.CLOSE_TOO_SLOW]
    assert member.pending is None


def test_daphne_fast_path_turns_itself_off_with_a_warning_when_internals_are_missing(
    monkeypatch: Any, caplog: Any
) -> None:
    from daphne.server import Server

    from messages_app.realtime import daphne

    monkeypatch.setattr(daphne, "_state", {"enabled": None, "probe": None})
    assert daphne.check(enabled=True) is True
    monkeypatch.delattr(Server, "handle_reply")
    with caplog.at_level("WARNING", logger="messages_app.realtime.daphne"):
        assert daphne.check(enabled=True) is False
    assert "turns itself off" in caplog.text and "handle_reply" in caplog.text
    # and a socket is then written through the ASGI send
    assert daphne.fast_writer(lambda event: None) is None  # type: ignore[arg-type, return-value]


def test_daphne_fast_path_off_by_setting_writes_through_asgi_send(monkeypatch: Any) -> None:
    from messages_app.realtime import daphne

    monkeypatch.setattr(daphne, "_state", {"enabled": None, "probe": None})
    assert daphne.check(enabled=False) is False
    assert daphne._state == {"enabled": False, "probe": True}
