"""Riding out a database that blinks: transient errors retried with backoff.

A streaming run must not lose a reply because Postgres restarted or a connection
was cut (``pg_terminate_backend``, a failover, a network blip): every write of the
worker goes through ``retrying``, which sends it again on a fresh connection for
up to ``GPT_DB_RETRY_FOR`` seconds. Only writes that are safe to send twice go
through here: the appends name the row's version, the claim, finish and fail
name the attempt and the open status, so a write whose commit was in fact
applied finds nothing to do the second time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a lost or refused connection raises (Django wraps psycopg's errors in these;
# a pool that cannot hand out a connection in time raises OperationalError too).
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
FIRST_DELAY = 0.05
MAX_DELAY = 2.0


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for ``GPT_DB_RETRY_FOR`` seconds."""


def drop_connection() -> None:
    """Let go of this thread's connection after an error: a broken one is discarded
    (by the pool, or closed), and the next query opens a fresh one."""
    if connection.in_atomic_block:
        return  # a caller's transaction: it must see the error itself
    with contextlib.suppress(Exception):
        connection.close()


def retrying(write: Callable[[], T], *, what: str, retry_for: float | None = None) -> T:
    """``write()``, again on a fresh connection after each transient error, with
    backoff (doubling from 50 ms to 2 s), for up to ``retry_for`` seconds
    (``GPT_DB_RETRY_FOR``); then ``DatabaseUnavailable``. Other errors propagate.
    """
    limit = settings.GPT_DB_RETRY_FOR if retry_for is None else retry_for
    started = time.monotonic()
    delay = FIRST_DELAY
    while True:
        try:
            return write()
        except TRANSIENT_ERRORS as error:
            drop_connection()
            waited = time.monotonic() - started
            if waited >= limit:
                raise DatabaseUnavailable(
                    f"the database was unreachable for {waited:.1f}s ({what}): {error}"
                ) from error
            pause = min(delay, limit - waited)
            logger.warning(
                "database unavailable during %s (%s); retrying in %.2fs",
                what,
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                pause,
            )
            time.sleep(pause)
            delay = min(delay * 2, MAX_DELAY)
