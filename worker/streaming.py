"""Streams one @gpt reply into its row: claim, call the model, flush, finish.

The model call never runs inside a database transaction: each flush is one
short UPDATE of its own (``services.reply_append``).
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
from worker import cancel, llm
from worker.chunker import Chunker

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
    its appends are written by the process's append thread (``reply_append``,
    batched). With the pool, this thread's connection goes back to it, so a
    hundred streams share a few (chatsite/settings.py); without, it persists as
    configured.
    """
    if connection.connection is not None and connection.pool is not None:
        connection.close()
    else:
        close_old_connections()


class ReplyRun:
    """One attempt at streaming one reply."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.target = llm.endpoint()
        self.attempt: uuid.UUID | None = None
        self.writes = 0
        # Why the stream was closed early: "cancelled" or "time_limit".
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
        self.attempt = services.reply_claim(message_id=self.message_id, model=self.target.model)
        if self.attempt is None:
            logger.info("reply %s is not pending; nothing to do", self.message_id)
            return "skipped"
        reply = selectors.message_get(message_id=self.message_id)
        self._stream = llm.ChatStream(build_context(reply), self.target)
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
        usage: dict[str, int] | None = None
        model = ""
        try:
            # A batch is every piece that arrived while the last write ran: one
            # token when the writes keep up, and then the chunker flushes after
            # each token (word, sentence); more under load, written at once.
            for batch in stream.batches(on_wait=_give_back_connection):
                for piece in batch:
                    usage = piece.usage or usage
                    model = piece.model or model
                for text in chunker.feed("".join(piece.text for piece in batch)):
                    if not self._append(text):
                        self.stop("cancelled")
                        return "cancelled"
        except llm.LLMError as error:
            return self._fail(chunker, str(error))
        except Exception:
            logger.exception("reply %s crashed", self.message_id)
            return self._fail(chunker, "The reply stopped because of an internal error.")
        if self.stop_reason == "cancelled":
            return "cancelled"
        if self.stop_reason == "time_limit":
            limit = settings.GPT_REPLY_TIME_LIMIT
            return self._fail(
                chunker, f"The reply took longer than {limit:g} seconds and was stopped."
            )
        if not self._append(chunker.finish()):
            return "cancelled"
        finished = services.reply_finish(
            message_id=self.message_id,
            attempt=self.attempt,  # type: ignore[arg-type]
            model=model or self.target.model,
            usage=usage,
        )
        return "done" if finished is not None else "cancelled"

    def _fail(self, chunker: Chunker, error: str) -> str:
        """Keep every word received, then mark the reply failed with ``error``."""
        if not self._append(chunker.finish()):
            return "cancelled"
        failed = services.reply_fail(message_id=self.message_id, attempt=self.attempt, error=error)
        logger.warning("reply %s failed: %s", self.message_id, error)
        return "failed" if failed is not None else "cancelled"

    def _append(self, text: str) -> bool:
        """Write ``text``; False once the row is no longer ours (cancelled, taken over)."""
        if not text:
            return True
        assert self.attempt is not None  # noqa: S101
        self.writes += 1
        appended = services.reply_append(
            message_id=self.message_id, attempt=self.attempt, text=text, batched=True
        )
        return appended is not None
