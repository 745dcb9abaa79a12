"""A streaming reply's text: the guarded appends (one statement for many replies),
the cleaning of the model's text, and the folding of chunks into the body."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from messages_app import events
from messages_app.models import Message, ReplyChunk, Status
from messages_app.services.common import clean_text

logger = logging.getLogger(__name__)


_MESSAGES = Message._meta.db_table
_CHUNKS = ReplyChunk._meta.db_table

# The appends of many replies (at most one each) in one statement: one round trip,
# one commit. Each row moves from the version its writer holds to the next, so a
# statement sent twice (a retry after its result was lost) finds no row the second
# time and writes nothing twice. The text goes into a chunk row of its own: the
# message row changes only in small columns (its body, TOASTed once long, is not
# rewritten), so a write costs the same at any length of the reply. updated_at
# is left alone: it is indexed (a changed indexed column would rule out Postgres's
# in-page HOT update); a streaming run's liveness is its heartbeat.
_APPEND_MANY_SQL = f"""
WITH a (id, attempt, version, text) AS (VALUES {{values}}),
m AS (
    UPDATE {_MESSAGES} AS m
       SET version = m.version + 1,
           text_length = m.text_length + char_length(a.text),
           unfolded_length = m.unfolded_length + char_length(a.text)
      FROM a
     WHERE m.id = a.id AND m.attempt = a.attempt AND m.status = 'streaming'
       AND m.version = COALESCE(a.version, m.version)
 RETURNING m.id, m.version, m.text_length, m.room_id, m.unfolded_length, a.text
), c AS (
    INSERT INTO {_CHUNKS} (message_id, version, "offset", text)
    SELECT id, version, text_length - char_length(text), text FROM m
)
SELECT id, version, text_length, room_id, unfolded_length FROM m
"""  # noqa: S608 - the table names are ours, every value is a parameter

# Folding: the chunks of each row, in order, appended to its body at once (one
# rewrite of the body per GPT_FOLD_CHARS characters, not one per write), then
# deleted. The text a reader sees does not change, so neither does the version.
# unfolded_length drops by what was folded (not to 0): a chunk committed after
# this statement began stays, and is still counted.
_FOLD_SQL = f"""
WITH c AS (
    DELETE FROM {_CHUNKS} WHERE message_id = ANY(%s) RETURNING message_id, version, text
), t AS (
    SELECT message_id, string_agg(text, '' ORDER BY version) AS text FROM c GROUP BY message_id
)
UPDATE {_MESSAGES} AS m
   SET body = m.body || t.text, unfolded_length = m.unfolded_length - char_length(t.text)
  FROM t WHERE m.id = t.message_id
