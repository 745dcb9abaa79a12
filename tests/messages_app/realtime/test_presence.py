"""The Redis presence store (realtime/presence.py) and the hub's part in it, on a real
Redis: entries per socket, a user listed once, expiry of a process that stops
renewing, the bound on the list, the typing throttle; and two hubs (two web
processes' worth) sharing one room's presence."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from messages_app import protocol
from messages_app.models import Room, User
from messages_app.realtime.hub import RoomHub
from messages_app.realtime.presence import PresenceStore, entry_for, presence_key, users_of
from tests.messages_app.realtime.helpers import Socket

pytestmark = pytest.mark.django_db(transaction=True)


def make_store(**kwargs: Any) -> PresenceStore:
    options = {"ttl": 30.0, "max_users": 50, "typing_interval": 3.0, **kwargs}
    return PresenceStore(
        django_settings.CHAT_EVENTS_REDIS_URL, django_settings.CHAT_REDIS_PREFIX, **options
    )


@pytest.fixture
async def store() -> AsyncIterator[PresenceStore]:
    made = make_store()
    yield made
    await made.close()


def a_room_id() -> int:
    """A room id no other test uses (these tests need no room row)."""
    return 10**9 + uuid.uuid4().int % 10**9


class Listener:
    """Everything published on a room's channel, as the hub would read it."""

    def __init__(self, room_id: int) -> None:
        self.client = redis.Redis.from_url(django_settings.CHAT_EVENTS_REDIS_URL)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(protocol.room_channel(django_settings.CHAT_REDIS_PREFIX, room_id))
        assert self.pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]

    def frames(self, limit: float = 1.0) -> list[dict[str, Any]]:
        """What arrived within ``limit`` seconds of quiet."""
        out = []
        while (message := self.pubsub.get_message(timeout=limit)) is not None:
            out.append(json.loads(message["data"]))
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


async def test_presence_lists_a_user_once_however_many_sockets(store: PresenceStore) -> None:
    room_id = a_room_id()
    first, second = entry_for(7, "Alice"), entry_for(7, "Alice")
    await store.enter(room_id, first)
    await store.enter(room_id, second)
    await store.enter(room_id, entry_for(8, "bob"))
    assert await store.users(room_id) == (
        [{"user_id": 7, "name": "Alice"}, {"user_id": 8, "name": "bob"}],
        2,
    )
    # the first tab closes: Alice is still there; the last one closes: she is gone
    await store.leave(room_id, first)
    assert (await store.users(room_id))[1] == 2
    await store.leave(room_id, second)
    assert await store.users(room_id) == ([{"user_id": 8, "name": "bob"}], 1)


async def test_presence_announces_each_change_as_a_presence_frame() -> None:
    store = make_store(coalesce=0.0)  # every change at once
    room_id = a_room_id()
    listener = Listener(room_id)
    try:
        alice = entry_for(1, "Alice")
        await store.enter(room_id, alice)
        await store.enter(room_id, entry_for(2, "Bob"))
        await store.leave(room_id, alice)
        await store.leave(room_id, alice)  # again: nothing changed, nothing said
        frames = await asyncio.to_thread(listener.frames)
    finally:
        listener.close()
        await store.close()
    assert [[u["name"] for u in f["users"]] for f in frames] == [
        ["Alice"],
        ["Alice", "Bob"],
        ["Bob"],
    ]
    assert {f["type"] for f in frames} == {"presence"}


async def test_presence_of_many_sockets_joining_at_once_goes_out_once_per_window() -> None:
    # given a store that publishes a room's list at most once a window
    store = make_store(coalesce=0.5)
    room_id = a_room_id()
    listener = Listener(room_id)
    try:
        # when 30 users join within the window
        own_lists = [await store.enter(room_id, entry_for(n, f"user{n:02}")) for n in range(30)]
        frames = await asyncio.to_thread(listener.frames)
    finally:
        listener.close()
        await store.close()
    # then the room heard two lists, not thirty: the first join at once, the rest
    # together at the window's end
    assert [f["count"] for f in frames] == [1, 30]
    # and each socket that joined meanwhile got the list of its moment at once
    assert own_lists[0] is None  # published to the room (its own socket hears it there)
    assert [json.loads(f)["count"] for f in own_lists[1:]] == list(range(2, 31))


