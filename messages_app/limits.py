"""Per-user limits that hold across every web process (docs/architecture.md, "Limits").

Rates (posts, rooms created) are moving windows of the ``limits`` library on the
project's Redis (``REDIS_URL``, keys under ``<CHAT_REDIS_PREFIX>:limits``), so a
user meets the same count whichever web process serves the socket. Open sockets
are leases in a Redis sorted set (``SocketLease``). The daily @gpt token budget is
read from the usage the replies record in Postgres.

A refusal is a ``ClientError("rate_limited", ..., retry_after=seconds)``: the
consumer turns it into an error frame, the pages into a form error. A check that
refuses writes nothing and consumes nothing.

If Redis cannot be reached, the Redis-backed checks let the action through and
log it: the chat itself needs Redis to deliver anything, so refusing every post
would only add a second outage to the first.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits import RateLimitItemPerSecond as PerSeconds
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from messages_app.models import User
from messages_app.protocol import ClientError
from messages_app.selectors import usage_attempts

logger = logging.getLogger(__name__)

# The wall clock the waits are computed with; the limits library reads time.time()
# too (tests replace both to move time forward).
now = time.time


def key_prefix() -> str:
    return f"{settings.CHAT_REDIS_PREFIX}:limits"


@functools.cache
def _limiter(url: str, prefix: str) -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(RedisStorage(url, key_prefix=prefix))


def limiter() -> MovingWindowRateLimiter:
    """This process's limiter on the project's Redis (one per URL and prefix)."""
    return _limiter(settings.REDIS_URL, key_prefix())


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def redis_client() -> redis.Redis:
    return _redis(settings.REDIS_URL)


def wait_text(seconds: float) -> str:
    """``12 s``, ``3 min``, ``2 h``: a wait as a person reads it (rounded up)."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"


def _retry_after(item: RateLimitItem, *identifiers: str) -> float:
    """Seconds until ``item`` allows one more for ``identifiers`` (moving window)."""
    stats = limiter().get_window_stats(item, *identifiers)
    return max(0.1, stats.reset_time - now())


def _check(items: list[tuple[RateLimitItem, str]], identifier: str, *, consume: bool) -> None:
    """Refuse when any of ``items`` is used up; else consume one of each if asked.

    ``items`` are (limit, sentence for the refusal). All are tested first, so a
    refused action consumes nothing of the limits it did pass. Then each is hit;
    a hit is atomic in Redis and refuses when full, so two actions racing for the
    last place cannot both pass (the loser may have used a place of an earlier
    limit: only in that race).
    """

    def refuse(item: RateLimitItem, sentence: str) -> ClientError:
        wait = _retry_after(item, identifier)
        return ClientError(
            "rate_limited", f"{sentence} Try again in {wait_text(wait)}.", retry_after=wait
        )

    try:
        for item, sentence in items:
            if not limiter().test(item, identifier):
                raise refuse(item, sentence)
        if consume:
            for item, sentence in items:
                if not limiter().hit(item, identifier):
                    raise refuse(item, sentence)
    except redis.RedisError:
        logger.warning("limits: Redis unreachable, %s let through", identifier, exc_info=True)


# --- posts ------------------------------------------------------------------------


def _post_items() -> list[tuple[RateLimitItem, str]]:
    burst, seconds = settings.CHAT_POST_BURST, settings.CHAT_POST_BURST_SECONDS
    per_minute = settings.CHAT_POSTS_PER_MINUTE
    return [
        (
            PerSeconds(burst, seconds, namespace="posts-burst"),
            f"You are posting too fast: at most {burst} messages in {seconds} seconds.",
        ),
        (
            RateLimitItemPerMinute(per_minute, namespace="posts-minute"),
            f"You are posting too fast: at most {per_minute} messages a minute.",
        ),
    ]


def post_allow(*, user: User | Any) -> None:
    """Count one post of ``user``, or raise ``rate_limited`` (burst or sustained rate).

    Call before the post is stored: a refused post stores nothing.
    """
    _check(_post_items(), f"user:{user.pk}", consume=True)


# --- history pages and edits (issue 14) -------------------------------------------


def history_allow(*, user: User | Any) -> None:
    """Count one ``history`` page asked by ``user``, or raise ``rate_limited``."""
    per_minute = settings.CHAT_HISTORY_PER_MINUTE
    item = RateLimitItemPerMinute(per_minute, namespace="history-minute")
    sentence = f"You are loading history too fast: at most {per_minute} pages a minute."
    _check([(item, sentence)], f"user:{user.pk}", consume=True)


def edit_allow(*, user: User | Any) -> None:
    """Count one edit of ``user``, or raise ``rate_limited``. Call before the edit."""
    per_minute = settings.CHAT_EDITS_PER_MINUTE
    item = RateLimitItemPerMinute(per_minute, namespace="edits-minute")
    sentence = f"You are editing too fast: at most {per_minute} edits a minute."
    _check([(item, sentence)], f"user:{user.pk}", consume=True)


# --- rooms ------------------------------------------------------------------------


