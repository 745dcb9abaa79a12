"""The services of docker-compose.yml, run here as the image would run them.

No Docker engine runs here, so each app service's command is taken from the
compose file (and the static-file step from the Dockerfile) and started as a
process with the service's environment. Only what the compose network provides
is mapped to this machine: the host names postgres/redis/demo-model become the
a database of this test's own (which, like the postgres service's, starts
empty), the local Redis and a free port, and the listening address
0.0.0.0 becomes 127.0.0.1. Then a person's path through the product is
followed: log in with the account the migrate service created, open a room,
ask @gpt, and use the admin's actions on a live reply.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from tests import live
from tests.deploy.compose import (
    ROOT,
    app_services,
    as_argv,
    env_of,
    load_compose,
    parse_dockerfile,
    shell_commands,
)
from tests.deploy.live_site import (
    RoomSocket,
    Site,
    create_database,
    drop_database,
    finished,
    message_row,
    query,
    wait_for_log,
)

pytestmark = pytest.mark.integration

ADMIN_NAME = "ops-admin"
ADMIN_PASSWORD = "Compose-admin-pass-7"
BIN = str(Path(sys.executable).parent)
# Variables of this test process that must not leak into the services.
FOREIGN = ("DJANGO_", "OPENAI_", "GPT_", "CELERY_", "CHANNEL_", "DATABASE_", "REDIS_")


@dataclass
class ComposeRun:
    env: dict[str, str]  # the app services' environment, mapped to this machine
    commands: dict[str, list[str]]  # service -> argv, mapped to this machine
    healthchecks: dict[str, list[str]]  # service -> its healthcheck's argv, mapped
    processes: dict[str, live.Process]
    web_port: int
    demo_port: int
    database_url: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def ws_url(self, slug: str) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/rooms/{slug}/"

    def demo(self, **behaviour: Any) -> dict[str, Any]:
        response = httpx.post(
            f"http://127.0.0.1:{self.demo_port}/_control", json=behaviour, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def migrate(self) -> subprocess.CompletedProcess[str]:
        """Run the migrate service's command once more (compose runs it on every up)."""
        return subprocess.run(  # noqa: S603 - the compose file's own command
            self.commands["migrate"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def probe(self, service: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """Run the service's healthcheck as Docker would, inside its container."""
        return subprocess.run(  # noqa: S603 - the compose file's own command
            [*self.healthchecks[service], *extra],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{process.log()[-3000:]}" for name, process in self.processes.items()
        )


def localize(argv: list[str], ports: dict[str, int], tmp: Path) -> list[str]:
    """A container's command as it runs here: on loopback, its ports mapped to free ones,
    its /tmp (each container's own) to a folder of this test's."""
    mapped = []
    for word in argv:
        if word == "0.0.0.0":  # noqa: S104 - what the compose file says, replaced
            word = "127.0.0.1"
        elif word in ports:
            word = str(ports[word])
        elif word.startswith("/tmp/"):  # noqa: S108 - the container's path, replaced
            word = str(tmp / word.removeprefix("/tmp/"))
        else:
            for port, here in ports.items():
                word = word.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{here}/")
        mapped.append(word)
    return mapped


@pytest.fixture(scope="module")
def compose_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRun]:
    compose = load_compose(
        {"DJANGO_SUPERUSER_USERNAME": ADMIN_NAME, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    )
    services = app_services(compose)
    dockerfile = parse_dockerfile()
    web_port, demo_port = live.free_port(), live.free_port()
    ports = {"8000": web_port, "8001": demo_port}
    log_dir = tmp_path_factory.mktemp("compose-logs")
    static_root = tmp_path_factory.mktemp("staticfiles")

    database = f"{settings.DATABASES['default']['TEST']['NAME']}_compose"
    database_url = create_database(database)
    environment = services["web"]["environment"]
    assert all(services[name]["environment"] == environment for name in services)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update({k: v for k, v in env_of(dockerfile.final).items() if k != "PATH"})
    env["PATH"] = f"{BIN}:{os.environ['PATH']}"  # the image's PATH=/opt/venv/bin:$PATH
    env.update(environment)
    env.update(
        {
            # what .env would hold
            "DJANGO_SUPERUSER_USERNAME": ADMIN_NAME,
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            # the compose network, on this machine
            "DATABASE_URL": database_url,
            "REDIS_URL": settings.REDIS_URL,
            "GPT_DEMO_BASE_URL": environment["GPT_DEMO_BASE_URL"].replace(
                "demo-model:8001", f"127.0.0.1:{demo_port}"
            ),
            # the image's /app/staticfiles
            "DJANGO_STATIC_ROOT": str(static_root),
            # apart from other test runs on this machine
            "CELERY_TASK_QUEUE": f"{settings.CELERY_TASK_DEFAULT_QUEUE}-compose",
            "CHAT_REDIS_PREFIX": f"{settings.CHAT_REDIS_PREFIX}-c",
        }
    )
    assert env["DJANGO_DEBUG"] == "false"
    redis.Redis.from_url(settings.REDIS_URL).delete(env["CELERY_TASK_QUEUE"])

    # The image build's static step, as the Dockerfile writes it.
    (collect,) = [
        (assignments, argv)
        for instruction in dockerfile.final.all("RUN")
        for assignments, argv in shell_commands(instruction.arguments)
        if "collectstatic" in argv
    ]
    subprocess.run(  # noqa: S603
        collect[1], cwd=ROOT, env={**env, **collect[0]}, check=True, timeout=120
    )

    container_tmp = tmp_path_factory.mktemp("container-tmp")
    commands = {
        name: localize(as_argv(service.get("command", [])), ports, container_tmp)
        for name, service in services.items()
    }
    healthchecks = {
        name: localize(as_argv(service["healthcheck"]["test"])[1:], ports, container_tmp)
        for name, service in services.items()
        if "healthcheck" in service
    }
    # The compose file keeps the demo model's control endpoint off; this test
    # steers the model (a held stream, a failure), as only tests may.
    assert "--control" not in commands["demo-model"]
    commands["demo-model"].append("--control")
    run = ComposeRun(
        env=env,
        commands=commands,
        healthchecks=healthchecks,
        processes={},
        web_port=web_port,
        demo_port=demo_port,
        database_url=database_url,
    )
    migrated = run.migrate()
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applying messages_app.0001_initial... OK" in migrated.stdout
    assert f"created the admin account '{ADMIN_NAME}'" in migrated.stdout

    # Every long-running app service (all but the one-shot migrate), each
    # waited for as its kind becomes ready.
    run.processes = {
        name: live.Process(name, commands[name], env, log_dir)
        for name in services
        if name != "migrate"
    }
    assert {"demo-model", "worker", "web"} <= set(run.processes)
    with live.running(*run.processes.values()):
        for name, process in run.processes.items():
            process.start()
            assert process.popen is not None
            if name == "web":
                live.wait_for_port(web_port, process.popen)
            elif name == "demo-model":
                live.wait_for_port(demo_port, process.popen)
            elif name == "worker":
                live.wait_worker_ready(process)
            elif name == "beat":
                wait_for_log(process.log_path, "beat: Starting...", process.popen, 60)
            else:
                raise AssertionError(f"how does service {name!r} say it is ready?")
        yield run
    drop_database(database)


@pytest.fixture
def admin_site(compose_run: ComposeRun) -> Iterator[Site]:
    compose_run.demo(reset=True)
    site = Site(compose_run.base_url)
    site.login(ADMIN_NAME, ADMIN_PASSWORD)
    yield site
    site.close()
    compose_run.demo(reset=True)


def test_compose_migrate_service_is_idempotent(compose_run: ComposeRun) -> None:
    first = compose_run.migrate()
    again = compose_run.migrate()
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "No migrations to apply." in again.stdout
    assert f"admin account '{ADMIN_NAME}' exists; nothing changed" in again.stdout
    users = query(compose_run.database_url, "SELECT * FROM messages_app_user")
    assert [(u["username"], u["is_superuser"], u["is_staff"]) for u in users] == [
        (ADMIN_NAME, True, True)
    ]


def test_compose_migrate_service_fails_on_a_bad_admin_password(
    compose_run: ComposeRun,
) -> None:
    bad = {
        **compose_run.env,
        "DJANGO_SUPERUSER_USERNAME": "second",
        "DJANGO_SUPERUSER_PASSWORD": "",
    }
    result = subprocess.run(  # noqa: S603
        compose_run.commands["migrate"],
        cwd=ROOT,
        env=bad,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # web and worker wait for service_completed_successfully: they would not start
    assert result.returncode != 0
    assert "DJANGO_SUPERUSER_PASSWORD is empty or unset" in result.stderr
    assert not query(
        compose_run.database_url, "SELECT 1 FROM messages_app_user WHERE username = 'second'"
    )


def test_compose_healthchecks_pass_while_every_service_runs(compose_run: ComposeRun) -> None:
    assert set(compose_run.healthchecks) == {"web", "worker", "beat", "demo-model"}
    # Inside its container the web probe's default URL names port 8000, the port of
    # the web command; here that port is mapped to the test's own.
    extra = {"web": ["--url", f"{compose_run.base_url}/healthz"]}
    for service in compose_run.healthchecks:
        result = compose_run.probe(service, *extra.get(service, []))
        assert result.returncode == 0, f"{service}: {result.stderr}\n{compose_run.logs()}"
        assert result.stdout.strip() == "healthy"


def test_compose_healthchecks_fail_with_the_reason(compose_run: ComposeRun) -> None:
    closed = live.free_port()
    cases = {
        "web": ["--url", f"http://127.0.0.1:{closed}/healthz"],
        "worker": ["--node", "celery@no-such-container", "--timeout", "1"],
        "beat": ["--pidfile", str(Path(compose_run.env["DJANGO_STATIC_ROOT"]) / "none.pid")],
    }
    for service, extra in cases.items():
        result = compose_run.probe(service, *extra)
        assert result.returncode == 1, service
        assert result.stderr.startswith("unhealthy: "), result.stderr


def test_compose_web_serves_static_files_through_whitenoise(compose_run: ComposeRun) -> None:
    with httpx.Client(base_url=compose_run.base_url, timeout=30) as http:
        page = http.get("/admin/login/")
        assert page.status_code == 200
        # DEBUG is off: the page names the hashed file collected into the image
        match = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
        assert match, page.text[:2000]
        css = http.get(match.group(1), headers={"Accept-Encoding": "gzip"})
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert css.headers["content-encoding"] == "gzip"
        assert "immutable" in css.headers["cache-control"]
        assert "max-age=315360000" in css.headers["cache-control"]
        assert "body" in css.text
        assert http.get("/static/admin/css/no-such-file.css").status_code == 404


async def test_compose_services_answer_from_the_demo_model_without_a_key(
    compose_run: ComposeRun, admin_site: Site
) -> None:
    assert "OPENAI_API_KEY" not in compose_run.env and "OPENAI_BASE_URL" not in compose_run.env
    compose_run.demo(tokens_per_second=200)
    await sync_to_async(admin_site.create_room)("Compose", "compose")
    socket = await RoomSocket(
        compose_run.ws_url("compose"), admin_site.cookie_header(), compose_run.base_url
    ).open()
    await socket.post("@gpt hello from compose")
    reply_id = await socket.reply_id()
    await socket.until(finished(reply_id))
    row = message_row(compose_run.database_url, reply_id)
    assert row["status"] == "done", compose_run.logs()
    assert row["model"] == "demo"
    assert row["body"].startswith(f"Hi {ADMIN_NAME}! I am the **demo model**")
    assert socket.view.body(reply_id) == row["body"]
    assert socket.view.rows[reply_id]["model"] == "demo"
    await socket.close()


async def test_compose_admin_actions_cancel_and_retry_a_live_reply(
    compose_run: ComposeRun, admin_site: Site
) -> None:
    # the demo model pauses after 4 tokens, so the reply is streaming for sure
    compose_run.demo(tokens_per_second=200, first_token_delay=0, hold_after=4)
    await sync_to_async(admin_site.create_room)("Actions", "actions")
    url, cookie = compose_run.ws_url("actions"), admin_site.cookie_header()
    asker = await RoomSocket(url, cookie, compose_run.base_url).open()
    watcher = await RoomSocket(url, cookie, compose_run.base_url).open()
    await asker.post("@gpt tell me a long story")
    reply_id = await asker.reply_id()
    await asker.until(lambda view: view.body(reply_id))
    while compose_run.demo()["stats"]["held_streams"] != 1:
        await asyncio.sleep(0.05)

    # when an operator cancels it in the admin
    notices = await sync_to_async(admin_site.admin_action)("cancel_streaming_replies", [reply_id])
    assert notices == [("success", f"Cancelled 1: #{reply_id}.")]

    # then every socket sees it cancelled, and the row keeps the text so far
    for socket in (asker, watcher):
        await socket.until(finished(reply_id), limit=10)
        assert socket.view.status(reply_id) == "cancelled"
    row = message_row(compose_run.database_url, reply_id)
    partial = row["body"]
    assert row["status"] == "cancelled" and partial.startswith("Hi ")
    assert asker.view.body(reply_id) == watcher.view.body(reply_id) == partial
    # and the worker, once the model goes on, writes nothing more
    compose_run.demo(release=True)
    for _ in range(100):
        if compose_run.demo()["stats"]["open_streams"] == 0:
            break
        await asyncio.sleep(0.1)
    assert message_row(compose_run.database_url, reply_id)["body"] == partial

    # when the operator retries it, it streams again from the start, to the end
    compose_run.demo(reset=True)
    compose_run.demo(tokens_per_second=200)
    notices = await sync_to_async(admin_site.admin_action)("retry_failed_replies", [reply_id])
    assert notices == [("success", f"Queued again 1: #{reply_id}.")]
    await watcher.until(lambda view: view.status(reply_id) == "done", limit=60)
    row = message_row(compose_run.database_url, reply_id)
    assert (row["status"], row["model"]) == ("done", "demo"), compose_run.logs()
    assert watcher.view.body(reply_id) == row["body"] != partial
    question = row["reply_to_id"]
    # wrong rows are refused row by row, and nothing else changes
    notices = await sync_to_async(admin_site.admin_action)(
        "cancel_streaming_replies", [reply_id, question]
    )
    assert sorted(notices) == [
        ("error", f"#{question}: There is no reply {question} in this room."),
        ("error", f"#{reply_id}: Reply {reply_id} is already done."),
    ]
    for socket in (asker, watcher):
        await socket.close()
