"""An OpenAI-compatible streaming model server, for tests, benchmarks and the demo.

It serves ``POST /v1/chat/completions`` (SSE when ``stream`` is true, ending with
``data: [DONE]``; a usage chunk with empty ``choices`` when
``stream_options.include_usage`` is set) and ``GET /v1/models``, with nothing
but the standard library.

What it says and how is controlled at start (flags) or, when started with
``--control`` (tests and benchmarks only: anyone who reaches the port could
steer the model and read what was said to it), at run time with
``POST /_control`` (a JSON object merged into the behaviour; ``{"reset": true}``
restores the start-up one); ``GET /_control`` returns the behaviour and counters
(with the last request and the most recent ones, ``requests_log``).

Behaviour keys:
- ``text``: the reply; empty means a demo reply that quotes the last message.
- ``tokens_per_second``: emission rate (0 means as fast as possible).
- ``first_token_delay``: seconds before the first token.
- ``fail_status`` / ``fail_times``: answer that HTTP status (401, 429, 500…)
  to the next ``fail_times`` requests (``-1``: to all), then stream normally;
  ``fail_code`` is the error's ``code`` (e.g. ``insufficient_quota``).
- ``drop_after``: close the connection after that many tokens.
- ``stall_after``: stop sending (but keep the connection) after that many tokens.
- ``error_after``: send an ``error`` event after that many tokens.
- ``malformed_after``: send a chunk that is not JSON after that many tokens.
- ``hold_after``: after that many tokens, wait for ``{"release": true}`` (a test
  uses it to act at a known point mid-stream); then stream the rest.
- ``model_name``: the ``model`` every chunk names (default: the requested one);
  tests send odd ones (too long, NUL, lone surrogates).
- ``usage``: figures that replace those of the usage chunk (negative, huge, text).
- ``error_message``: the message of the ``error`` event of ``error_after``.
- ``max_tokens`` of the request is honoured: the stream stops there with
  ``finish_reason: "length"``, as OpenAI's does.

Text (``text``, ``model_name``, ``error_message``) may hold what UTF-8 cannot
(lone surrogates): such a chunk is sent with JSON's ``\\u`` escapes, as a server
that relays broken text would.

Every chunk carries ``x_emitted_at`` (Unix time, seconds) for latency measurement.
``GET /_emissions`` returns, for the most recent streams, the last user message
(``key``), when the request arrived, and each content token with the time it was
emitted, so a benchmark can tell when the last token of any text it receives left
the model (all processes of one machine share the clock); ``?clear=1`` empties
the log afterwards. Without ``--control`` both answer 404.

Run: ``python -m worker.demo_llm --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

logger = logging.getLogger("demo_llm")

DEMO_MODEL = "demo"
# Streams whose token emission times are kept for GET /_emissions.
EMISSION_LOG_SIZE = 2000
REQUEST_LOG_SIZE = 50
_TOKEN_RE = re.compile(r"\s*\S{1,6}|\s+")


@dataclass
class Behaviour:
    text: str = ""
    tokens_per_second: float = 20.0
    first_token_delay: float = 0.2
    fail_status: int = 0
    fail_times: int = 0
    fail_code: str = ""
    drop_after: int = -1
    stall_after: int = -1
    error_after: int = -1
    malformed_after: int = -1
    hold_after: int = -1
    model_name: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    error_message: str = "demo stream error"


@dataclass
class Stats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    client_disconnects: int = 0
    open_streams: int = 0
    last_disconnect_at: float = 0.0
    held_streams: int = 0
    last_request: dict[str, Any] = field(default_factory=dict)
    # The most recent requests (REQUEST_LOG_SIZE), oldest first: a test of several
    # assistants reads what each one sent (its model, system prompt, temperature).
    requests_log: list[dict[str, Any]] = field(default_factory=list)


def tokenize(text: str) -> list[str]:
    """Split text into token-like pieces (a word with its leading space, long words cut)."""
    return _TOKEN_RE.findall(text)


def _speaker(content: str) -> tuple[str, str]:
    """The speaker and text of a room message as the worker sends it: the speaker's
    name as a JSON string, a colon, the text (``"there"`` when there is no name)."""
    if content.startswith('"'):
        try:
            name, end = json.JSONDecoder().raw_decode(content)
        except ValueError:
            name, end = None, 0
        if isinstance(name, str) and content[end : end + 2] == ": ":
            return name, content[end + 2 :]
    speaker, _, said = content.partition(": ")
    return (speaker, said) if said else ("there", content)


def demo_reply(messages: list[dict[str, Any]]) -> str:
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    if not isinstance(last, str):
        last = ""
    speaker, said = _speaker(last)
    quoted = "\n".join(f"> {line}" for line in said.strip().splitlines()[:6]) or "> (nothing)"
    return (
        f"Hi {speaker}! I am the **demo model**: no `OPENAI_API_KEY` is set, so this reply "
        "comes from the local demo server, streamed word by word.\n\n"
        f"You said:\n\n{quoted}\n\n"
        "Set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` for any OpenAI-compatible server) "
        "for real answers. Meanwhile, some Markdown:\n\n"
        "- a list item\n- another one, with `inline code`\n\n"
        '```python\nprint("hello from the demo model")\n```\n'
    )


class ModelServer:
    def __init__(self, behaviour: Behaviour, *, control: bool = False) -> None:
        self.control_enabled = control
        self.initial = behaviour
        self.behaviour = replace(behaviour)
        self.stats = Stats()
        self.released = asyncio.Event()
        self.emissions: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=EMISSION_LOG_SIZE
        )

    # --- HTTP plumbing ------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, body = request
                keep_open = await self.route(method, path, body, reader, writer)
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def route(
        self,
        method: str,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        path, _, query = path.partition("?")
        path = path.rstrip("/")
        if path in ("/_emissions", "/_control") and not self.control_enabled:
            return await _send_json(
                writer, 404, {"error": {"message": f"{path} is off (start with --control)"}}
            )
        if path == "/_emissions" and method == "GET":
            streams = list(self.emissions)
            if "clear=1" in query.split("&"):
                self.emissions.clear()
            return await _send_json(writer, 200, {"streams": streams})
        if path == "/_control":
            if method == "POST":
                try:
                    update = json.loads(body or b"{}")
                    self.control(update)
                except (ValueError, TypeError) as error:
                    return await _send_json(writer, 400, {"error": str(error)})
            return await _send_json(
                writer, 200, {"behaviour": asdict(self.behaviour), "stats": asdict(self.stats)}
            )
        if path.endswith("/models") and method == "GET":
            return await _send_json(
                writer,
                200,
                {
                    "object": "list",
                    "data": [{"id": DEMO_MODEL, "object": "model", "owned_by": "demo"}],
                },
            )
        if path.endswith("/chat/completions") and method == "POST":
            return await self.chat_completions(body, reader, writer)
        return await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    def control(self, update: Any) -> None:
        if not isinstance(update, dict):
            raise TypeError("the control body must be a JSON object")
        if update.pop("reset", False):
            self.behaviour = replace(self.initial)
            self.stats = Stats()
            self.released.set()
            self.released = asyncio.Event()
        if update.pop("release", False):
            self.released.set()
            self.released = asyncio.Event()
        known = {f.name: f.type for f in fields(Behaviour)}
        for key, value in update.items():
            if key not in known:
                raise TypeError(f"unknown behaviour key {key!r}")
            current = getattr(self.behaviour, key)
            setattr(self.behaviour, key, type(current)(value))

    # --- the API ------------------------------------------------------------

    async def chat_completions(
        self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.stats.requests += 1
        try:
            request = json.loads(body)
            messages = request["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as error:
            return await _send_json(
                writer,
                400,
                {"error": {"message": f"bad request: {error}", "type": "invalid_request_error"}},
            )
        self.stats.last_request = request
        self.stats.requests_log = [*self.stats.requests_log[-(REQUEST_LOG_SIZE - 1) :], request]
        received_at = time.time()
        b = self.behaviour
        if b.fail_status and b.fail_times != 0:
            if b.fail_times > 0:
                b.fail_times -= 1
            return await _send_json(
                writer,
                b.fail_status,
                {
                    "error": {
                        "message": f"demo failure {b.fail_status}",
                        "type": "demo_error",
                        "code": b.fail_code or None,
                    }
                },
            )
        text = b.text or demo_reply(messages)
        tokens = tokenize(text)
        max_tokens = request.get("max_tokens")
        cut = isinstance(max_tokens, int) and 0 < max_tokens < len(tokens)
        if cut:
            tokens = tokens[:max_tokens]
        model = b.model_name or request.get("model") or DEMO_MODEL
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
            **b.usage,
        }
        if not request.get("stream"):
            return await _send_json(
                writer,
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        last_user = next(
            (m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""
        )
        log: dict[str, Any] = {
            "key": last_user if isinstance(last_user, str) else "",
            "received_at": received_at,
            "tokens": [],
            "emitted_at": [],
        }
        self.emissions.append(log)
        self.stats.streams_started += 1
        self.stats.open_streams += 1
        stream = asyncio.ensure_future(
            self._stream(
                writer,
                b,
                tokens,
                model,
                completion_id,
                created,
                usage if include_usage else None,
                log,
                "length" if cut else "stop",
            )
        )
        # The client closing its end (a cancel) shows as EOF on the reader.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            done, _ = await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
            if stream in done:
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone  # let go of the reader before the next request
                return stream.result()
            stream.cancel()
            self.stats.client_disconnects += 1
            self.stats.last_disconnect_at = time.time()
            return False
        finally:
            self.stats.open_streams -= 1

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        b: Behaviour,
        tokens: list[str],
        model: str,
        completion_id: str,
        created: int,
        usage: dict[str, int] | None,
        log: dict[str, Any],
        finish_reason: str = "stop",
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        await writer.drain()

        async def event(data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()

        def chunk(
            delta: dict[str, Any], finish: str | None = None, emitted_at: float | None = None
        ) -> str:
            return _json(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    "x_emitted_at": time.time() if emitted_at is None else emitted_at,
                }
            )

        interval = 1.0 / b.tokens_per_second if b.tokens_per_second > 0 else 0.0
        await asyncio.sleep(b.first_token_delay)
        await event(chunk({"role": "assistant", "content": ""}))
        started = time.perf_counter()
        for index, token in enumerate(tokens):
            if index == b.drop_after:
                writer.transport.abort()
                return False
            if index == b.hold_after:
                self.stats.held_streams += 1
                await self.released.wait()
                self.stats.held_streams -= 1
                started = time.perf_counter() - index * interval
            if index == b.stall_after:
                await asyncio.sleep(3600)
            if index == b.error_after:
                await event(
                    json.dumps({"error": {"message": b.error_message, "type": "server_error"}})
                )
                break
            if index == b.malformed_after:
                await event("{this is not json")
                break
            # Pace against the start so the rate holds however long a write takes.
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            emitted_at = time.time()
            log["tokens"].append(token)
            log["emitted_at"].append(emitted_at)
            await event(chunk({"content": token}, emitted_at=emitted_at))
        else:
            await event(chunk({}, finish_reason))
            if usage is not None:
                payload = json.loads(chunk({}))
                payload["choices"] = []
                payload["usage"] = usage
                await event(_json(payload))
        await event("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.stats.streams_completed += 1
        return True


def _json(payload: dict[str, Any]) -> str:
    """JSON as UTF-8 text where it can be, with ``\\u`` escapes where it cannot."""
    text = json.dumps(payload, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(payload)
    return text


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, path, body


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> bool:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Status")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return True


async def serve(host: str, port: int, behaviour: Behaviour, *, control: bool = False) -> None:
    server_state = ModelServer(behaviour, control=control)
    server = await asyncio.start_server(server_state.handle, host, port)
    sockets = ", ".join(str(s.getsockname()) for s in server.sockets)
    logger.info("demo model server on %s (OpenAI-compatible, /v1/chat/completions)", sockets)
    print(f"demo model server listening on {sockets}", flush=True)  # noqa: T201
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--text", default="", help="the reply (default: a demo reply)")
    parser.add_argument("--tokens-per-second", type=float, default=20.0)
    parser.add_argument("--first-token-delay", type=float, default=0.2)
    parser.add_argument(
        "--control",
        action="store_true",
        help="serve /_control and /_emissions (tests and benchmarks only)",
    )
    args = parser.parse_args(argv)
    if args.tokens_per_second < 0 or args.first_token_delay < 0:
        parser.error("rates and delays must not be negative")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    behaviour = Behaviour(
        text=args.text,
        tokens_per_second=args.tokens_per_second,
        first_token_delay=args.first_token_delay,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, behaviour, control=args.control))


if __name__ == "__main__":
    main()
