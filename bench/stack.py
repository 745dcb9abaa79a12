"""The real stack of one benchmark run, as processes on free ports.

Its own database (created, migrated, dropped at the end), its own Celery queue
and channel prefix, the demo model server, daphne and one Celery worker: nothing
is shared with a test run or a local ``run.sh`` on the same machine except
Postgres and Redis themselves. The process helpers are the integration tests'
(``tests/live.py``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis
from psycopg import sql

from tests import live

ROOT = live.ROOT
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3 of stat(5)); utime and stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_url(name: str) -> str:
    """``DATABASE_URL`` (or the local default) pointed at the database ``name``."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat")
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _admin_connection(url: str) -> psycopg.Connection[Any]:
    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    )


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _admin_connection(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass
class BenchStack:
    """daphne, a Celery worker (threads pool) and the model server of one run."""

    run_id: str
    log_dir: Path
    worker_concurrency: int = 120
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_database: bool = False

    def __post_init__(self) -> None:
        self.db_url = database_url(f"bench_{self.run_id}")
        self.model = live.ModelServer(self.log_dir)
        self.web_port = live.free_port()
        self.env = self._env()
        self.web = live.daphne(self.env, self.log_dir, self.web_port)
        self.worker = live.celery_worker(
            self.env,
            self.log_dir,
            extra_args=("--without-heartbeat",),
            concurrency=self.worker_concurrency,
            node=f"bench-{self.run_id}@%h",
        )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
                "DATABASE_URL": self.db_url,
                "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                "CELERY_TASK_QUEUE": f"bench-{self.run_id}-tasks",
                "CHAT_REDIS_PREFIX": f"bench-{self.run_id}-events",
                "OPENAI_BASE_URL": f"{self.model.url}/v1",
                "OPENAI_API_KEY": "bench-key",
                "OPENAI_MODEL": "bench-model",
                # As in production: no per-query bookkeeping of DEBUG.
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "GPT_MAX_OPEN_REPLIES_PER_USER": "100000",
                "GPT_MAX_REPLIES_PER_MINUTE": "100000",
                # The viewers share up to 50 users, each with many sockets open.
                "CHAT_MAX_SOCKETS_PER_USER": "10000",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def manage(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - our own command
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.manage("ensure_database")
        self.manage("migrate", "--noinput")
        self.model.start()
        self.worker.start()
        self.web.start()
        assert self.web.popen is not None
        live.wait_for_port(self.web_port, self.web.popen)
        live.wait_worker_ready(self.worker)

    def stop(self) -> None:
        for process in (self.web, self.worker, self.model.process):
            process.stop()
        self._forget_queue()
        if not self.keep_database:
            drop_database(self.db_url)

    def _forget_queue(self) -> None:
        """Remove the run's Celery queue and the bindings kombu keeps for it in Redis."""
        queue = self.env["CELERY_TASK_QUEUE"]
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            keys = [queue, *client.scan_iter(match=f"_kombu.binding*.{queue}")]
            client.delete(*keys)
        finally:
            client.close()

    @property
    def web_pid(self) -> int:
        assert self.web.popen is not None
        return self.web.popen.pid

    @property
    def worker_pid(self) -> int:
        assert self.worker.popen is not None
        return self.worker.popen.pid

    def ws_url(self, slug: str) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/rooms/{slug}/"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def emissions(self, clear: bool = True) -> list[dict[str, Any]]:
        """The model server's token log of recent streams (and empty it)."""
        url = f"{self.model.url}/_emissions" + ("?clear=1" if clear else "")
        response = httpx.get(url, timeout=30)
        response.raise_for_status()
        return response.json()["streams"]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the model server has no stream open (the previous round is over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.model.stats()["open_streams"] == 0:
                return
            time.sleep(0.05)
