"""The direct-relay floor: one asyncio process, the openai SDK's stream relayed
straight to the room's sockets with ``websockets.broadcast``. No database, no
Redis, no Celery, no channel layer.

It speaks the room protocol (a snapshot on connect, the same ``message`` and
``delta`` frames as the app, flushed by the same chunker) so that the viewers
measure it exactly as they measure the app. Driven by the coordinator over a
pipe: ``stream`` starts one reply per room at once and answers when all are done.

This is the benchmark's own relay, deliberately independent of the app (it
imports ``openai`` itself; in the app only ``worker/llm.py`` does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import openai
import websockets
from websockets.asyncio.server import ServerConnection, serve

from worker.chunker import Chunker


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def row(
    message_id: int, room: str, *, role: str, body: str, status: str, version: int, **extra: Any
) -> dict[str, Any]:
    """A row shaped like ``selectors.message_payload``, so frames weigh the same."""
    now = datetime.now(UTC).isoformat()
    payload = {
        "id": message_id,
        "room": room,
        "author": "Viewer" if role == "user" else None,
        "role": role,
        "body": body,
        "status": status,
        "version": version,
        "reply_to": extra.get("reply_to"),
        "client_id": None,
        "model": "bench-model" if role == "assistant" else "",
        "error": "",
        "usage": {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        "created_at": now,
        "updated_at": now,
        "finished_at": now if status == "done" else None,
    }
    return {"type": "message", "message": payload}


class Floor:
    def __init__(self, model_url: str) -> None:
        self.rooms: dict[str, set[ServerConnection]] = defaultdict(set)
        self.client = openai.AsyncOpenAI(base_url=model_url, api_key="bench", max_retries=0)
        self.next_id = 1

    async def handler(self, ws: ServerConnection) -> None:
        room = ws.request.path.strip("/").split("/")[-1] if ws.request else ""
        self.rooms[room].add(ws)
        try:
            await ws.send(dumps({"type": "snapshot", "messages": []}))
            await ws.wait_closed()
        finally:
            self.rooms[room].discard(ws)

    def broadcast(self, room: str, payload: dict[str, Any]) -> None:
        websockets.broadcast(self.rooms[room], dumps(payload))

    async def reply(self, room: str, body: str, granularity: str) -> dict[str, Any]:
        """Stream one reply into ``room``: user message, placeholder, deltas, done."""
        user_id, reply_id = self.next_id, self.next_id + 1
        self.next_id += 2
        started = time.time()
        self.broadcast(room, row(user_id, room, role="user", body=body, status="done", version=1))
        self.broadcast(
            room,
            row(reply_id, room, role="assistant", body="", status="pending", version=1),
        )
        stream = await self.client.chat.completions.create(
            model="bench-model",
            messages=[{"role": "user", "content": body}],
            stream=True,
            stream_options={"include_usage": True},
        )
        version = 2
        self.broadcast(
            room, row(reply_id, room, role="assistant", body="", status="streaming", version=2)
        )
        chunker = Chunker(granularity)
        text = ""

        def flush(piece: str) -> None:
            nonlocal version, text
            version += 1
            self.broadcast(
                room,
                {
                    "type": "delta",
                    "id": reply_id,
                    "version": version,
                    "offset": len(text),
                    "text": piece,
                },
            )
            text += piece

        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                for piece in chunker.feed(chunk.choices[0].delta.content):
                    flush(piece)
        rest = chunker.finish()
        if rest:
            flush(rest)
        version += 1
        self.broadcast(
            room,
            row(reply_id, room, role="assistant", body=text, status="done", version=version),
        )
        return {"room": room, "reply_id": reply_id, "body": text, "started": started}

    async def serve(self, conn: Connection, port: int, compression: bool) -> None:
        loop = asyncio.get_running_loop()
        async with serve(
            self.handler,
            "127.0.0.1",
            port,
            compression="deflate" if compression else None,
            ping_interval=None,
            max_size=None,
        ):
            conn.send({"ready": True})
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command["cmd"] == "exit":
                    conn.send({"ok": True})
                    return
                if command["cmd"] == "stream":
                    replies = await asyncio.gather(
                        *(
                            self.reply(room, body, command["granularity"])
                            for room, body in command["rooms"].items()
                        )
                    )
                    conn.send({"replies": replies})
                else:
                    conn.send({"error": f"unknown command {command['cmd']!r}"})


def main(conn: Connection, port: int, model_url: str, compression: bool = False) -> None:
    """The entry point of the floor process (``compression``: accept permessage-deflate)."""
    asyncio.run(Floor(model_url).serve(conn, port, compression))
