"""What a long reply costs Postgres: WAL bytes and time per write, before and after
the chunk rows (issue 12), and the wire bytes a viewer receives.

For replies of 2,000, 8,000 and 32,000 characters (``bench/replies.py``, cut into
tokens as the model server cuts them: token granularity, one write per token),
each write is run as the worker runs it, in a database of its own, under
``EXPLAIN (ANALYZE, WAL)``, which reports the WAL that statement wrote and its
execution time: exact per statement, whatever else the server is doing (other
sessions' WAL is not counted, nor the commit record every write has in both
designs alike).

- ``before``: the design this replaced: ``body = body || text`` on the message
  row, one UPDATE per write (the whole body rewritten each time: TOAST).
- ``after``: the services' statements: the row's small columns and a chunk row
  per write, a fold every ``GPT_FOLD_CHARS`` characters, the last fold at the end.
- the floor: the WAL of writing the reply's text once (one INSERT of the whole
  text into a row of its own).

The target (issue 12): WAL per reply ≤ 5 × the body's bytes + 400 bytes × writes.

    python -m bench.wal [--lengths 2000,8000,32000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import plots, replies
from bench.replies import long_reply, tenth
from bench.stack import ROOT, database_url, drop_database
from worker.demo_llm import tokenize

LENGTHS = (2_000, 8_000, 32_000)
TARGET_PER_BODY_BYTE = 5
TARGET_PER_WRITE = 400


def explain(cursor: Any, sql: str, params: list[Any]) -> tuple[int, float]:
    """Run ``sql`` under EXPLAIN (ANALYZE, WAL): (WAL bytes, execution ms)."""
    cursor.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + sql, params)
    (plan,) = cursor.fetchone()[0]
    return int(plan["Plan"].get("WAL Bytes", 0)), float(plan["Execution Time"])


def new_reply(room_id: int) -> tuple[int, uuid.UUID]:
    from messages_app.models import Message, Role, Status

    attempt = uuid.uuid4()
    reply = Message.objects.create(
        room_id=room_id, role=Role.ASSISTANT, status=Status.STREAMING, attempt=attempt
    )
    return reply.pk, attempt


def before(cursor: Any, room_id: int, tokens: list[str]) -> dict[str, Any]:
    from messages_app.models import Message

    table = Message._meta.db_table
    message_id, attempt = new_reply(room_id)
    sql = (
        f"UPDATE {table} SET body = body || %s, version = version + 1, updated_at = now() "  # noqa: S608
        "WHERE id = %s AND attempt = %s AND version = %s AND status = 'streaming'"
    )
    wal, times = 0, []
    for version, token in enumerate(tokens, start=1):
        written, ms = explain(cursor, sql, [token, message_id, attempt, version])
        wal += written
        times.append(ms)
    finish = f"UPDATE {table} SET status = 'done', version = version + 1 WHERE id = %s"  # noqa: S608
    written, ms = explain(cursor, finish, [message_id])
    return {"wal": wal + written, "times": times, "message_id": message_id}


def after(cursor: Any, room_id: int, tokens: list[str]) -> dict[str, Any]:
    from django.conf import settings

    from messages_app import services
    from messages_app.models import Message

    table = Message._meta.db_table
    message_id, attempt = new_reply(room_id)
    values = "(%s::bigint, %s::uuid, %s::integer, %s::text)"
    append = services.appends._APPEND_MANY_SQL.format(values=values)  # noqa: SLF001 - our own SQL
    wal, times, folds, unfolded = 0, [], 0, 0
    for version, token in enumerate(tokens, start=1):
        written, ms = explain(cursor, append, [message_id, attempt, version, token])
        unfolded += len(token)
        if unfolded >= settings.GPT_FOLD_CHARS:  # as services.appends._append_many decides
            folded, fold_ms = explain(cursor, services.appends._FOLD_SQL, [[message_id]])  # noqa: SLF001
            written, ms, unfolded, folds = written + folded, ms + fold_ms, 0, folds + 1
        wal += written
        times.append(ms)
    finish = f"UPDATE {table} SET status = 'done', version = version + 1 WHERE id = %s"  # noqa: S608
    closed, _ = explain(cursor, finish, [message_id])
    folded, _ = explain(cursor, services.appends._FOLD_SQL, [[message_id]])  # noqa: SLF001
    return {
        "wal": wal + closed + folded,
        "times": times,
        "folds": folds + 1,
        "message_id": message_id,
    }


def floor(cursor: Any, text: str) -> int:
    cursor.execute("CREATE TABLE IF NOT EXISTS bench_wal_floor (body text)")
    written, _ = explain(cursor, "INSERT INTO bench_wal_floor (body) VALUES (%s)", [text])
    return written


def wire_bytes(tokens: list[str]) -> int:
    """Bytes of the delta frames one viewer receives for the reply (one per write)."""
    from messages_app import protocol

    total, offset = 0, 0
    for version, token in enumerate(tokens, start=1):
        frame = protocol.delta_frame(message_id=1, version=version, offset=offset, text=token)
        total += len(frame.encode())
        offset += len(token)
    return total


def measure(lengths: tuple[int, ...]) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from messages_app.models import Message, Room

    room = Room.objects.create(name="WAL", slug=f"wal-{secrets.token_hex(4)}")
    figures: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fold_chars": settings.GPT_FOLD_CHARS,
        "lengths": {},
    }
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        figures["postgres"] = cursor.fetchone()[0]
        for chars in lengths:
            text = long_reply(chars)
            tokens = tokenize(text)
            body_bytes = len(text.encode())
            old, new = before(cursor, room.pk, tokens), after(cursor, room.pk, tokens)
            for design in (old, new):
                row = Message.objects.get(pk=design["message_id"])
                assert row.body == text, "the bench wrote a different text"  # noqa: S101
            target = TARGET_PER_BODY_BYTE * body_bytes + TARGET_PER_WRITE * len(tokens)
            figures["lengths"][chars] = {
                "writes": len(tokens),
                "body_bytes": body_bytes,
                "floor_wal": floor(cursor, text),
                "target_wal": target,
                "wire_bytes": wire_bytes(tokens),
                **{
                    name: {
                        "wal": design["wal"],
                        "wal_per_char": design["wal"] / chars,
                        "ms_per_write_start": tenth(design["times"], end=False),
                        "ms_per_write_end": tenth(design["times"], end=True),
                        "ms_total": sum(design["times"]),
                        "meets_target": design["wal"] <= target,
                        **({"folds": design["folds"]} if "folds" in design else {}),
                    }
                    for name, design in (("before", old), ("after", new))
                },
            }
            print(f"{chars}: {json.dumps(figures['lengths'][chars])}", flush=True)  # noqa: T201
    return figures


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        f"PostgreSQL {figures['postgres']}, GPT_FOLD_CHARS={figures['fold_chars']}, "
        f"started {figures['started']}. WAL per statement from EXPLAIN (ANALYZE, WAL).",
        "",
        "| reply | writes | design | WAL | WAL / char | target | ms/write start | "
        "ms/write end | floor WAL | wire bytes / body bytes |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for chars, f in figures["lengths"].items():
        for name in ("before", "after"):
            d = f[name]
            mark = "meets" if d["meets_target"] else "misses"
            lines.append(
                f"| {int(chars):,} | {f['writes']:,} | {name} | {d['wal'] / 1e6:.2f} MB | "
                f"{d['wal_per_char']:.0f} B | {f['target_wal'] / 1e6:.2f} MB ({mark}) | "
                f"{d['ms_per_write_start']:.3f} | {d['ms_per_write_end']:.3f} | "
                f"{f['floor_wal'] / 1e3:.1f} kB | {f['wire_bytes'] / f['body_bytes']:.1f}× |"
            )
    return "\n".join(lines) + "\n"


def plot(figures: dict[str, Any], path: Path) -> None:
    lengths = list(figures["lengths"])
    series = [
        (
            f"{name}: WAL bytes per character of the reply",
            style,
            [figures["lengths"][c][name]["wal_per_char"] for c in lengths],
        )
        for name, style in (("before", "r-o"), ("after", "g-o"))
    ]
    target = [figures["lengths"][c]["target_wal"] / int(c) for c in lengths]
    series.append(("target: 5 × body bytes + 400 bytes a write", "k:", target))
    plots.against_length(
        path,
        [int(c) for c in lengths],
        series,
        xlabel="reply length (characters), token granularity",
        ylabel="WAL bytes per character",
        title="Postgres cost of a streamed reply against its length",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG of WAL against length here")
    parser.add_argument("--from-json", type=Path, help="report and plot these figures, no run")
    args = parser.parse_args(argv)
    if args.from_json:
        figures = json.loads(args.from_json.read_text())
        print(markdown(figures))  # noqa: T201
        if args.plot:
            plot(figures, args.plot)
        return
    lengths = replies.parse_lengths(parser, args.lengths)
    url = database_url(f"bench_wal_{os.getpid()}")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    for command in (["ensure_database"], ["migrate", "--noinput"]):
        subprocess.run(  # noqa: S603 - our own command
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    os.environ.update(env)
    import django

    django.setup()
    try:
        figures = measure(lengths)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(url)
    print(markdown(figures))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.plot:
        plot(figures, args.plot)


if __name__ == "__main__":
    main()
