"""Streams one @gpt reply into its row: claim, call the model, flush, finish.

The model call never runs inside a database transaction: each flush is one
short UPDATE, batched with those of the process's other runs (``worker.appends``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from messages_app import selectors, services
from messages_app.models import Message, Role, Status
from worker import cancel, heartbeat, llm
from worker.appends import appends
from worker.chunker import Chunker
from worker.dbretry import DatabaseUnavailable, retrying

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are @gpt, an assistant taking part in the group chat room “{room}”. "
    "Several people talk here: each of their messages begins with the speaker's "
    "name and a colon. Answer the latest message that mentions you, speaking to its "
    "author by name where it helps. Be concise; use Markdown where it helps."
)


def build_context(reply: Message) -> list[dict[str, Any]]:
    """The chat messages the model sees: the room's recent talk, speakers named."""
    history = selectors.reply_context_messages(
        reply=reply, limit=settings.GPT_CONTEXT_MESSAGES, max_chars=settings.GPT_CONTEXT_CHARS
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT.format(room=reply.room.name)}
    ]
    for message in history:
        if message.role == Role.ASSISTANT:
            messages.append({"role": "assistant", "content": message.body})
        else:
            name = message.author.get_display_name() if message.author else "someone"
            messages.append({"role": "user", "content": f"{name}: {message.body}"})
    return messages


def _give_back_connection(idle: bool) -> None:
    """While a streaming run waits for the model, it needs no database connection:
    its appends are written by the process's append thread (``worker.appends``).
    With the pool, this thread's connection goes back to it, so a
    hundred streams share a few (chatsite/settings.py); without, it persists as
    configured.
    """
    if connection.connection is not None and connection.pool is not None:
        connection.close()
    else:
        close_old_connections()


DATABASE_GONE = (
    "The reply stopped: the database could not be reached for {seconds:g} seconds "
    "(GPT_DB_RETRY_FOR). The text so far is kept."
)
INTERNAL_ERROR = "The reply stopped because of an internal error."
CUT_AT_CHARS = (
    "The reply reached the limit of {limit} characters (GPT_MAX_REPLY_CHARS) and was cut here."
)
CUT_AT_TOKENS = (
    "The reply reached the limit of {limit} tokens (GPT_MAX_REPLY_TOKENS) and was cut here."
)


