"""The hub on a real Redis: delivery, repair, heartbeat, socket commands, health checks,
every kind of Redis URL, and sharded pub/sub on a real Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from messages_app import events, protocol, services
from messages_app.models import Room, User
from messages_app.realtime.hub import RoomHub
from tests.messages_app.realtime import servers
from tests.messages_app.realtime.helpers import Socket, settle

pytestmark = pytest.mark.django_db(transaction=True)


def make_hub(url: str | None = None, **kwargs: Any) -> RoomHub:
    options = {"health": 2.0, "reconcile_every": 60.0, **kwargs}
    return RoomHub(
        url or django_settings.CHAT_EVENTS_REDIS_URL, django_settings.CHAT_REDIS_PREFIX, **options
    )


@pytest.fixture
def events_redis(settings: Any) -> Iterator[Any]:
    """Point the services' publishing at another Redis for one test (``settings``)."""
    events._events_redis.cache_clear()
    yield settings
    events._events_redis.cache_clear()


async def joined(hub: RoomHub, room: Room, user: User, **kwargs: Any) -> tuple[Socket, Any]:
    socket = Socket()
    member = socket.member(room_id=room.pk, user_id=user.pk, **kwargs)
    await hub.join(member)  # returns once Redis confirmed the subscription
    member.start({})
    return socket, member


