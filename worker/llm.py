"""The model client: the only module that imports ``openai``.

Streams a chat completion and turns every way it can go wrong into an
``LLMError`` with a sentence a person can read in the chat.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import random
import socket
import threading
from collections.abc import Callable, Iterator
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
    # Sent only when set (an assistant's own); None leaves the model's default.
    temperature: float | None = None
    # The request's max_tokens; None is GPT_MAX_REPLY_TOKENS.
    max_tokens: int | None = None
    # Where the key came from, for the error of a refused key.
    key_env: str = "OPENAI_API_KEY"

    @property
    def token_limit(self) -> int:
        return self.max_tokens or settings.GPT_MAX_REPLY_TOKENS


@dataclass(frozen=True)
class Piece:
    """One streamed chunk: text to show, and/or the final usage and model name."""

    text: str = ""
    usage: dict[str, Any] | None = None
    model: Any = ""  # as the model sent it: the services clean it before it is stored
    finish_reason: str = ""


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
        )
    return Endpoint(base_url=settings.GPT_DEMO_BASE_URL, api_key="demo", model="demo")


def endpoint_for(assistant: Any) -> Endpoint:
    """Where ``assistant``'s replies come from (an ``Assistant`` row, or None).

    Its blank fields fall back to the settings, so the default ``@gpt`` (all
    blank) is ``endpoint()``: OpenAI, ``OPENAI_BASE_URL`` or the demo model.

    - base URL and key variable both blank: ``endpoint()``, with its own model
      when set (but the demo model stays ``demo``: its replies say they are the demo);
    - a base URL of its own: that server, with the key of its key variable if it
      names one, else no key (``OPENAI_API_KEY`` is never sent to another server);
    - a key variable without a base URL: OpenAI itself with that key;
    - model blank: ``OPENAI_MODEL``.

    A key variable that is not set in this process raises ``LLMError`` naming it,
    before any request is made.
    """
    if assistant is None:
        return endpoint()
    limit = settings.GPT_MAX_REPLY_TOKENS
    own = {
        "temperature": assistant.temperature,
        "max_tokens": min(assistant.max_tokens or limit, limit),
    }
    if not assistant.base_url and not assistant.api_key_env:
        base = endpoint()
        demo = not (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)
        model = base.model if demo else assistant.model
        return Endpoint(
            base_url=base.base_url, api_key=base.api_key, model=model or base.model, **own
        )
    api_key = "not-needed"
    if assistant.api_key_env:
        api_key = os.environ.get(assistant.api_key_env, "").strip()
        if not api_key:
            raise LLMError(
                f"@{assistant.handle} has no API key: the environment variable "
                f"{assistant.api_key_env} is not set for the worker."
            )
    return Endpoint(
        base_url=assistant.base_url or None,
        api_key=api_key,
        model=assistant.model or settings.OPENAI_MODEL,
        key_env=assistant.api_key_env or "",
        **own,
    )


@functools.cache
def _client(base_url: str | None, api_key: str, timeout: float) -> openai.OpenAI:
    # One client (one HTTP connection pool) per process and configuration.
    # The read timeout bounds the wait for each next chunk: a stalled stream
    # fails instead of hanging. Retries are ours (ChatStream._open), not the SDK's:
    # quota errors must fail fast, and a cancel must stop the waiting.
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        max_retries=0,
    )


_client_lock = threading.Lock()


def client(target: Endpoint) -> openai.OpenAI:
    # Under the lock, so that a hundred streams starting together build one
    # client (its TLS context alone costs tens of milliseconds of CPU) and not
    # one each: functools.cache does not stop concurrent first calls.
    with _client_lock:
        return _client(target.base_url, target.api_key, settings.GPT_TOKEN_TIMEOUT)


def is_retryable(error: BaseException) -> bool:
    """Whether a request that failed before its first token is worth sending again.

    Connection errors, timeouts, 408/409, 429 (except a used-up quota) and 5xx are;
    authentication, permission, unknown model and bad requests are not.
    """
    if isinstance(error, openai.RateLimitError):
        return getattr(error, "code", None) != "insufficient_quota"
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409) or error.status_code >= 500
    return isinstance(error, openai.APIConnectionError | httpx.TransportError)


def _describe(error: BaseException, key_env: str = "OPENAI_API_KEY") -> str:
    if isinstance(error, openai.AuthenticationError):
        if not key_env:
            return "The model service wants an API key (401): give the assistant a key variable."
        return f"The model service refused the API key (401). Check {key_env}."
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


def _piece(chunk: Any) -> Piece:
    """A ``chat.completion.chunk`` (as JSON) as a Piece; ValueError if it is not one."""
    if not isinstance(chunk, dict):
        raise ValueError(f"a stream chunk must be a JSON object, not {type(chunk).__name__}")
    usage = chunk.get("usage")
    choices = chunk.get("choices") or []
    text = ""
    finish_reason = ""
    if choices:
        delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
        text = (delta or {}).get("content") or ""
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        finish_reason = reason if isinstance(reason, str) else ""
    if not isinstance(text, str):
        raise ValueError("a stream chunk's content must be text")
    return Piece(
        text=text,
        finish_reason=finish_reason,
        usage={
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "total_tokens": usage.get("total_tokens"),
        }
        if isinstance(usage, dict)
        else None,
        model=chunk.get("model") or "",
    )


class ChatStream:
    """A streaming chat completion that another thread may close (to cancel).

    Iterating opens the request, retrying failures that happen before the first
    token (``GPT_MAX_RETRIES`` times, backoff from ``GPT_RETRY_BACKOFF`` seconds,
    doubling, with jitter), then yields the pieces. Nothing is retried once a
    token has arrived: the text so far is already in the room.
    """

    def __init__(self, messages: list[dict[str, Any]], target: Endpoint) -> None:
        self.messages = messages
        self.target = target
        self.attempts = 0
        self._stream: Any = None
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop the stream from any thread: the model's connection closes at once.

        Shutting the socket down wakes the thread blocked reading it (closing
        the file descriptor alone would not), and the server sees the client go.
        """
        self._closed.set()
        stream = self._stream
        if stream is None:
            return
        try:
            network_stream = stream.response.extensions.get("network_stream")
            sock = network_stream.get_extra_info("socket") if network_stream else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def batches(self, on_wait: Callable[[], None] | None = None) -> Iterator[list[Piece]]:
        """The pieces, each batch being all that arrived while the caller handled the last.

        A reader thread iterates the stream; the caller gets everything it has
        read so far at once. When the caller keeps up, every batch is one piece;
        when it falls behind (a hundred streams in one process, a slow write),
        the pieces that queued up come as one batch, to be written at once,
        instead of the delay growing with every piece. ``on_wait()`` is called
        each time before the caller would wait for the next piece (it may give
        back its database connection then). Errors of the stream are raised here, after the pieces
        that came before them.
        """
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        end = object()

        def read() -> None:
            try:
                for piece in self:
                    pieces.put(piece)
                pieces.put(end)
            except BaseException as error:  # handed to the caller's thread
                pieces.put(error)

        reader = threading.Thread(target=read, name="model-stream", daemon=True)
        reader.start()
        finished = False
        try:
            while True:
                batch: list[Piece] = []
                if pieces.empty() and on_wait is not None:
                    on_wait()
                item = pieces.get()
                while True:
                    if item is end or isinstance(item, BaseException):
                        finished = True
                        if batch:
                            yield batch
                        if item is end:
                            return
                        raise item
                    batch.append(item)
                    try:
                        item = pieces.get_nowait()
                    except queue.Empty:
                        break
                yield batch
        finally:
            if not finished:
                self.close()  # the caller stopped early: let the reader go
            reader.join(timeout=5)

    def _open(self) -> Any:
        while True:
            self.attempts += 1
            try:
                # The SDK's generic request (its documented way to call any
                # endpoint), not chat.completions.create: the same HTTP, SSE,
                # error events and exceptions, but each chunk stays the JSON
                # object it is instead of becoming pydantic models, which cost
                # ~6× the CPU per token (~115 µs against ~19 µs here): with a
                # hundred streams in one process that was half its time
                # (docs/benchmarks.md).
                body: dict[str, Any] = {
                    "model": self.target.model,
                    "messages": self.messages,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    # The bound of every reply (the assistant's, at most
                    # GPT_MAX_REPLY_TOKENS); a reply that reaches it ends with
                    # finish_reason "length".
                    "max_tokens": self.target.token_limit,
                }
                if self.target.temperature is not None:
                    body["temperature"] = self.target.temperature
                return client(self.target).post(
                    "/chat/completions",
                    body=body,
                    cast_to=object,
                    stream=True,
                    stream_cls=openai.Stream[object],
                )
            except (openai.OpenAIError, httpx.HTTPError) as error:
                if not is_retryable(error) or self.attempts > settings.GPT_MAX_RETRIES:
                    raise
                delay = settings.GPT_RETRY_BACKOFF * 2 ** (self.attempts - 1)
                delay *= 0.5 + random.random()  # noqa: S311 - jitter, not security
                logger.info(
                    "model request failed (%s); retry %s in %.2fs", error, self.attempts, delay
                )
                if self._closed.wait(delay):
                    return None

    def __iter__(self) -> Iterator[Piece]:
        try:
            if self.closed:
                return
            self._stream = self._open()
            if self._stream is None:
                return
            if self.closed:  # closed while the request was being sent
                return
            for chunk in self._stream:
                if self.closed:
                    return
                piece = _piece(chunk)
                if piece.text or piece.usage or piece.finish_reason:
                    yield piece
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as error:
            if self.closed:
                return  # closing the stream to cancel makes the reader raise
            raise LLMError(_describe(error, self.target.key_env)) from error
        finally:
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
