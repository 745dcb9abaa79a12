"""The web process's Redis subscription, on redis-py's ``redis.asyncio`` (hiredis).

Any URL redis-py accepts works (``redis://user:password@host:port/db``,
``rediss://`` with its TLS options, ``unix://``), the same as for publishing
(``messages_app.events``) and Celery.

Two shapes, one interface (``Subscriber``):
- one Redis: one connection, ``SUBSCRIBE`` per channel;
- a Redis Cluster (``CHAT_EVENTS_REDIS_CLUSTER``): sharded pub/sub. Each channel
  lives on the shard that owns its key slot; the subscriber keeps one connection
  per shard it needs and ``SSUBSCRIBE``s each channel there, and events.py
  ``SPUBLISH``es to the same shard. One room's events stay on one shard, so the
  cluster's pub/sub load spreads over its shards instead of every node carrying
  every message (as plain PUBLISH does on a cluster).

Health: each connection reads with a timeout of ``CHAT_REDIS_HEALTH_CHECK_SECONDS``;
after a quiet spell it sends a PING, and a connection that has answered nothing
for two spells is dead (a half-open TCP connection never errors by itself).
``run`` then raises, and the hub reconnects, resubscribes and repairs (hub.py).
The reads of one turn are handed to the hub together, so it can coalesce them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Messages handed over per batch at most (then the loop yields to the sockets).
MAX_BATCH = 1000
CONNECT_TIMEOUT = 5.0

Message = dict[str, Any]
OnBatch = Callable[[list[Message]], None]


class DeadConnection(ConnectionError):
    """A subscribed connection that answered nothing, not even a PING, for too long."""


def _client(url: str) -> aioredis.Redis:
    # No retries inside redis-py: a lost connection must reach the hub, which
    # repairs what was published meanwhile (redis-py would resubscribe silently).
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class _Link:
    """One subscribed connection: to the Redis, or to one shard of the cluster."""

    def __init__(self, client: aioredis.Redis, *, sharded: bool, health: float) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.sharded = sharded
        self.health = health
        self.channels: set[bytes] = set()

    async def subscribe(self, channel: bytes) -> None:
        self.channels.add(channel)
        if self.sharded:
            await self.pubsub.ssubscribe(channel)
        else:
            await self.pubsub.subscribe(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        if self.sharded:
            await self.pubsub.sunsubscribe(channel)
        else:
            await self.pubsub.unsubscribe(channel)

    async def run(self, on_batch: OnBatch) -> None:
        """Read until the connection fails (raises); hand each turn's messages over."""
        pubsub = self.pubsub
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=self.health)
            if message is None:
                if time.monotonic() - heard > 2 * self.health:
                    raise DeadConnection(f"no answer from Redis for {2 * self.health:.1f}s")
                await pubsub.ping()
                continue
            heard = time.monotonic()
            batch = [message]
            while len(batch) < MAX_BATCH:
                more = await pubsub.get_message(timeout=0)
                if more is None:
                    break
                batch.append(more)
            on_batch(batch)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class Subscriber:
    """The subscription of one hub: channels in, batches of messages out (``run``)."""

    def __init__(self, url: str, *, cluster: bool, health: float, on_batch: OnBatch) -> None:
        self.url = url
        self.cluster = cluster
        self.health = health
        self.on_batch = on_batch
        self._links: dict[str, _Link] = {}
        self._link_of: dict[bytes, _Link] = {}
        self._cluster: Any = None
        self._changed = asyncio.Event()

    async def connect(self) -> None:
        """Reach Redis (raises ``redis.RedisError``/``OSError`` when it cannot)."""
        if self.cluster:
            self._cluster = aioredis.RedisCluster.from_url(
                self.url, socket_connect_timeout=CONNECT_TIMEOUT
            )
            await self._cluster.initialize()
        else:
            link = _Link(_client(self.url), sharded=False, health=self.health)
            await link.client.ping()
            self._links[""] = link

    def _node_url(self, host: str, port: int) -> str:
        """The cluster URL with one shard's address: same scheme, credentials, options."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((parts.scheme, netloc, "", parts.query, ""))

    async def _link_for(self, channel: bytes) -> _Link:
        if not self.cluster:
            return self._links[""]
        node = self._cluster.get_node_from_key(channel)
        link = self._links.get(node.name)
        if link is None:
            client = _client(self._node_url(node.host, node.port))
            link = self._links[node.name] = _Link(client, sharded=True, health=self.health)
        return link

    async def add(self, channel: bytes) -> None:
        """Subscribe ``channel``; the hub hears the confirmation in a batch."""
        link = await self._link_for(channel)
        new = not link.channels
        await link.subscribe(channel)
        self._link_of[channel] = link
        if new:
            self._changed.set()  # run() starts reading this shard's connection

    async def remove(self, channel: bytes) -> None:
        link = self._link_of.pop(channel, None)
        if link is not None:
            await link.unsubscribe(channel)

    async def run(self) -> None:
        """Read every connection until one of them fails; then raise its error."""
        tasks: dict[_Link, asyncio.Task[None]] = {}
        try:
            while True:
                for link in self._links.values():
                    if link.channels and link not in tasks:
                        tasks[link] = asyncio.create_task(link.run(self.on_batch))
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait())
                done, _ = await asyncio.wait(
                    [*tasks.values(), changed], return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                for task in done:
                    if task is not changed:
                        task.result()  # raises the connection's error
                        raise DeadConnection("a subscribed connection ended")
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(BaseException):
                    await task

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()
        self._link_of.clear()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                await self._cluster.aclose()
