"""Drive a running site as a person would: log in through the admin's form, use
the admin over HTTP, watch a room through a real WebSocket."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import httpx

from tests.protocol import RoomView
from tests.sockets import Socket

_CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_NOTICE_RE = re.compile(r'<li class="(success|error|warning|info)">(.*?)</li>', re.S)


class Site:
    """An HTTP client of one running web process, with a session once logged in."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def _csrf_post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        form = self.http.get(path)
        assert form.status_code == 200, (path, form.status_code, form.text[:500])
        match = _CSRF_RE.search(form.text)
        assert match, f"no CSRF token on {path}"
        return self.http.post(
            path,
            data={**data, "csrfmiddlewaretoken": match.group(1)},
            headers={"Origin": self.base_url, "Referer": f"{self.base_url}{path}"},
        )

    def login(self, username: str, password: str) -> str:
        """Log in through /admin/login/; returns the ``Cookie`` header of the session."""
        response = self._csrf_post(
            "/admin/login/?next=/admin/", {"username": username, "password": password}
        )
        assert response.status_code == 302, response.text[:2000]
        assert response.headers["location"] == "/admin/"
        return self.cookie_header()

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())

    def create_room(self, name: str, slug: str) -> None:
        response = self._csrf_post(
            "/admin/messages_app/room/add/", {"name": name, "slug": slug, "granularity": ""}
        )
        assert response.status_code == 302, response.text[:2000]

    def admin_action(self, action: str, ids: list[int]) -> list[tuple[str, str]]:
        """Run an action of the message changelist; returns its (level, text) notices."""
        response = self._csrf_post(
            "/admin/messages_app/message/",
            {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"},
        )
        assert response.status_code == 302, response.text[:2000]
        page = self.http.get(response.headers["location"])
        return [(level, unescape(text).strip()) for level, text in _NOTICE_RE.findall(page.text)]


class RoomSocket(Socket):
    """A real WebSocket on a room (tests.sockets.Socket), with the posts these tests make."""

    async def post(self, body: str) -> None:
        await self.send({"type": "post", "body": body})

    async def reply_id(self) -> int:
        await self.until(lambda view: view.reply_ids())
        return self.view.reply_ids()[-1]


def finished(reply_id: int) -> Callable[[RoomView], bool]:
    return lambda view: view.status(reply_id) in {"done", "failed", "cancelled"}


# --- processes -------------------------------------------------------------------


def session_processes(session_id: int) -> list[str]:
    """Every live process of a session (``ps``-like lines), zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp session ...
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == session_id and fields[0] != "Z":
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {cmdline.strip()}")
    return found


def wait_for_log(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return
        if process.poll() is not None:
            raise AssertionError(
                f"exited with {process.returncode} before {text!r}:\n{log[-5000:]}"
            )
        time.sleep(0.1)
    log = path.read_text(errors="replace")
    raise AssertionError(f"no {text!r} in {timeout}s:\n{log[-5000:]}")


def end_session(process: subprocess.Popen[bytes]) -> None:
    """Last resort after a failed test: kill whatever of this session is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    for line in session_processes(process.pid):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


# --- a database of a test's own ------------------------------------------------------


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server of the test settings."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{name}"
    )


def drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    url = database_url("postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_database(name: str) -> str:
    """A new, empty database ``name`` (dropped first if a run left it); returns its URL."""
    import psycopg
    from psycopg import sql

    drop_database(name)
    url = database_url("postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


def query(url: str, sql_text: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the database at ``url`` (another process's database)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(
        url.replace("postgres://", "postgresql://", 1), row_factory=dict_row
    ) as connection:
        return connection.execute(sql_text, params).fetchall()  # type: ignore[arg-type]


def message_row(url: str, message_id: int) -> dict[str, Any]:
    (row,) = query(
        url,
        "SELECT id, role, status, body, model, error, version, reply_to_id "
        "FROM messages_app_message WHERE id = %s",
        message_id,
    )
    return row