async def test_presence_entries_of_a_process_that_stops_renewing_expire() -> None:
    # given two processes' stores, with a short TTL
    room_id = a_room_id()
    dead, alive = make_store(ttl=1.0), make_store(ttl=1.0)
    try:
        await dead.enter(room_id, entry_for(1, "Alice"))
        bob = entry_for(2, "Bob")
        await alive.enter(room_id, bob)
        listener = Listener(room_id)
        # when only one of them renews its entries (the other process died)
        deadline = time.monotonic() + 10
        while [u["name"] for u in (await alive.users(room_id))[0]] != ["Bob"]:
            assert time.monotonic() < deadline, "Alice's entry never expired"
            await alive.refresh({room_id: [bob]})
            await asyncio.sleep(0.1)
        # then the dead process's entry is gone and the renewing one announced it
        await alive.refresh({room_id: [bob]})
        frames = await asyncio.to_thread(listener.frames, 0.5)
        listener.close()
        assert await alive.users(room_id) == ([{"user_id": 2, "name": "Bob"}], 1)
        key = presence_key(django_settings.CHAT_REDIS_PREFIX, room_id)
        client = redis.Redis.from_url(django_settings.CHAT_EVENTS_REDIS_URL)
        assert 0 < client.ttl(key) <= 2  # the set itself expires when nobody renews it
        client.close()
    finally:
        await dead.close()
        await alive.close()
    # the refresh that dropped Alice said so (the loop above may have been the one)
    assert all(f["users"] == [{"user_id": 2, "name": "Bob"}] for f in frames)


async def test_presence_refresh_of_live_entries_announces_nothing(store: PresenceStore) -> None:
    room_id = a_room_id()
    entry = entry_for(1, "Alice")
    await store.enter(room_id, entry)
    listener = Listener(room_id)
    try:
        await store.refresh({room_id: [entry]})
        assert await asyncio.to_thread(listener.frames, 0.3) == []
    finally:
        listener.close()


async def test_presence_frame_lists_at_most_max_users_and_counts_them_all() -> None:
    room_id = a_room_id()
    store = make_store(max_users=3)
    try:
        for n in range(5):
            await store.enter(room_id, entry_for(n + 1, f"user {n}"))
        users, count = await store.users(room_id)
    finally:
        await store.close()
    assert [u["name"] for u in users] == ["user 0", "user 1", "user 2"]
    assert count == 5


def test_presence_users_of_skips_malformed_entries_and_sorts_by_name() -> None:
    entries = [entry_for(2, "bob"), b"not json", entry_for(1, "Alice"), json.dumps([1, 2])]
    assert users_of(entries, 10) == (
        [{"user_id": 1, "name": "Alice"}, {"user_id": 2, "name": "bob"}],
        2,
    )


async def test_typing_passes_one_frame_per_interval_per_user() -> None:
    room_id = a_room_id()
    store = make_store(typing_interval=0.5)
    listener = Listener(room_id)
    try:
        assert await store.typing(room_id, 1, "Alice")
        assert not await store.typing(room_id, 1, "Alice")  # too soon: dropped
        assert await store.typing(room_id, 2, "Bob")  # another user: their own interval
        deadline = time.monotonic() + 10
        while not await store.typing(room_id, 1, "Alice"):  # once the interval is over
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        frames = await asyncio.to_thread(listener.frames, 0.3)
    finally:
        listener.close()
        await store.close()
    assert frames == [
        {"type": "typing", "user_id": 1, "name": "Alice"},
        {"type": "typing", "user_id": 2, "name": "Bob"},
        {"type": "typing", "user_id": 1, "name": "Alice"},
    ]


