from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client

from messages_app.models import MemberRole, Membership, Room, User
from tests import live


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def model_server_process(log_dir: Path) -> Iterator[live.ModelServer]:
    server = live.ModelServer(log_dir).start()
    yield server
    server.process.stop()


@pytest.fixture
def model_server(model_server_process: live.ModelServer) -> Iterator[live.ModelServer]:
    """The test model server, with its start-up behaviour restored around each test."""
    model_server_process.control(reset=True)
    yield model_server_process
    model_server_process.control(reset=True)


@dataclass
class Stack:
    """daphne and a Celery worker, as processes, on the test database."""

    web: live.Process
    worker: live.Process
    env: dict[str, str]
    port: int
    log_dir: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, slug: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/rooms/{slug}/"

    def start_web(self) -> None:
        self.web.start()
        assert self.web.popen is not None
        live.wait_for_port(self.port, self.web.popen)

    def start_worker(self) -> None:
        self.worker.start()
        live.wait_worker_ready(self.worker)

    def logs(self) -> str:
        return f"--- web ---\n{self.web.log()[-4000:]}\n--- worker ---\n{self.worker.log()[-4000:]}"


@pytest.fixture(scope="session")
def stack(
    django_db_setup: None,
    django_db_blocker: object,
    model_server_process: live.ModelServer,
    log_dir: Path,
) -> Iterator[Stack]:
    # The live worker takes its tasks from a queue of its own, which only the live
    # web process feeds. Tests that call services in this process enqueue to the
    # default test queue, which no worker consumes: once the stack is up (it is
    # session-scoped), a live worker must not claim the replies those tests drive.
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-stack"
    # Tasks left by an earlier, interrupted run are dropped.
    redis.Redis.from_url(settings.REDIS_URL).delete(queue, settings.CELERY_TASK_DEFAULT_QUEUE)
    env = live.stack_env(
        database_name=settings.DATABASES["default"]["NAME"],
        model_url=model_server_process.url,
        extra={"CELERY_TASK_QUEUE": queue},
    )
    with running_stack(env, log_dir) as stack:
        yield stack


@contextlib.contextmanager
def running_stack(env: dict[str, str], log_dir: Path, name: str = "") -> Iterator[Stack]:
    """daphne and a Celery worker with ``env``, started, and stopped after."""
    port = live.free_port()
    suffix = f"-{name}" if name else ""
    stack = Stack(
        web=live.daphne(env, log_dir, port, name=f"web{suffix}"),
        worker=live.celery_worker(env, log_dir, name=f"worker{suffix}"),
        env=env,
        port=port,
        log_dir=log_dir,
    )
    with live.running(stack.web, stack.worker):
        stack.start_worker()
        stack.start_web()
        yield stack


def clear_throttles() -> None:
    """Forget every throttle count of this test run (signups, posts, rooms, sockets),
    and the presence and typing entries.

    Only this run's keys (its prefix): never FLUSHDB, other runs share the Redis.
    """
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CHAT_REDIS_PREFIX
    # presence and typing (issue 14) too: a test's sockets must not linger in the next's
    for pattern in (
        f"{prefix}:cache*",
        f"{prefix}:limits*",
        f"{prefix}:presence*",
        f"{prefix}:typing*",
    ):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_throttles() -> Iterator[None]:
    """Each test starts with no throttle counted: counts live in Redis, not in a transaction."""
    clear_throttles()
    yield


@pytest.fixture
def make_user(db: None) -> object:
    def make(username: str | None = None, display_name: str = "") -> User:
        username = username or f"user-{uuid.uuid4().hex[:8]}"
        return User.objects.create_user(
            username=username, password="a-Strong-pass-9", display_name=display_name
        )

    return make


@pytest.fixture
def alice(make_user: object) -> User:
    return make_user("alice", "Alice")  # type: ignore[operator]


@pytest.fixture
def bob(make_user: object) -> User:
    return make_user("bob", "Bob")  # type: ignore[operator]


@pytest.fixture
def room(db: None, alice: User) -> Room:
    room = Room.objects.create(name="General", slug="general", created_by=alice)
    Membership.objects.create(room=room, user=alice, role=MemberRole.OWNER)
    return room


def session_cookie(user: User) -> str:
    """A ``Cookie`` header value that signs ``user`` in (a real session row)."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """End connections other threads and processes left on the test database.

    Consumers query from worker threads whose connections outlive the tests;
    without this, dropping the test database at the end fails ("being accessed").
    pytest-django creates the test database only when a selected test needs it
    (``-k`` or one file may select none): then the settings still name the real
    database, which may not exist and is not ours to touch, so nothing is done.
    """
    yield
    if connection.settings_dict["NAME"] != connection.settings_dict["TEST"]["NAME"]:
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
