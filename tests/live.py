"""Start and stop the real processes of the stack for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def python_with_env(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the project's settings-related
    variables (DJANGO_*, GPT_*, DATABASE_*) replaced by ``env``."""
    full = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GPT_", "DATABASE_"))
    }
    full.update(env)
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [PYTHON, "-c", code],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} did not listen on port {port} in {timeout}s")


class Process:
    """A child process with its output in a log file (shown when a test fails)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ModelServer:
    """The project's OpenAI-compatible test server, as a process."""

    def __init__(self, log_dir: Path, *, control: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            "model-server",
            [PYTHON, "-m", "worker.demo_llm", "--port", str(self.port)]
            + (["--control"] if control else []),
            dict(os.environ),
            log_dir,
        )

    def start(self) -> ModelServer:
        self.process.start()
        assert self.process.popen is not None
        wait_for_port(self.port, self.process.popen)
        return self

    def control(self, **update: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_control", json=update, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_control", timeout=10).json()["stats"]


def stack_env(
    *, database_name: str, model_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the web and worker processes: the test database, queue, prefix."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = dict(os.environ)
    # The browser tests allow sync ORM calls in their own process only; the
    # served app must keep Django's guard against them.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DATABASE_URL": (
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{database_name}"
            ),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_TASK_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "CHAT_REDIS_PREFIX": settings.CHAT_REDIS_PREFIX,
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": "test-model",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def celery_worker(
    env: dict[str, str],
    log_dir: Path,
    name: str = "worker",
    extra_args: tuple[str, ...] = (),
    concurrency: int = 20,
    node: str = "",
) -> Process:
    return Process(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "chatsite",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            env["CELERY_TASK_QUEUE"],
            "-n",
            node or f"{name}-{os.getpid()}@%h",
            *extra_args,
        ],
        env,
        log_dir,
    )


def redis_server(port: int, log_dir: Path) -> Process:
    """A private Redis (no persistence), for tests that stop and restart it."""
    return Process(
        f"redis-{port}",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        dict(os.environ),
        log_dir,
    )


def daphne(env: dict[str, str], log_dir: Path, port: int, name: str = "web") -> Process:
    return Process(
        name,
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
        env,
        log_dir,
    )


def wait_worker_ready(worker: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.popen is not None and worker.popen.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{worker.log()[-3000:]}")
        if " ready." in worker.log():
            return
        time.sleep(0.1)
    raise RuntimeError(f"celery worker not ready in {timeout}s:\n{worker.log()[-3000:]}")


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()