async def test_presence_without_redis_lets_the_socket_carry_on() -> None:
    store = PresenceStore("redis://127.0.0.1:1/0", django_settings.CHAT_REDIS_PREFIX)
    entry = entry_for(1, "Alice")
    await store.enter(1, entry)  # logged, not raised
    await store.leave(1, entry)
    await store.refresh({1: [entry]})
    assert not await store.typing(1, 1, "Alice")
    await store.close()


# --- two hubs: two web processes' worth of sockets in one room --------------------------


def make_hub(**kwargs: Any) -> RoomHub:
    return RoomHub(
        django_settings.CHAT_EVENTS_REDIS_URL,
        django_settings.CHAT_REDIS_PREFIX,
        health=2.0,
        reconcile_every=0.2,
        presence=make_store(**kwargs),
    )


async def entered(hub: RoomHub, room: Room, user: User) -> tuple[Socket, Any]:
    socket = Socket()
    member = socket.member(room_id=room.pk, user_id=user.pk)
    await hub.join(member)
    member.start({})
    await hub.enter(member, user.get_display_name())
    return socket, member


async def until_presence(socket: Socket, names: list[str], limit: float = 30) -> None:
    def latest() -> list[str] | None:
        lists = [f for f in socket.frames if f["type"] == "presence"]
        return [u["name"] for u in lists[-1]["users"]] if lists else None

    async with asyncio.timeout(limit):
        while latest() != names:
            socket.written.clear()
            await socket.written.wait()


async def test_two_hubs_share_a_rooms_presence_and_typing(
    room: Room, alice: User, bob: User
) -> None:
    a, b = make_hub(), make_hub()
    alice_socket, alice_member = await entered(a, room, alice)
    bob_socket, bob_member = await entered(b, room, bob)
    # each hears of both, whichever process they are on
    await until_presence(alice_socket, ["Alice", "Bob"])
    await until_presence(bob_socket, ["Alice", "Bob"])
    # typing reaches the other user's socket, not the typist's own
    assert await b.typing(bob_member, "Bob")
    async with asyncio.timeout(30):
        while not any(f["type"] == "typing" for f in alice_socket.frames):
            alice_socket.written.clear()
            await alice_socket.written.wait()
    # Alice types after him: the channel is ordered, so once Bob hears her, his own
    # frame would have reached him before, had it been sent to him
    assert await a.typing(alice_member, "Alice")
    async with asyncio.timeout(30):
        while not any(f["type"] == "typing" for f in bob_socket.frames):
            bob_socket.written.clear()
            await bob_socket.written.wait()
    assert [f["name"] for f in bob_socket.frames if f["type"] == "typing"] == ["Alice"]
    assert [f["name"] for f in alice_socket.frames if f["type"] == "typing"] == ["Bob"]
    # Bob's socket closes: Alice sees him go
    await b.leave(bob_member)
    await until_presence(alice_socket, ["Alice"])
    await a.leave(alice_member)


async def test_a_hub_that_dies_leaves_the_presence_after_the_ttl(
    room: Room, alice: User, bob: User
) -> None:
    # given Alice on a process that dies (its hub stops without a word) and Bob on one that lives
    dying, living = make_hub(ttl=1.0), make_hub(ttl=1.0)
    _, alice_member = await entered(dying, room, alice)
    bob_socket, bob_member = await entered(living, room, bob)
    await until_presence(bob_socket, ["Alice", "Bob"])
    dying.presence = None  # no more renewals, no leave: as if the process were killed
    alice_member.presence = None
    await dying.leave(alice_member)
    # then within the TTL (and a tick) Bob's page hears she is gone
    await until_presence(bob_socket, ["Bob"], limit=15)
    await living.leave(bob_member)


# --- on a Redis Cluster (CHAT_EVENTS_REDIS_CLUSTER) ----------------------------------------