def _room_items() -> list[tuple[RateLimitItem, str]]:
    per_hour = settings.CHAT_ROOMS_PER_HOUR
    return [
        (
            RateLimitItemPerHour(per_hour, namespace="rooms-hour"),
            f"You have created {per_hour} rooms in the last hour, the most allowed.",
        )
    ]


def room_create_check(*, user: User | Any) -> None:
    """Raise ``rate_limited`` if ``user`` may create no room now (consumes nothing)."""
    _check(_room_items(), f"user:{user.pk}", consume=False)


def room_created(*, user: User | Any) -> None:
    """Count a room ``user`` created (after it was created: a refused form costs nothing).

    Never refuses: the room exists. Two creations racing past the check may
    both be counted, one over the limit, which only delays the next one.
    """
    try:
        for item, _ in _room_items():
            limiter().hit(item, f"user:{user.pk}")
    except redis.RedisError:
        logger.warning("limits: Redis unreachable, room not counted", exc_info=True)


# --- the daily @gpt token budget ---------------------------------------------------

BUDGET_WINDOW = timedelta(hours=24)


def gpt_budget_check(*, user: User | Any) -> None:
    """Raise ``rate_limited`` if ``user``'s replies of the last 24 h used their token budget.

    Counts ``total_tokens`` as the replies recorded them, every attempt of a
    regenerated reply too, at the time each was asked for
    (``selectors.usage_attempts``, the source the usage page reads). A reply
    still streaming counts once it finishes, so the budget can be overrun by at
    most the replies open at once. ``GPT_DAILY_TOKENS_PER_USER = 0``: no budget.
    """
    budget = settings.GPT_DAILY_TOKENS_PER_USER
    if not budget:
        return
    attempts = usage_attempts(
        user_id=user.pk, since=timezone.now() - BUDGET_WINDOW, with_tokens=True
    )
    used = sum(tokens for _at, tokens in attempts)
    if used < budget:
        return
    # The wait: until enough of the oldest replies leave the window to bring the
    # total below the budget.
    wait = BUDGET_WINDOW.total_seconds()
    remaining = used
    for asked_at, tokens in attempts:
        remaining -= tokens
        if remaining < budget:
            wait = (asked_at + BUDGET_WINDOW - timezone.now()).total_seconds()
            break
    wait = max(1.0, wait)
    raise ClientError(
        "rate_limited",
        f"You have used your @gpt budget of {budget} tokens for the last 24 hours "
        f"({used} used). Try again in {wait_text(wait)}.",
        retry_after=wait,
    )


# --- open sockets -------------------------------------------------------------------

# One sorted set per user: member = lease id, score = when the lease expires
# (Redis's own clock, so web processes with skewed clocks agree). Expired leases
# are dropped before counting; the set itself expires with its last lease.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""

_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


def sockets_key(user_id: int) -> str:
    return f"{key_prefix()}:sockets:{user_id}"


class SocketLease:
    """One open socket of a user, counted in Redis while it is renewed.

    ``acquire`` refuses the socket over ``CHAT_MAX_SOCKETS_PER_USER``; the
    consumer renews the lease every third of ``CHAT_SOCKET_LEASE_SECONDS``
    and releases it on disconnect. A lease that is not renewed (its process
    died) expires on its own. Sync: the consumer calls these from a thread.
    """

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.id = uuid.uuid4().hex
        self.key = sockets_key(user_id)

    @staticmethod
    def renew_every() -> float:
        return settings.CHAT_SOCKET_LEASE_SECONDS / 3

    def acquire(self) -> None:
        """Take a place for this socket, or raise ``rate_limited``."""
        limit = settings.CHAT_MAX_SOCKETS_PER_USER
        try:
            taken = redis_client().eval(
                _ACQUIRE_LUA, 1, self.key, self.id, limit, settings.CHAT_SOCKET_LEASE_SECONDS
            )
        except redis.RedisError:
            logger.warning("limits: Redis unreachable, socket let through", exc_info=True)
            return
        if not taken:
            wait = float(settings.CHAT_SOCKET_LEASE_SECONDS)
            raise ClientError(
                "rate_limited",
                f"You have {limit} connections open (tabs or windows of this site), the most "
                f"allowed. Close one; this page tries again in {wait_text(wait)}.",
                retry_after=wait,
            )

    def renew(self) -> None:
        try:
            redis_client().eval(
                _RENEW_LUA, 1, self.key, self.id, settings.CHAT_SOCKET_LEASE_SECONDS
            )
        except redis.RedisError:
            logger.warning("limits: could not renew a socket lease", exc_info=True)

    def release(self) -> None:
        try:
            redis_client().zrem(self.key, self.id)
        except redis.RedisError:
            logger.warning("limits: could not release a socket lease (it expires)", exc_info=True)


def open_sockets(user_id: int) -> int:
    """How many sockets ``user_id`` holds leases for now (expired ones excluded)."""
    client = redis_client()
    seconds, micros = client.time()
    return int(client.zcount(sockets_key(user_id), f"({seconds + micros / 1e6}", "+inf"))
