"""Memory of one web process: resident memory per idle socket, and under slow sockets.

    python -m bench.memory                       # 2,000 idle sockets, then 50 slow ones
    python -m bench.memory --idle 500 --slow 0   # quicker

- Idle: one daphne process of a fresh stack, RSS (``VmRSS``) after one warm-up
  socket, then after ``--idle`` more sockets of one room have each received their
  snapshot; the difference per socket is the figure docs/benchmarks.md gives.
- Slow (issue 10 point 3): ``--slow`` sockets that never read while four long
  token-granularity replies stream into their room, with the
  ``CHAT_SOCKET_BUFFER_BYTES`` of tests/integration/test_slow_sockets.py
  (``--buffer``, 16 KiB: the default 1 MiB plus the kernel's share would need
  replies long enough to make Postgres the test's bottleneck); the peak RSS
  (``VmHWM``) of the web process, and how many sockets it closed as too slow.
  README states the bound that test checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import websockets

from bench.stack import BenchStack


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def session_cookie(user: Any) -> str:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


async def open_sockets(url: str, headers: dict[str, str], count: int) -> list[Any]:
    sockets: list[Any] = []
    # In batches of 20: daphne closes a handshake its app has not accepted within
    # 5 s, and each connect reads the session, the room and a snapshot.
    for start in range(0, count, 20):
        batch = [
            websockets.connect(url, additional_headers=headers, ping_interval=None)
            for _ in range(min(20, count - start))
        ]
        opened = await asyncio.gather(*batch)
        for ws in opened:
            await ws.recv()  # the snapshot
        sockets += opened
    return sockets


async def slow_socket(url: str, headers: dict[str, str]) -> Any:
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    host, port = url.split("//")[1].split("/")[0].split(":")
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    ws = await websockets.connect(
        url, sock=raw, additional_headers=headers, max_queue=1, ping_interval=None
    )
    ws.transport.pause_reading()
    return ws


async def measure(stack: BenchStack, idle: int, slow: int, tokens: int) -> dict[str, Any]:
    from asgiref.sync import sync_to_async

    from messages_app import services
    from messages_app.models import Room, User

    def setup() -> tuple[Any, str]:
        user = User.objects.create(username="mem-user", display_name="Mem")
        room = Room.objects.create(name="Memory", slug="memory", granularity="token")
        services.message_post(room=room, author=user, body="hello")
        return room, session_cookie(user)

    room, cookie = await sync_to_async(setup)()
    url = stack.ws_url(room.slug)
    headers = {"Cookie": cookie, "Origin": stack.origin}
    figures: dict[str, Any] = {}
    warm = await open_sockets(url, headers, 1)
    await asyncio.sleep(1)
    before = status_kb(stack.web_pid, "VmRSS")
    sockets = await open_sockets(url, headers, idle)
    await asyncio.sleep(2)
    after = status_kb(stack.web_pid, "VmRSS")
    figures["idle"] = {
        "sockets": idle,
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "kb_per_socket": round((after - before) / max(idle, 1), 1),
    }
    for ws in [*warm, *sockets]:
        await ws.close()
    if slow:
        stack.model.control(text=" a" * tokens, tokens_per_second=500, first_token_delay=0)
        slow_sockets = [await slow_socket(url, headers) for _ in range(slow)]
        reader = (await open_sockets(url, headers, 1))[0]
        for n in range(4):
            await reader.send(json.dumps({"type": "post", "body": f"@gpt reply {n}"}))
        done: set[int] = set()
        async with asyncio.timeout(600):
            while len(done) < 4:
                frame = json.loads(await reader.recv())
                if frame["type"] == "message":
                    message = frame["message"]
                    if message["role"] == "assistant" and message["status"] == "done":
                        done.add(message["id"])
        log = stack.web.log()
        figures["slow"] = {
            "sockets": slow,
            "replies": 4,
            "tokens_per_reply": tokens,
            "closed_as_too_slow": log.count("as too slow"),
            "peak_rss_mb": round(status_kb(stack.web_pid, "VmHWM") / 1024, 1),
        }
        for ws in slow_sockets:
            ws.transport.abort()
        await reader.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=2000, help="idle sockets to open")
    parser.add_argument("--slow", type=int, default=50, help="sockets that never read")
    parser.add_argument("--tokens", type=int, default=3000, help="tokens per slow-round reply")
    parser.add_argument(
        "--buffer", type=int, default=16384, help="CHAT_SOCKET_BUFFER_BYTES (as the test)"
    )
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    stack = BenchStack(
        run_id=f"mem{os.getpid()}",
        log_dir=log_dir,
        extra_env={"CHAT_SOCKET_BUFFER_BYTES": str(args.buffer)},
    )
    stack.start()
    try:
        os.environ.update(stack.env)
        import django

        django.setup()
        figures = asyncio.run(measure(stack, args.idle, args.slow, args.tokens))
    finally:
        stack.stop()
    text = json.dumps(figures, indent=2)
    print(text)  # noqa: T201 - the command's output
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