@pytest.fixture(scope="module")
def presence_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.messages_app.realtime import servers

    ports = [7117, 7118, 7119]  # the tests' own Redis ports (servers.py); test_hub's are 7111-7113
    with servers.redis_cluster(ports, tmp_path_factory.mktemp("presence-cluster")):
        yield f"redis://127.0.0.1:{ports[0]}/0"


async def test_presence_and_typing_work_on_a_redis_cluster(
    presence_cluster: str, room: Room, alice: User, bob: User
) -> None:
    def cluster_hub() -> RoomHub:
        store = PresenceStore(
            presence_cluster, django_settings.CHAT_REDIS_PREFIX, cluster=True, ttl=30.0
        )
        return RoomHub(
            presence_cluster,
            django_settings.CHAT_REDIS_PREFIX,
            cluster=True,
            reconcile_every=0.2,
            presence=store,
        )

    a, b = cluster_hub(), cluster_hub()
    alice_socket, alice_member = await entered(a, room, alice)
    bob_socket, bob_member = await entered(b, room, bob)
    await until_presence(alice_socket, ["Alice", "Bob"])
    await until_presence(bob_socket, ["Alice", "Bob"])
    assert await b.typing(bob_member, "Bob")
    async with asyncio.timeout(30):
        while not any(f["type"] == "typing" for f in alice_socket.frames):
            alice_socket.written.clear()
            await alice_socket.written.wait()
    await b.leave(bob_member)
    await until_presence(alice_socket, ["Alice"])
    await a.leave(alice_member)


async def test_typing_checks_the_sender_only_past_the_throttle_and_publishes_nothing_refused() -> (
    None
):
    from messages_app.protocol import ClientError

    room_id = a_room_id()
    store = make_store(typing_interval=60.0)
    checks: list[int] = []

    async def refuse() -> None:
        checks.append(1)
        raise ClientError("not_member", "no")

    listener = Listener(room_id)
    try:
        with pytest.raises(ClientError):
            await store.typing(room_id, 1, "Alice", check=refuse)
        for _ in range(5):  # a flood: dropped by the throttle, never checked again
            assert not await store.typing(room_id, 1, "Alice", check=refuse)
        frames = await asyncio.to_thread(listener.frames, 0.3)
    finally:
        listener.close()
        await store.close()
    assert checks == [1]
    assert frames == []


async def test_presence_refresh_renews_many_rooms_and_announces_only_the_changed(
    store: PresenceStore,
) -> None:
    rooms = {a_room_id(): [entry_for(n + 1, f"user {n}")] for n in range(5)}
    for room_id, entries in rooms.items():
        await store.enter(room_id, entries[0])
    changed_room = next(iter(rooms))
    other = make_store(ttl=1.0)  # another process, which dies: it never renews Zed
    await other.enter(changed_room, entry_for(99, "Zed"))
    await other.close()
    key = presence_key(django_settings.CHAT_REDIS_PREFIX, changed_room)
    client = redis.Redis.from_url(django_settings.CHAT_EVENTS_REDIS_URL)
    listeners = {room_id: Listener(room_id) for room_id in rooms}
    try:
        deadline = time.monotonic() + 10
        while True:  # until Zed's entry is past its expiry (still there: nobody dropped it)
            seconds, micros = client.time()
            if client.zcount(key, "-inf", seconds + micros / 1e6) == 1:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await store.refresh(rooms)
        heard = {
            room_id: await asyncio.to_thread(listener.frames, 0.3)
            for room_id, listener in listeners.items()
        }
    finally:
        client.close()
        for listener in listeners.values():
            listener.close()
    # the one refresh renewed every room, and told only the room whose list changed
    assert [[u["name"] for u in f["users"]] for f in heard.pop(changed_room)] == [["user 0"]]
    assert all(frames == [] for frames in heard.values())
    for room_id in rooms:
        assert (await store.users(room_id))[1] == 1