class ReplyRun:
    """One attempt at streaming one reply.

    Every way the run can end goes through ``_finish`` or ``_fail``, inside the
    guarded region of ``_stream_into_row``: whatever the model sends or the
    database does, the row ends terminal (done, failed, cancelled) when the run
    ends, or, if the database stays away even for that, the watchdog ends it
    from its heartbeat.
    """

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.target = llm.endpoint()
        self.attempt: uuid.UUID | None = None
        # The row's version as this run last wrote it: every append names it.
        self.version = 0
        self.length = 0  # characters in the row
        self.writes = 0
        # Text the model sent that is not in the row yet because its write failed.
        self.unwritten = ""
        # Why the stream was closed early: "cancelled", "time_limit" or "length_limit".
        self.stop_reason: str | None = None
        self._stream: llm.ChatStream | None = None

    def stop(self, reason: str) -> None:
        """Close the model stream from any thread (a cancel, the time limit)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._stream is not None:
            self._stream.close()

    def run(self) -> str:
        """Stream the reply; return how it ended (done, failed, cancelled, skipped)."""
        try:
            self.attempt = retrying(
                lambda: services.reply_claim(message_id=self.message_id, model=self.target.model),
                what="claiming a reply",
            )
        except DatabaseUnavailable:
            # Still pending: the watchdog fails it after GPT_QUEUE_TIMEOUT, saying so.
            logger.exception("reply %s could not be claimed", self.message_id)
            return "skipped"
        if self.attempt is None:
            logger.info("reply %s is not pending; nothing to do", self.message_id)
            return "skipped"
        unbeat = heartbeat.beats.register(self.message_id, self.attempt)
        try:
            return self._run()
        finally:
            unbeat()

    def _run(self) -> str:
        try:
            reply = retrying(
                lambda: selectors.message_get(message_id=self.message_id), what="reading a reply"
            )
            self._stream = llm.ChatStream(build_context(reply), self.target)
        except Exception as error:
            logger.exception("reply %s could not start", self.message_id)
            unavailable = isinstance(error, DatabaseUnavailable)
            return self._fail(None, self._database_gone() if unavailable else INTERNAL_ERROR)
        self.version, self.length = reply.version, len(reply.body)
        unregister = cancel.listener.register(self.message_id, lambda: self.stop("cancelled"))
        timer = threading.Timer(settings.GPT_REPLY_TIME_LIMIT, self.stop, args=("time_limit",))
        timer.daemon = True
        timer.start()
        try:
            if reply.status != Status.STREAMING or reply.attempt != self.attempt:
                return "cancelled"  # cancelled between the claim and the listener
            return self._stream_into_row(self._stream, Chunker(reply.room.effective_granularity))
        finally:
            timer.cancel()
            unregister()

    def _stream_into_row(self, stream: llm.ChatStream, chunker: Chunker) -> str:
        usage: dict[str, Any] | None = None
        model = ""
        finish_reason = ""
        try:
            # A batch is every piece that arrived while the last write ran: one
            # token when the writes keep up, and then the chunker flushes after
            # each token (word, sentence); more under load, written at once.
            for batch in stream.batches(on_wait=_give_back_connection):
                for piece in batch:
                    usage = piece.usage or usage
                    model = piece.model or model
                    finish_reason = piece.finish_reason or finish_reason
                for text in chunker.feed("".join(piece.text for piece in batch)):
                    if not self._append(text):
                        self.stop("cancelled")
                        return "cancelled"
            if self.stop_reason == "cancelled":
                return "cancelled"
            if self.stop_reason == "time_limit":
                limit = settings.GPT_REPLY_TIME_LIMIT
                return self._fail(
                    chunker, f"The reply took longer than {limit:g} seconds and was stopped."
                )
            if self.stop_reason == "length_limit":
                return self._fail(chunker, CUT_AT_CHARS.format(limit=settings.GPT_MAX_REPLY_CHARS))
            if finish_reason == "length":
                # The model stopped at max_tokens: say so rather than look complete.
                return self._fail(
                    chunker, CUT_AT_TOKENS.format(limit=settings.GPT_MAX_REPLY_TOKENS)
                )
            return self._finish(chunker, model, usage)
        except llm.LLMError as error:
            return self._fail(chunker, str(error))
        except DatabaseUnavailable:
            logger.exception("reply %s lost the database", self.message_id)
            return self._fail(chunker, self._database_gone())
        except Exception:
            logger.exception("reply %s crashed", self.message_id)
            return self._fail(chunker, INTERNAL_ERROR)

    def _finish(self, chunker: Chunker, model: Any, usage: dict[str, Any] | None) -> str:
        if not self._append(chunker.finish()):
            return "cancelled"
        finished = retrying(
            lambda: services.reply_finish(
                message_id=self.message_id,
                attempt=self.attempt,  # type: ignore[arg-type]
                model=model or self.target.model,
                usage=usage,
            ),
            what="finishing a reply",
        )
        return "done" if finished is not None else "cancelled"

    def _fail(self, chunker: Chunker | None, error: str) -> str:
        """Keep every word received, then mark the reply failed with ``error``.

        Never raises: when even this cannot reach the database, the row stays
        streaming, its heartbeat stops with this run, and the watchdog fails it.
        """
        try:
            if not self._append(chunker.finish() if chunker is not None else ""):
                return "cancelled"
        except Exception:
            logger.exception("reply %s: the last text could not be written", self.message_id)
        for reason in (error, INTERNAL_ERROR):
            try:
                failed = retrying(
                    lambda reason=reason: services.reply_fail(
                        message_id=self.message_id, attempt=self.attempt, error=reason
                    ),
                    what="failing a reply",
                )
            except DatabaseUnavailable:
                logger.exception("reply %s could not be marked failed", self.message_id)
                return "failed"
            except Exception:
                logger.exception("reply %s: marking it failed raised", self.message_id)
                continue
            logger.warning("reply %s failed: %s", self.message_id, reason)
            return "failed" if failed is not None else "cancelled"
        return "failed"

    def _append(self, text: str) -> bool:
        """Write ``text`` (and whatever an earlier failed write left); False once the
        row is no longer ours (cancelled, taken over). A reply that would pass
        ``GPT_MAX_REPLY_CHARS`` is cut there and the stream stopped."""
        text = self.unwritten + services.clean_model_text(text)
        room = settings.GPT_MAX_REPLY_CHARS - self.length
        if len(text) > room:
            text = text[: max(room, 0)]
            self.stop("length_limit")
        if not text:
            return True
        assert self.attempt is not None  # noqa: S101
        self.writes += 1
        self.unwritten = text
        appended = appends.append(
            services.ReplyAppend(
                message_id=self.message_id, attempt=self.attempt, version=self.version, text=text
            )
        )
        self.unwritten = ""
        if appended is None:
            return False
        self.version = appended.version
        self.length = appended.offset + len(text)
        return True

    @staticmethod
    def _database_gone() -> str:
        return DATABASE_GONE.format(seconds=settings.GPT_DB_RETRY_FOR)
