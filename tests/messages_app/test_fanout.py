"""The in-process fan-out of room events: Redis framing, coalescing, and what each
socket is written (order, versions, the hold until its snapshot is sent)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from messages_app import events, fanout, services
from messages_app.models import Room, User


def delta(message_id: int, version: int, offset: int, text: str) -> fanout.Frame:
    event = events.delta_event(message_id=message_id, version=version, offset=offset, text=text)
    return fanout.parse_event(event["frame"].encode())


def message(message_id: int, version: int, body: str = "") -> fanout.Frame:
    payload = {"id": message_id, "version": version, "body": body, "status": "streaming"}
    return fanout.parse_event(events.message_event(payload)["frame"].encode())


class Socket:
    """A stand-in for the ASGI server's send: records the frames written."""

    def __init__(self, delay: float = 0.0) -> None:
        self.frames: list[dict[str, Any]] = []
        self.delay = delay
        self.written = asyncio.Event()

    async def __call__(self, event: dict[str, Any]) -> None:
        assert event["type"] == "websocket.send"
        if self.delay:
            await asyncio.sleep(self.delay)
        self.frames.append(json.loads(event["text"]))
        self.written.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_resp_values_parse_whole_or_across_reads() -> None:
    data = (
        fanout.resp_command("message", "p:room:7", '{"a":"é"}') + b":3\r\n+OK\r\n$-1\r\n-ERR no\r\n"
    )
    values, pos = [], 0
    while pos < len(data):
        value, pos = fanout.parse_resp(data, pos)
        values.append(value)
    assert values[0] == [b"message", b"p:room:7", '{"a":"é"}'.encode()]
    assert values[1:4] == [3, b"OK", None]
    assert isinstance(values[4], RuntimeError)
    first = fanout.resp_command("message", "p:room:7", '{"a":"é"}')
    for cut in range(len(first)):  # any read that ends inside a value waits for more
        with pytest.raises(fanout._Incomplete):
            fanout.parse_resp(first[:cut], 0)


def test_subscriber_hands_complete_messages_to_the_hub_whatever_the_reads() -> None:
    received: list[Any] = []

    class Hub:
        def received(self, items: list[Any]) -> None:
            received.extend(items)

    async def feed() -> None:
        protocol = fanout._Subscriber(Hub())  # type: ignore[arg-type]
        data = b"".join(fanout.resp_command("message", "p:room:1", f"frame {n}") for n in range(20))
        for start in range(0, len(data), 7):  # reads of 7 bytes
            protocol.data_received(data[start : start + 7])

    asyncio.run(feed())
    assert received == [[b"message", b"p:room:1", f"frame {n}".encode()] for n in range(20)]


def test_coalesce_joins_consecutive_writes_of_one_reply() -> None:
    frames = [
        delta(7, 3, 0, "Hel"),
        delta(7, 4, 3, "lo"),
        delta(8, 3, 0, "x"),
        delta(7, 5, 5, " wo"),
        delta(7, 6, 8, "rld"),
        message(7, 7, "Hello world"),
        delta(7, 8, 11, "!"),
    ]
    out = fanout.coalesce(frames)
    assert [json.loads(f.text) for f in out] == [
        {"type": "delta", "id": 7, "version": 4, "offset": 0, "text": "Hello"},
        {"type": "delta", "id": 8, "version": 3, "offset": 0, "text": "x"},
        {"type": "delta", "id": 7, "version": 6, "offset": 5, "text": " world"},
        json.loads(frames[5].text),
        {"type": "delta", "id": 7, "version": 8, "offset": 11, "text": "!"},
    ]
    assert out[3] is frames[5] and out[4] is frames[6]  # single frames are not re-serialised


def test_coalesce_keeps_writes_that_do_not_follow_each_other() -> None:
    frames = [delta(7, 3, 0, "a"), delta(7, 5, 2, "c"), delta(7, 4, 1, "b")]
    assert fanout.coalesce(frames) == frames


async def test_member_holds_frames_until_its_snapshot_then_skips_what_it_holds() -> None:
    socket = Socket()
    member = fanout.Member(socket)
    assert member.protocol is None  # not daphne: the generic path
    # events that arrive while the snapshot is read: v3 and v4 are in it, v5 is not
    member.deliver([delta(7, 3, 0, "Hel"), delta(7, 4, 3, "lo")])
    member.deliver(fanout.coalesce([delta(7, 4, 3, "lo"), delta(7, 5, 5, " there")]))
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
    member = fanout.Member(socket)
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


@pytest.mark.django_db(transaction=True)
async def test_hub_delivers_what_services_publish_once_joined(room: Room, alice: User) -> None:
    hub = fanout.hub()
    socket = Socket()
    member = fanout.Member(socket)
    await hub.join(room.pk, member)  # returns once Redis confirmed the subscription
    member.start({})
    await sync_to_async(services.message_post)(room=room, author=alice, body="hi")
    await asyncio.wait_for(socket.written.wait(), 5)
    assert socket.frames[0]["type"] == "message"
    assert socket.frames[0]["message"]["body"] == "hi"
    await hub.leave(room.pk, member)
    assert room.pk not in hub.rooms


@pytest.mark.django_db(transaction=True)
async def test_hub_repair_sends_rows_newer_than_a_socket_holds(room: Room, alice: User) -> None:
    # given a socket that holds an old version of a row (events lost in an outage)
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt hi")
    assert posted.reply is not None
    hub = fanout.hub()
    socket = Socket()
    member = fanout.Member(socket)
    await hub.join(room.pk, member)
    member.start({posted.message.pk: posted.message.version, posted.reply.pk: 0})
    # when the hub repairs the room after Redis came back
    await hub._repair(room.pk)
    await settle()
    # then the socket gets the rows it lacked, as message frames, and nothing else
    assert [(f["type"], f["message"]["id"]) for f in socket.frames] == [
        ("message", posted.reply.pk)
    ]
    await hub.leave(room.pk, member)


class FakeSocket:
    def __init__(self, takes: int | None, error: type[OSError] | None = None) -> None:
        self.takes, self.error, self.sent = takes, error, b""

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent += data[:n]
        return n


class FakeTransport:
    """The attributes of a Twisted TCP transport that write_now reads."""

    def __init__(self, sock: FakeSocket, buffered: bytes = b"") -> None:
        self.socket, self.dataBuffer, self._tempDataLen = sock, buffered, 0
        self.connected, self.disconnecting = True, False
        self.queued = b""

    def write(self, data: bytes) -> None:
        self.queued += data


@pytest.mark.parametrize(
    ("takes", "error", "buffered", "sent", "queued"),
    [
        (None, None, b"", b"frame", b""),  # nothing queued: straight to the socket
        (2, None, b"", b"fr", b"ame"),  # the socket takes part: the rest queues behind
        (None, BlockingIOError, b"", b"", b"frame"),  # full socket: Twisted writes it later
        (None, ConnectionResetError, b"", b"", b"frame"),  # Twisted sees the error itself
        (None, None, b"older", b"", b"frame"),  # Twisted has bytes queued: keep the order
    ],
)
def test_write_now_sends_at_once_only_when_nothing_is_queued(
    takes: int | None, error: type[OSError] | None, buffered: bytes, sent: bytes, queued: bytes
) -> None:
    transport = FakeTransport(FakeSocket(takes, error), buffered)
    fanout.write_now(transport, b"frame")
    assert (transport.socket.sent, transport.queued) == (sent, queued)
