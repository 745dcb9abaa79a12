"""Redis servers of the tests' own (ports from ``PORT_BASE``): with a password, TLS, a
cluster; and a TCP proxy that can go silent, as a half-open connection does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests import live

# A Redis Cluster announces its nodes' ports, so these servers take fixed ones:
# 7101-7120 for a run, 40 further on for each pytest-xdist worker (gw0, gw1, ...).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
PORT_BASE = 7101 + 40 * int(_WORKER.removeprefix("gw") or 0)


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


class CuttableProxy:
    """A threaded TCP proxy to Redis for other processes (a worker) that can be cut:
    ``cut()`` closes its connections and refuses new ones until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: object, dst: object) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):  # type: ignore[attr-defined]
                dst.sendall(data)  # type: ignore[attr-defined]
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()  # type: ignore[attr-defined]

    def cut(self) -> None:
        import socket

        self.is_cut.set()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self.sockets = []

    def restore(self) -> None:
        self.is_cut.clear()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
