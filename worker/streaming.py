"""Streams one @gpt reply into its row: claim, call the model, flush, finish.

The model call never runs inside a database transaction: each flush is one
short UPDATE of its own (``services.reply_append``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings

from messages_app import selectors, services
from messages_app.models import Message, Role
from worker import llm
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


class ReplyRun:
    """One attempt at streaming one reply."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.target = llm.endpoint()
        self.attempt: uuid.UUID | None = None
        self.writes = 0

    def run(self) -> str:
        """Stream the reply; return how it ended (done, failed, cancelled, skipped)."""
        self.attempt = services.reply_claim(message_id=self.message_id, model=self.target.model)
        if self.attempt is None:
            logger.info("reply %s is not pending; nothing to do", self.message_id)
            return "skipped"
        reply = selectors.message_get(message_id=self.message_id)
        chunker = Chunker(reply.room.effective_granularity)
        stream = llm.ChatStream(build_context(reply), self.target)
        usage: dict[str, int] | None = None
        model = ""
        try:
            for piece in stream:
                usage = piece.usage or usage
                model = piece.model or model
                for text in chunker.feed(piece.text):
                    if not self._append(text):
                        stream.close()
                        return "cancelled"
        except llm.LLMError as error:
            self._append(chunker.finish())  # keep every word received
            services.reply_fail(message_id=self.message_id, attempt=self.attempt, error=str(error))
            logger.warning("reply %s failed: %s", self.message_id, error)
            return "failed"
        except Exception:
            logger.exception("reply %s crashed", self.message_id)
            self._append(chunker.finish())
            services.reply_fail(
                message_id=self.message_id,
                attempt=self.attempt,
                error="The reply stopped because of an internal error.",
            )
            return "failed"
        if not self._append(chunker.finish()):
            return "cancelled"
        finished = services.reply_finish(
            message_id=self.message_id,
            attempt=self.attempt,
            model=model or self.target.model,
            usage=usage,
        )
        return "done" if finished is not None else "cancelled"

    def _append(self, text: str) -> bool:
        """Write ``text``; False once the row is no longer ours (cancelled)."""
        if not text:
            return True
        assert self.attempt is not None  # noqa: S101
        self.writes += 1
        return (
            services.reply_append(message_id=self.message_id, attempt=self.attempt, text=text)
            is not None
        )