async def wait_frames(socket: Socket, predicate: Any, limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while not predicate(socket.frames):
            socket.written.clear()
            await socket.written.wait()


async def test_hub_delivers_what_services_publish_once_joined(room: Room, alice: User) -> None:
    hub = make_hub()
    socket, member = await joined(hub, room, alice)
    await sync_to_async(services.message_post)(room=room, author=alice, body="hi")
    await wait_frames(socket, lambda frames: frames)
    assert socket.frames[0]["type"] == "message"
    assert socket.frames[0]["message"]["body"] == "hi"
    await hub.leave(member)
    assert hub.rooms == {} and hub.users == {}


async def test_hub_repair_sends_rows_newer_than_a_socket_holds(room: Room, alice: User) -> None:
    # given a socket that holds an old version of a row (events lost in an outage)
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt hi")
    assert posted.reply is not None
    hub = make_hub()
    socket = Socket()
    member = socket.member(room_id=room.pk, user_id=alice.pk)
    await hub.join(member)
    member.start({posted.message.pk: posted.message.version, posted.reply.pk: 0})
    # when the hub repairs the room
    await hub.repair(room.pk)
    await settle()
    # then the socket gets the rows it lacked, as message frames, and nothing else
    assert [(f["type"], f["message"]["id"]) for f in socket.frames] == [
        ("message", posted.reply.pk)
    ]
    await hub.leave(member)


async def test_hub_heartbeat_lists_the_versions_of_the_rooms_open_rows(
    room: Room, alice: User
) -> None:
    await sync_to_async(services.message_post)(room=room, author=alice, body="plain")
    posted = await sync_to_async(services.message_post)(room=room, author=alice, body="@gpt hi")
    assert posted.reply is not None
    hub = make_hub()
    socket, member = await joined(hub, room, alice)
    await hub.heartbeat()
    await settle()
    assert socket.frames == [{"type": "heartbeat", "open": [[posted.reply.pk, 1]]}]
    await hub.leave(member)


async def test_hub_sends_heartbeats_on_its_own_every_interval(room: Room, alice: User) -> None:
    hub = make_hub(reconcile_every=0.1)
    socket, member = await joined(hub, room, alice)
    await wait_frames(socket, lambda frames: len(frames) >= 2)
    assert socket.frames[:2] == [{"type": "heartbeat", "open": []}] * 2
    await hub.leave(member)


async def test_user_sockets_close_closes_every_socket_of_that_user(
    room: Room, alice: User, bob: User
) -> None:
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other")
    hub = make_hub()
    a1, m1 = await joined(hub, room, alice)
    a2, m2 = await joined(hub, other, alice)
    b1, m3 = await joined(hub, room, bob)
    events.user_sockets_close(user_id=alice.pk, code=protocol.CLOSE_UNAUTHENTICATED)
    async with asyncio.timeout(30):
        while not (a1.closed_with and a2.closed_with):
            await asyncio.sleep(0.01)
    assert a1.closed_with == a2.closed_with == [protocol.CLOSE_UNAUTHENTICATED]
    await sync_to_async(services.message_post)(room=room, author=bob, body="still here")
    await wait_frames(b1, lambda frames: frames)
    assert b1.closed_with == [] and b1.frames[0]["message"]["body"] == "still here"
    for member in (m1, m2, m3):
        await hub.leave(member)


async def test_user_sockets_close_of_one_room_leaves_the_users_other_rooms(
    room: Room, alice: User
) -> None:
    other = await sync_to_async(Room.objects.create)(name="Other", slug="other")
    hub = make_hub()
    here, m1 = await joined(hub, room, alice)
    there, m2 = await joined(hub, other, alice)
    events.user_sockets_close(user_id=alice.pk, code=protocol.CLOSE_FORBIDDEN, room_id=room.pk)
    async with asyncio.timeout(30):
        while not here.closed_with:
            await asyncio.sleep(0.01)
    assert here.closed_with == [protocol.CLOSE_FORBIDDEN]
    await sync_to_async(services.message_post)(room=other, author=alice, body="other room")
    await wait_frames(there, lambda frames: frames)
    assert there.closed_with == []
    for member in (m1, m2):
        await hub.leave(member)


def test_user_sockets_close_refuses_a_code_that_is_not_a_close_code(alice: User) -> None:
    with pytest.raises(ValueError, match="CLOSE_CODES"):
        events.user_sockets_close(user_id=alice.pk, code=1000)


async def test_hub_ignores_a_malformed_command(room: Room, alice: User) -> None:
    hub = make_hub()
    socket, member = await joined(hub, room, alice)
    await sync_to_async(events._events_redis().publish)(
        protocol.command_channel(django_settings.CHAT_REDIS_PREFIX), b'{"type": "nope"}'
    )
    await sync_to_async(services.message_post)(room=room, author=alice, body="after")
    await wait_frames(socket, lambda frames: frames)
    assert socket.closed_with == [] and hub.users
    await hub.leave(member)


@pytest.fixture
async def proxy() -> AsyncIterator[servers.Proxy]:
    port = int(django_settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = await servers.Proxy(port).start()
    yield proxy
    await proxy.close()


async def test_hub_notices_a_silent_subscription_then_resubscribes_and_repairs(
    room: Room, alice: User, proxy: servers.Proxy
) -> None:
    # given a hub whose subscription goes through a proxy
    hub = make_hub(f"redis://127.0.0.1:{proxy.port}/0", health=0.2)
    socket, member = await joined(hub, room, alice)
    connections = proxy.connections
    # when the connection goes silent (no error, no close) and a row changes meanwhile
    proxy.freeze()
    await sync_to_async(services.message_post)(room=room, author=alice, body="during")
    # then the health check finds it dead, the hub reconnects and repairs: the
    # socket gets the row that was published while nothing came through
    await wait_frames(socket, lambda frames: frames)
    assert proxy.connections > connections
    assert socket.frames[0]["type"] == "message"
    assert socket.frames[0]["message"]["body"] == "during"
    # and events flow again on the new subscription
    await sync_to_async(services.message_post)(room=room, author=alice, body="after")
    await wait_frames(socket, lambda frames: len(frames) >= 2)
    assert socket.frames[1]["message"]["body"] == "after"
    await hub.leave(member)


# --- every kind of Redis URL ---------------------------------------------------------


@pytest.fixture(scope="module")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="module")
def password_redis(redis_dir: Path) -> Iterator[int]:
    port = servers.PORT_BASE
    with servers.redis_server(port, redis_dir, "--requirepass", "s3cret:pass") as process:
        servers.wait_ready(process, f"redis://:s3cret%3Apass@127.0.0.1:{port}/0")
        import redis

        admin = redis.Redis(port=port, password="s3cret:pass")
        admin.acl_setuser(
            "chat",
            enabled=True,
            passwords=["+user-pass"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        yield port


@pytest.fixture(scope="module")
def tls_redis(redis_dir: Path) -> Iterator[tuple[int, Path]]:
    port = servers.PORT_BASE + 2
    cert, key = servers.make_certificate(redis_dir)
    with servers.redis_server(
        port - 1,
        redis_dir,
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    ) as process:
        servers.wait_ready(process, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
        yield port, cert


async def events_flow(url: str, settings: Any, room: Room, alice: User) -> Socket:
    settings.CHAT_EVENTS_REDIS_URL = url
    events._events_redis.cache_clear()
    hub = make_hub(url)
    socket, member = await joined(hub, room, alice)
    await sync_to_async(services.message_post)(room=room, author=alice, body=f"via {url[:8]}")
    await wait_frames(socket, lambda frames: frames)
    events.user_sockets_close(user_id=alice.pk, code=protocol.CLOSE_UNAUTHENTICATED)
    async with asyncio.timeout(30):
        while not socket.closed_with:
            await asyncio.sleep(0.01)
    await hub.leave(member)
    return socket


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret%3Apass@127.0.0.1:{port}/3",  # a password (escaped) and a db number
        "redis://chat:user-pass@127.0.0.1:{port}/5",  # an ACL user
    ],
    ids=["password-and-db", "acl-user"],
)
async def test_events_and_commands_travel_with_any_redis_url(
    url: str, password_redis: int, events_redis: Any, room: Room, alice: User
) -> None:
    url = url.format(port=password_redis)
    socket = await events_flow(url, events_redis, room, alice)
    assert socket.frames[0]["message"]["body"].startswith("via")
    assert socket.closed_with == [protocol.CLOSE_UNAUTHENTICATED]


async def test_events_and_commands_travel_over_tls(
    tls_redis: tuple[int, Path], events_redis: Any, room: Room, alice: User
) -> None:
    port, cert = tls_redis
    url = f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={cert}"
    socket = await events_flow(url, events_redis, room, alice)
    assert socket.frames[0]["message"]["body"].startswith("via")
    assert socket.closed_with == [protocol.CLOSE_UNAUTHENTICATED]


async def test_hub_with_a_wrong_password_refuses_the_join_and_leaves_nothing(
    password_redis: int, room: Room, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from messages_app.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "SUBSCRIBE_TIMEOUT", 0.5)
    hub = make_hub(f"redis://:wrong@127.0.0.1:{password_redis}/0")
    socket = Socket()
    member = socket.member(room_id=room.pk, user_id=alice.pk)
    with pytest.raises(TimeoutError):
        await hub.join(member)
    assert hub.rooms == {} and hub.users == {}


# --- sharded pub/sub on a Redis Cluster ----------------------------------------------


@pytest.fixture(scope="module")
def cluster(redis_dir: Path) -> Iterator[list[int]]:
    ports = [servers.PORT_BASE + 10 + n for n in range(3)]
    with servers.redis_cluster(ports, redis_dir):
        yield ports


async def test_room_events_use_sharded_pubsub_on_a_redis_cluster(
    cluster: list[int], events_redis: Any, alice: User, bob: User
) -> None:
    import redis

    from messages_app.realtime.subscriber import Subscriber  # noqa: F401 - the code under test

    # given rooms whose channels live on different shards
    rooms = [await sync_to_async(Room.objects.create)(name=f"R{n}", slug=f"r{n}") for n in range(6)]
    node = redis.Redis(port=cluster[0])
    slots = {room.pk: node.cluster("keyslot", events.room_channel(room.pk)) for room in rooms}
    owners = {}
    for start, end, primary, *_ in node.cluster("slots"):
        for room_id, slot in slots.items():
            if start <= slot <= end:
                owners[room_id] = primary[1]
    assert len(set(owners.values())) > 1
    events_redis.CHAT_EVENTS_REDIS_URL = f"redis://127.0.0.1:{cluster[0]}/0"
    events_redis.CHAT_EVENTS_REDIS_CLUSTER = True
    events._events_redis.cache_clear()
    hub = make_hub(events_redis.CHAT_EVENTS_REDIS_URL, cluster=True)
    joined_sockets = [await joined(hub, room, alice) for room in rooms]
    # when services post in each room
    for room in rooms:
        await sync_to_async(services.message_post)(room=room, author=bob, body=f"in {room.slug}")
    # then each socket gets its room's message, and only that
    for room, (socket, _) in zip(rooms, joined_sockets, strict=True):
        await wait_frames(socket, lambda frames: frames)
        assert [f["message"]["body"] for f in socket.frames] == [f"in {room.slug}"]
    # and the events went through sharded channels, each on its room's shard
    for room in rooms:
        owner = redis.Redis(port=owners[room.pk])
        assert events.room_channel(room.pk).encode() in owner.execute_command(
            "PUBSUB", "SHARDCHANNELS"
        )
    # and the socket commands too
    events.user_sockets_close(user_id=alice.pk, code=protocol.CLOSE_UNAUTHENTICATED)
    async with asyncio.timeout(30):
        while not all(socket.closed_with for socket, _ in joined_sockets):
            await asyncio.sleep(0.01)
    for _, member in joined_sockets:
        await hub.leave(member)
