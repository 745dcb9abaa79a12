"""``bash scripts/run.sh``, the local run command, started as a person would.

Each run gets its own ports, Celery queue and channel-layer prefix, and all of
them one database of this module's own (created empty by the first run), so
they touch nothing of the test database or another run on this machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from chatsite.celery import app as celery_app
from tests import live
from tests.deploy.compose import ROOT
from tests.deploy.live_site import (
    RoomSocket,
    Site,
    drop_database,
    end_session,
    finished,
    message_row,
    session_processes,
    wait_for_log,
)

pytestmark = pytest.mark.integration

ADMIN_NAME = "run-admin"
ADMIN_PASSWORD = "Local-secret-58-x"
READY = "[run]    chat on http://localhost:"
FOREIGN = ("DJANGO_", "OPENAI_", "GPT_", "CELERY_", "CHANNEL_", "DATABASE_", "REDIS_")
PREFIXES = ("[setup]  ", "[run]    ", "[demo]   ", "[worker] ", "[beat]   ", "[web]    ")


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.env["PORT"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for_log(self.log_path, READY, self.process, timeout=180)

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"run.sh did not stop in {timeout}s:\n{self.log()[-4000:]}"
            ) from None

    def left(self) -> list[str]:
        """Processes of the run still alive (run.sh leads its own session)."""
        return session_processes(self.process.pid)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_run"
    drop_database(name)  # run.sh creates it (ensure_database), as on a fresh machine
    yield name
    drop_database(name)


@pytest.fixture
def run_env(database: str, tmp_path: Path) -> dict[str, str]:
    from tests.deploy.live_site import database_url

    test_id = settings.CELERY_TASK_DEFAULT_QUEUE.removesuffix("-tasks")
    # One queue for the module's runs (one at a time); tasks left over are dropped.
    queue = f"{test_id}-run"
    redis.Redis.from_url(settings.REDIS_URL).delete(queue)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(
        {
            "PORT": str(live.free_port()),
            "DEMO_PORT": str(live.free_port()),
            # These tests steer the demo model (its /_control is off by default).
            "DEMO_CONTROL": "1",
            "DATABASE_URL": database_url(database),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_TASK_QUEUE": queue,
            "CHAT_REDIS_PREFIX": queue,
            "ENV_FILE": str(tmp_path / "no.env"),  # not the developer's .env
            "DJANGO_SUPERUSER_USERNAME": ADMIN_NAME,
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "WORKER_CONCURRENCY": "4",
        }
    )
    return env


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Any]:
    runs: list[Run] = []

    def start(env: dict[str, str]) -> Run:
        log_path = tmp_path / f"run-{len(runs)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603
                ["bash", "scripts/run.sh"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # run.sh leads a session: all it starts is in it
            )
        run = Run(process=process, log_path=log_path, env=env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        end_session(run.process)


def assert_stopped_cleanly(run: Run, status: int) -> None:
    assert run.wait_exit() == status, run.log()[-4000:]
    assert run.left() == [], run.left()
    log = run.log()
    assert log.rstrip().endswith("[run]    stopped"), log[-2000:]
    for port in (run.port, int(run.env["DEMO_PORT"])):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def assert_readable_log(log: str) -> None:
    lines = log.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("[setup]"))
    unprefixed = [line for line in lines[first:] if not line.startswith(PREFIXES)]
    assert unprefixed == [], unprefixed[:10]


async def ask_gpt(run: Run, site: Site, slug: str) -> tuple[RoomSocket, int]:
    await asyncio.to_thread(site.create_room, slug.title(), slug)
    room = await RoomSocket(
        f"ws://127.0.0.1:{run.port}/ws/rooms/{slug}/", site.cookie_header(), run.base_url
    ).open()
    await room.post("@gpt are you there?")
    return room, await room.reply_id()


def demo_control(run: Run, **behaviour: Any) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{run.env['DEMO_PORT']}/_control", json=behaviour, timeout=10
    )
    response.raise_for_status()
    return response.json()


async def test_run_script_answers_from_the_demo_model_and_stops_on_ctrl_c(
    run_env: dict[str, str], start_run: Any
) -> None:
    # given the run command without an OpenAI key, on an empty database
    run = start_run(run_env)
    await asyncio.to_thread(run.wait_ready)
    assert "no OPENAI_API_KEY: replies come from the local demo model" in run.log()
    site = Site(run.base_url)
    await asyncio.to_thread(site.login, ADMIN_NAME, ADMIN_PASSWORD)  # made by ensure_superuser

    # when a user asks @gpt through a socket, the reply streams in from the demo model
    room, reply_id = await ask_gpt(run, site, "demo")
    await room.until(finished(reply_id))
    row = message_row(run.env["DATABASE_URL"], reply_id)
    assert (row["status"], row["model"]) == ("done", "demo"), run.log()[-4000:]
    assert row["body"].startswith(f"Hi {ADMIN_NAME}! I am the **demo model**")
    assert room.view.body(reply_id) == row["body"]
    assert room.view.rows[reply_id]["model"] == "demo"

    # when Ctrl-C comes while another reply streams (the terminal signals the group)
    demo_control(run, tokens_per_second=15)
    await room.post("@gpt once more, slowly")
    await room.until(lambda view: len(view.reply_ids()) == 2)
    second = room.view.reply_ids()[-1]
    await room.until(lambda view: len(view.body(second)) > 10)
    os.killpg(run.process.pid, signal.SIGINT)

    # then everything stops, after the worker finished that reply
    await asyncio.to_thread(assert_stopped_cleanly, run, 130)
    row = message_row(run.env["DATABASE_URL"], second)
    assert (row["status"], row["model"]) == ("done", "demo"), run.log()[-4000:]
    assert row["body"].startswith(f"Hi {ADMIN_NAME}!")
    log = run.log()
    assert "[worker] worker: Warm shutdown" in log
    assert_readable_log(log)
    site.close()


def test_run_script_stops_on_sigterm_and_runs_again_idempotently(
    run_env: dict[str, str], start_run: Any
) -> None:
    first = start_run(run_env)
    first.wait_ready()
    first.process.send_signal(signal.SIGTERM)  # to run.sh alone, as a supervisor would
    assert_stopped_cleanly(first, 143)
    # a second run on the same database: nothing to migrate, the admin exists
    again = start_run({**run_env, "PORT": str(live.free_port())})
    again.wait_ready()
    log = again.log()
    assert "[setup]  database" in log and "exists" in log
    assert "No migrations to apply." in log
    assert f"admin account '{ADMIN_NAME}' exists; nothing changed" in log
    again.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(again, 143)


def test_run_script_runs_celery_beat_only_when_a_periodic_task_exists(
    run_env: dict[str, str], start_run: Any
) -> None:
    plain = start_run(run_env)
    plain.wait_ready()
    # the project's own settings: beat runs exactly when they schedule something
    if celery_app.conf.beat_schedule:
        wait_for_log(plain.log_path, "[beat]   ", plain.process, timeout=30)
    else:
        assert "[beat]" not in plain.log()
    plain.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(plain, 143)

    scheduled = start_run(
        {
            **run_env,
            "PORT": str(live.free_port()),
            "DJANGO_SETTINGS_MODULE": "tests.deploy.beat_settings",
        }
    )
    scheduled.wait_ready()
    wait_for_log(scheduled.log_path, "[beat]   ", scheduled.process, timeout=30)
    (beat,) = [line for line in scheduled.left() if " beat " in line]
    state = re.search(r"--schedule (\S+)/schedule", beat)
    assert state is not None
    wait_for_log(scheduled.log_path, "beat: Starting...", scheduled.process, timeout=30)
    scheduled.process.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(scheduled, 143)
    assert not Path(state.group(1)).exists()  # its schedule file is gone too
    assert_readable_log(scheduled.log())


def test_run_script_stops_everything_when_one_process_dies(
    run_env: dict[str, str], start_run: Any
) -> None:
    run = start_run(run_env)
    run.wait_ready()
    (web,) = [line for line in run.left() if "daphne" in line]
    os.kill(int(web.split()[0]), signal.SIGKILL)
    assert_stopped_cleanly(run, 1)
    assert re.search(r"\[run\] +web exited with status \d+; stopping the rest", run.log())


async def test_run_script_uses_openai_base_url_instead_of_the_demo(
    run_env: dict[str, str], start_run: Any, model_server: live.ModelServer
) -> None:
    model_server.control(text="From the configured server.", tokens_per_second=0)
    env = {
        **run_env,
        "OPENAI_BASE_URL": f"{model_server.url}/v1",
        "OPENAI_MODEL": "compatible-model",
    }
    run = start_run(env)
    await asyncio.to_thread(run.wait_ready)
    assert "[demo]" not in run.log() and "demo model" not in run.log()
    site = Site(run.base_url)
    await asyncio.to_thread(site.login, ADMIN_NAME, ADMIN_PASSWORD)
    room, reply_id = await ask_gpt(run, site, "compatible")
    await room.until(finished(reply_id))
    row = message_row(env["DATABASE_URL"], reply_id)
    assert (row["status"], row["model"], row["body"]) == (
        "done",
        "compatible-model",
        "From the configured server.",
    )
    await room.close()
    site.close()
    run.process.send_signal(signal.SIGINT)  # `kill -INT`: to run.sh alone
    await asyncio.to_thread(assert_stopped_cleanly, run, 130)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"GPT_STREAM_GRANULARITY": "paragraph"},
            "GPT_STREAM_GRANULARITY='paragraph' is not one of: token, word, sentence",
        ),
        (
            {"DJANGO_SUPERUSER_PASSWORD": ""},
            "DJANGO_SUPERUSER_PASSWORD is empty or unset",
        ),
        ({"DATABASE_URL": "mysql://localhost/chat"}, "DATABASE_URL must be a postgres:// URL"),
        ({"DEMO_CONTROL": "yes"}, "DEMO_CONTROL must be 0 or 1, not 'yes'"),
    ],
)
def test_run_script_stops_before_starting_on_bad_settings(
    run_env: dict[str, str], start_run: Any, change: dict[str, str], message: str
) -> None:
    # a fresh admin name, so that a missing password matters
    run = start_run({**run_env, "DJANGO_SUPERUSER_USERNAME": "someone-new", **change})
    assert run.wait_exit() not in (0, None)
    log = run.log()
    assert message in log
    assert "[run]    chat on" not in log and "[web]" not in log
    assert run.left() == []


def test_run_script_refuses_a_port_in_use(run_env: dict[str, str], start_run: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(run_env["PORT"])))
        taken.listen()
        run = start_run(run_env)
        assert run.wait_exit() == 1
    assert f"port {run_env['PORT']} is in use" in run.log()
    assert "[web]" not in run.log()
    assert run.left() == []


def test_run_script_reads_dot_env_without_overriding_the_environment(
    run_env: dict[str, str], start_run: Any, tmp_path: Path
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "# a comment\nGPT_STREAM_GRANULARITY=paragraph  # read from the file: a bad value\n"
    )
    run = start_run({**run_env, "ENV_FILE": str(env_file)})
    assert run.wait_exit() != 0
    assert "GPT_STREAM_GRANULARITY='paragraph'" in run.log()
    env_file.write_text("this is not a setting\n")
    run = start_run({**run_env, "ENV_FILE": str(env_file)})
    assert run.wait_exit() != 0
    assert f"{env_file}:1: expected NAME=value, got: this is not a setting" in run.log()
    assert run.left() == []


def test_envfile_loader_reads_compose_style_files(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        "\n"
        "PLAIN=value\n"
        "EMPTY=\n"
        'DOUBLE="two words"  # note\n'
        "SINGLE='$HOME stays'\n"
        "INLINE=abc # trailing comment\n"
        "HASH=abc#not-a-comment\n"
        "export EXPORTED=yes\r\n"
        "PRESET=from-file\n"
        "  INDENTED=ok\n"
        "LAST=no-newline"
    )
    names = "PLAIN EMPTY DOUBLE SINGLE INLINE HASH EXPORTED PRESET INDENTED LAST".split()
    script = f"source scripts/envfile.sh && load_env_file {env_file} && " + " && ".join(
        f'printf "%s=[%s]\\n" {n} "${n}"' for n in names
    )
    result = subprocess.run(  # noqa: S603
        ["bash", "-c", script],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PRESET": "from-env"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert result.stdout.splitlines() == [
        "PLAIN=[value]",
        "EMPTY=[]",
        "DOUBLE=[two words]",
        "SINGLE=[$HOME stays]",
        "INLINE=[abc]",
        "HASH=[abc#not-a-comment]",
        "EXPORTED=[yes]",
        "PRESET=[from-env]",
        "INDENTED=[ok]",
        "LAST=[no-newline]",
    ]


@pytest.mark.parametrize("line", ["NAME value", "1ABC=x", "A-B=x", "=x"])
def test_envfile_loader_refuses_a_line_it_cannot_read(tmp_path: Path, line: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"GOOD=1\n{line}\n")
    result = subprocess.run(  # noqa: S603
        ["bash", "-c", f"source scripts/envfile.sh && load_env_file {env_file}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"{env_file}:2: expected NAME=value, got: {line}"


def test_readme_starts_with_the_run_command_then_docker() -> None:
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", readme, re.M)
    # the quick start first; Docker right after it (or after one other section,
    # such as a short tour of the chat, when another issue adds one there)
    assert sections[0] == "Quick start"
    assert "Docker" in sections[1:3]
    quick_start = readme[readme.index("## Quick start") :].split("\n## ")[0]
    assert "bash scripts/run.sh" in quick_start
    docker = readme[readme.index("## Docker") :].split("\n## ")[0]
    for needed in (
        "docker compose up",
        ".env.example",
        "--scale worker=3 --scale web=2",
        "/admin/",
    ):
        assert needed in docker