"""  # noqa: S608 - the table names are ours, every value is a parameter


def replies_fold(*, message_ids: list[int]) -> None:
    """Fold the chunks of these replies into their bodies (any status, any number)."""
    if message_ids:
        with connection.cursor() as cursor:
            cursor.execute(_FOLD_SQL, [list(message_ids)])


@dataclass(frozen=True)
class Appended:
    version: int
    offset: int


@dataclass(frozen=True)
class ReplyAppend:
    """One append of a streaming run: ``text`` after write number ``version`` of the row."""

    message_id: int
    attempt: uuid.UUID
    version: int
    text: str


def clean_model_text(text: str) -> str:
    """Text from the model as it can be stored: ``clean_text``, and no lone surrogates.

    A JSON string may escape half a surrogate pair (``"\\ud800"``); Python decodes
    it, but no UTF-8 (so no Postgres text) can hold it. A pair becomes its
    character; a lone half becomes U+FFFD, as the chunker makes it (visible, not
    silently dropped).
    """
    text = clean_text(text)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def reply_append(
    *, message_id: int, attempt: uuid.UUID, text: str, version: int | None = None
) -> Appended | None:
    """Append ``text`` to a streaming reply and broadcast the delta.

    Returns None when the row is no longer this attempt's to write (cancelled,
    finished, taken over): the caller stops. With ``version`` (what the worker
    always names) the append is written only over that version of the row, so it
    is written at most once however often it is sent; a one-off write (the admin,
    tests) may leave it out, and is written over the row's current version. One
    statement, atomic on its own: in autocommit the delta is sent right after it
    commits, inside a caller's atomic block when that commits. The streaming runs
    of a worker write theirs in batches instead (``reply_appends_write``, from
    ``worker/appends.py``).
    """
    text = clean_model_text(text)
    if not text:
        return None if not _is_writable(message_id, attempt) else _current(message_id)
    written = _append_many([ReplyAppend(message_id, attempt, version, text)])  # type: ignore[arg-type]
    if message_id not in written:
        return None
    appended, room_id, event = _written(message_id, text, *written[message_id])
    transaction.on_commit(lambda: events.send_to_room(room_id, event))
    return appended


def _append_many(appends: list[ReplyAppend]) -> dict[int, tuple[int, int, int]]:
    """Write ``appends`` (each with text; a version of None: over the row's current
    one) in one statement, then fold the rows whose chunks reached GPT_FOLD_CHARS;
    {message id: (version, length, room id)} written.

    The fold is a statement of its own, atomic alone: if it never runs (the
    process died), the chunks stay where they are, read with the row, and the
    next fold or the reply's end takes them."""
    values = ", ".join(["(%s::bigint, %s::uuid, %s::integer, %s::text)"] * len(appends))
    params: list[Any] = []
    for a in appends:
        params += [a.message_id, a.attempt, a.version, a.text]
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_MANY_SQL.format(values=values), params)
        rows = cursor.fetchall()
    replies_fold(message_ids=[row[0] for row in rows if row[4] >= settings.GPT_FOLD_CHARS])
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def reply_appends_write(*, appends: list[ReplyAppend]) -> list[Appended | None]:
    """Write the appends of several streaming replies (at most one each) exactly once,
    in one statement, and publish their deltas after it commits.

    Returns, for each, what it wrote (``Appended``), or None when the row is no
    longer that attempt's (cancelled, finished, taken over). Safe to call again
    with the same appends when a call's outcome is unknown (the connection broke
    after the commit, publishing raised): an append the row already holds is
    found by its version, reported as written and published again (clients drop
    a delta whose version they hold), never written twice. Runs outside any
    transaction (``reply_append`` is the one for a caller's atomic block).
    """
    appends = [replace(a, text=clean_model_text(a.text)) for a in appends]
    to_write = [a for a in appends if a.text]
    written: dict[int, tuple[int, int, int]] = {}
    if to_write:
        written = _append_many(to_write)
    missing = [a.message_id for a in appends if a.message_id not in written]
    current = (
        {
            row[0]: row[1:]
            for row in Message.objects.filter(pk__in=missing).values_list(
                "pk", "attempt", "status", "version", "text_length", "room_id"
            )
        }
        if missing
        else {}
    )
    results: list[Appended | None] = []
    published: list[tuple[int, dict[str, Any]]] = []
    for a in appends:
        if a.message_id in written:
            appended, room_id, event = _written(a.message_id, a.text, *written[a.message_id])
        else:
            found = _already_written(a, current.get(a.message_id))
            if found is None:
                results.append(None)
                continue
            appended, room_id, event = found
        results.append(appended)
        if event is not None:
            published.append((room_id, event))
    try:
        events.send_to_rooms(published)
    except Exception:
        # The text is committed: a client that misses a delta repairs the gap by
        # resyncing. Raising would make the caller send the appends again.
        logger.exception("could not publish %s deltas", len(published))
    return results


def _already_written(
    append: ReplyAppend, row: tuple[Any, ...] | None
) -> tuple[Appended, int, dict[str, Any] | None] | None:
    """An append the statement did not write, as the row tells: written before (its
    version is the next one), nothing to write (empty), or None: not ours any more."""
    if row is None:
        return None
    attempt, status, version, length, room_id = row
    if attempt != append.attempt or status != Status.STREAMING:
        return None
    if not append.text and version == append.version:
        return Appended(version=version, offset=length), room_id, None
    if append.text and version == append.version + 1:
        return _written(append.message_id, append.text, version, length, room_id)
    return None


def _written(
    message_id: int, text: str, version: int, length: int, room_id: int
) -> tuple[Appended, int, dict[str, Any]]:
    """An append the UPDATE wrote (its RETURNING row): the result, the room, the delta."""
    offset = length - len(text)
    event = events.delta_event(message_id=message_id, version=version, offset=offset, text=text)
    return Appended(version=version, offset=offset), room_id, event


def _is_writable(message_id: int, attempt: uuid.UUID) -> bool:
    return Message.objects.filter(pk=message_id, attempt=attempt, status=Status.STREAMING).exists()


def _current(message_id: int) -> Appended:
    message = Message.objects.only("version", "text_length").get(pk=message_id)
    return Appended(version=message.version, offset=message.text_length)
