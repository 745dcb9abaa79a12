"""The model client: the only module that imports ``openai``.

Streams a chat completion and turns every way it can go wrong into an
``LLMError`` with a sentence a person can read in the chat.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from django.conf import settings

logger = logging.getLogger(__name__)


class LLMError(Exception):
    """The model call failed; ``str(error)`` is shown to the room."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None
    api_key: str
    model: str
    demo: bool


@dataclass(frozen=True)
class Piece:
    """One streamed chunk: text to show, and/or the final usage and model name."""

    text: str = ""
    usage: dict[str, int] | None = None
    model: str = ""


def endpoint() -> Endpoint:
    """Where replies come from: OpenAI, ``OPENAI_BASE_URL``, or the local demo model.

    With neither a key nor a base URL the product still works: replies come from
    the project's own demo server (``worker.demo_llm``), labelled as the demo.
    """
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        return Endpoint(
            base_url=settings.OPENAI_BASE_URL or None,
            api_key=settings.OPENAI_API_KEY or "not-needed",
            model=settings.OPENAI_MODEL,
            demo=False,
        )
    return Endpoint(base_url=settings.GPT_DEMO_BASE_URL, api_key="demo", model="demo", demo=True)


@functools.cache
def _client(base_url: str | None, api_key: str, timeout: float, retries: int) -> openai.OpenAI:
    # One client (one HTTP connection pool) per process and configuration.
    # A read timeout bounds the wait for each next chunk: a stalled stream fails.
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        max_retries=retries,
    )


def client(target: Endpoint) -> openai.OpenAI:
    return _client(
        target.base_url, target.api_key, settings.GPT_TOKEN_TIMEOUT, settings.GPT_MAX_RETRIES
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, openai.AuthenticationError):
        return "The model service refused the API key (401). Check OPENAI_API_KEY."
    if isinstance(error, openai.PermissionDeniedError):
        return "The model service denied access to this model (403)."
    if isinstance(error, openai.NotFoundError):
        return "The model service does not know this model or endpoint (404). Check OPENAI_MODEL."
    if isinstance(error, openai.RateLimitError):
        code = getattr(error, "code", None)
        if code == "insufficient_quota":
            return "The model service's quota is used up (429 insufficient_quota)."
        return "The model service is rate limiting requests (429); try again shortly."
    if isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
        return f"The model sent nothing for {settings.GPT_TOKEN_TIMEOUT:g} seconds (timeout)."
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):
        return "Lost the connection to the model service."
    if isinstance(error, openai.APIStatusError):
        return f"The model service answered with an error ({error.status_code})."
    if isinstance(error, openai.APIError):
        message = getattr(error, "message", "") or str(error)
        return f"The model service reported an error: {message[:300]}"
    return f"The model stream broke: {type(error).__name__}."


class ChatStream:
    """A streaming chat completion that another thread may close (to cancel)."""

    def __init__(self, messages: list[dict[str, Any]], target: Endpoint) -> None:
        self.messages = messages
        self.target = target
        self._stream: Any = None
        self._closed = False

    def close(self) -> None:
        """Close the upstream HTTP stream; the iterating thread stops soon after."""
        self._closed = True
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # closing from another thread may race the reader
                logger.debug("closing the model stream raised", exc_info=True)

    def __iter__(self) -> Iterator[Piece]:
        try:
            self._stream = client(self.target).chat.completions.create(
                model=self.target.model,
                messages=self.messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            if self._closed:
                self._stream.close()
                return
            for chunk in self._stream:
                if self._closed:
                    return
                usage = None
                if chunk.usage is not None:
                    usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                text = ""
                if chunk.choices:
                    text = chunk.choices[0].delta.content or ""
                if text or usage:
                    yield Piece(text=text, usage=usage, model=chunk.model or "")
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as error:
            if self._closed:
                return  # closing the stream to cancel makes the reader raise
            raise LLMError(_describe(error)) from error
