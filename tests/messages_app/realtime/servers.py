"""Redis servers of the tests' own (ports 7101-7120): with a password, TLS, a cluster;
and a TCP proxy that can go silent, as a half-open connection does."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests import live


def _wait_ping(client: redis.Redis, process: live.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.popen is not None
        if process.popen.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{process.log()[-2000:]}")
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def redis_server(port: int, log_dir: Path, *args: str) -> Iterator[live.Process]:
    """A private redis-server on ``port`` with extra ``args`` (no persistence)."""
    process = live.Process(
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
            *args,
        ],
        {},
        log_dir,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wait_ready(process: live.Process, url: str, **kwargs: object) -> None:
    _wait_ping(redis.Redis.from_url(url, **kwargs), process)  # type: ignore[arg-type]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (certificate, key)."""
    cert, key = directory / "redis.crt", directory / "redis.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def redis_cluster(ports: list[int], log_dir: Path) -> Iterator[list[live.Process]]:
    """A Redis Cluster of one primary per port (no replicas), its slots spread."""
    processes = []
    with contextlib.ExitStack() as stack:
        for port in ports:
            node_dir = log_dir / f"cluster-{port}"
            node_dir.mkdir(exist_ok=True)
            for stale in node_dir.glob("*"):
                stale.unlink()
            process = stack.enter_context(
                redis_server(
                    port,
                    log_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--dir",
                    str(node_dir),
                )
            )
            wait_ready(process, f"redis://127.0.0.1:{port}/0")
            processes.append(process)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{port}" for port in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        for port in ports:
            client = redis.Redis(port=port)
            while client.cluster("info").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the cluster did not come up"
                time.sleep(0.1)
        yield processes


class Proxy:
    """A TCP proxy to Redis whose open connections can go silent (``freeze``).

    A frozen connection stays open and forwards nothing either way: what a
    dropped network does to a long-lived connection. New connections pass.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.frozen: list[asyncio.Event] = []
        self.connections = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    def freeze(self) -> None:
        for event in self.frozen:
            event.set()
        self.frozen = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if frozen.is_set():
                        continue  # swallowed: the connection is silent, not closed
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
