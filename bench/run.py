"""Benchmark the streaming path against a direct relay, in one run.

    python -m bench.run --quick          # under a minute: delivery and rough figures
    python -m bench.run                  # every scenario; writes docs/benchmarks.md

For each scenario (streams × viewers per room) and granularity, one round on the
direct-relay floor (``bench.floor``) and one on the real stack (``bench.stack``:
daphne, a Celery worker, Postgres, Redis, the demo model server), each watched by
the same viewer processes (``bench.viewers``). See README.md, "Benchmarks".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import floor as floor_module
from bench import metrics
from bench import viewers as viewers_module
from bench.stack import ROOT, BenchStack, cpu_seconds
from tests import live

GRANULARITIES = ("token", "word", "sentence")

# The reply the model streams: prose with sentences, an abbreviation, a list,
# accents and emoji (offsets count code points), cut to the scenario's length.
REPLY_TEXT = (
    "Sure, here is how the plan comes together. First we gather everyone in the "
    "main room at noon, then we split into three groups of four. Each group takes "
    "one topic: the budget, the schedule, and the venue. Dr. Okafor leads the "
    "budget talk, e.g. costs, quotes and the reserve. The schedule group drafts a "
    "timeline with clear owners.\n"
    "- Budget: a draft by Friday, reviewed on Monday.\n"
    "- Schedule: milestones every two weeks, with slack before launch.\n"
    "- Venue: two options, one café near the station 🚉 and one hall downtown.\n"
    "After lunch we meet again and merge the three drafts into one document. "
    "Questions are welcome at any time! Does anyone see a problem with the order? "
    "If the budget comes in high, we trim the venue first, then the catering. "
    "Naïve estimates tend to run short, so we keep a margin of ten percent. "
    "Finally, we agree on who writes the summary and who sends it to the team. "
    "That should cover it; tell me if I missed something important. "
)


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    viewers: int  # per room
    granularities: tuple[str, ...] = GRANULARITIES


FULL = (
    Scenario("1×1", 1, 1),
    Scenario("3×50", 3, 50),
    Scenario("10×50", 10, 50),
    Scenario("100 streams", 100, 1, ("token",)),
)
QUICK = (Scenario("1×1", 1, 1), Scenario("3×10", 3, 10))


def slug(name: str) -> str:
    """A scenario's name as ``--scenarios`` takes it: ``10×50`` → ``10x50``."""
    return name.replace("×", "x").replace(" ", "-")


def reply_text(tokens: int) -> str:
    from worker.demo_llm import tokenize

    pieces = tokenize(REPLY_TEXT * (tokens // len(tokenize(REPLY_TEXT)) + 1))
    return "".join(pieces[:tokens]).rstrip() + "."


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    top = subprocess.run(
        ["ps", "aux", "--sort=-%cpu"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:8]
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
        "top": [line[:160] for line in top],
    }


class CpuMeter:
    """Busy share of the whole machine (all cores) between two readings of /proc/stat."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def busy(self) -> float:
        total, idle = self._read()
        dt = total - self.start[0]
        return 1 - (idle - self.start[1]) / dt if dt else 0.0


def ask(conn: Connection, command: dict[str, Any]) -> Any:
    conn.send(command)
    reply = conn.recv()
    if isinstance(reply, dict) and reply.get("error"):
        raise RuntimeError(reply["error"])
    return reply


@dataclass
class AppRooms:
    rooms: list[Any]
    asker: Any
    sockets: int


@dataclass
class FloorRooms:
    keys: list[str]
    sockets: int


class CommitProbe:
    """Postgres commit latency, sampled every 20 ms while a round runs (its own table).

    Every append waits for its commit (WAL flush) before it is shown: when the
    disk is slow (other processes writing), the app's tail follows this one.
    """

    def __init__(self, db_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(db_url, autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id int PRIMARY KEY, n int)")
        self.conn.execute("INSERT INTO bench_probe VALUES (1, 0) ON CONFLICT DO NOTHING")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            began = time.perf_counter()
            self.conn.execute("UPDATE bench_probe SET n = n + 1 WHERE id = 1")
            self.samples.append(time.perf_counter() - began)


class Meter:
    """CPU seconds of the measured processes and the machine, and the commit probe."""

    def __init__(self, pids: dict[str, int], viewer_pids: list[int], probe: CommitProbe) -> None:
        self.pids, self.viewer_pids, self.probe = pids, viewer_pids, probe

    def __enter__(self) -> Meter:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.viewers_before = sum(cpu_seconds(pid) for pid in self.viewer_pids)
        self.machine = CpuMeter()
        self.load = os.getloadavg()[0]
        self.probe.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.commits = self.probe.stop()
        self.busy = self.machine.busy()
        self.cpu = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        self.cpu["viewers"] = (
            sum(cpu_seconds(pid) for pid in self.viewer_pids) - self.viewers_before
        )


@dataclass
class RoundData:
    replies: list[metrics.Reply]
    sockets: list[dict[str, Any]]
    emissions: dict[str, metrics.Emission]
    meter: Meter


def pooled_figures(rounds: list[RoundData], sockets_per_round: int) -> dict[str, Any]:
    """The figures of alternating rounds of one path, their samples pooled."""
    cpu: dict[str, float] = {}
    for data in rounds:
        for name, seconds in data.meter.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + seconds / len(rounds)
    figures = metrics.round_figures(
        replies=[reply for data in rounds for reply in data.replies],
        sockets=[sock for data in rounds for sock in data.sockets],
        emissions={k: v for data in rounds for k, v in data.emissions.items()},
        cpu=cpu,
        expected_sockets=sockets_per_round * len(rounds),
    )
    figures.update(
        rounds=len(rounds),
        load=sum(data.meter.load for data in rounds) / len(rounds),
        machine_busy=sum(data.meter.busy for data in rounds) / len(rounds),
        db_commit_ms=metrics.summary_ms([t for data in rounds for t in data.meter.commits]),
    )
    return figures


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = args.run_id or f"b{os.getpid()}"
        self.log_dir = Path(args.log_dir or ROOT / "bench" / "results" / f"logs-{self.run_id}")
        self.stack = BenchStack(
            run_id=self.run_id,
            log_dir=self.log_dir,
            worker_concurrency=args.worker_concurrency,
            keep_database=args.keep_db,
            extra_env=dict(pair.split("=", 1) for pair in args.env),
        )
        self.ctx = multiprocessing.get_context("spawn")
        self.viewer_conns: list[Connection] = []
        self.children: list[Any] = []
        self.floor_conn: Connection | None = None
        self.floor_port = live.free_port()
        self.floor_pid = 0
        self.round_no = 0
        self.warming = False

    # --- processes ------------------------------------------------------------

    def start(self) -> None:
        self.stack.start()
        os.environ.update(self.stack.env)
        import django

        django.setup()
        for _ in range(self.args.viewer_procs):
            parent, child = self.ctx.Pipe()
            process = self.ctx.Process(target=viewers_module.main, args=(child,), daemon=True)
            process.start()
            self.viewer_conns.append(parent)
            self.children.append(process)
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=floor_module.main,
            args=(child, self.floor_port, f"{self.stack.model.url}/v1", self.args.compression),
            daemon=True,
        )
        process.start()
        self.children.append(process)
        self.floor_conn = parent
        self.floor_pid = process.pid or 0
        if not parent.poll(60):
            raise RuntimeError("the floor relay did not start")
        parent.recv()
        self.probe = CommitProbe(self.stack.db_url)

    def stop(self) -> None:
        for conn in [*self.viewer_conns, *([self.floor_conn] if self.floor_conn else [])]:
            try:
                conn.send({"cmd": "exit"})
                if conn.poll(10):
                    conn.recv()
            except (OSError, EOFError):
                pass
        for process in self.children:
            process.join(10)
            if process.is_alive():
                process.terminate()
        from django.db import connections

        connections.close_all()
        if getattr(self, "probe", None) is not None:
            self.probe.conn.close()
        self.stack.stop()

    # --- the two paths ---------------------------------------------------------

    def connect(self, specs: list[dict[str, Any]]) -> None:
        """Spread the sockets over the viewer processes (round-robin) and open them."""
        shares: list[list[dict[str, Any]]] = [[] for _ in self.viewer_conns]
        for index, spec in enumerate(specs):
            shares[index % len(shares)].append(spec)
        for conn, share in zip(self.viewer_conns, shares, strict=True):
            conn.send({"cmd": "connect", "sockets": share, "compression": self.args.compression})
        errors: list[str] = []
        connected = 0
        for conn in self.viewer_conns:
            reply = conn.recv()
            connected += reply["connected"]
            errors += reply["errors"]
        if connected != len(specs):
            raise RuntimeError(f"{connected}/{len(specs)} sockets connected: {errors[:5]}")

    def broadcast(self, command: dict[str, Any]) -> list[Any]:
        for conn in self.viewer_conns:
            conn.send(command)
        return [conn.recv() for conn in self.viewer_conns]

    def collect(self, expect: dict[str, list[int]], timeout: float) -> list[dict[str, Any]]:
        """What every socket of the rooms in ``expect`` saw, once it holds their replies."""
        replies = self.broadcast({"cmd": "collect", "expect": expect, "timeout": timeout})
        return [sock for reply in replies for sock in reply["sockets"] if sock["room"] in expect]

    def app_users(self, count: int) -> tuple[Any, list[str]]:
        """An asker, and session cookies of ``count`` viewer users."""
        from django.conf import settings
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore

        from messages_app.models import User

        tag = f"r{self.round_no}"
        asker = User.objects.create(username=f"asker-{tag}", display_name="Asker")
        users = User.objects.bulk_create(
            [User(username=f"viewer-{tag}-{i}", display_name=f"V{i}") for i in range(count)]
        )
        cookies = []
        for user in users:
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.save()
            cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
        return asker, cookies

    def open_app(self, scenario: Scenario) -> AppRooms:
        """The scenario's rooms on the app, every viewer connected (snapshot received)."""
        from messages_app.models import Room

        self.round_no += 1
        asker, cookies = self.app_users(min(scenario.viewers, 50))
        rooms = [
            Room.objects.create(name=f"Bench {self.round_no}-{i}", slug=f"b{self.round_no}-{i}")
            for i in range(scenario.streams)
        ]
        specs = [
            {
                "sid": r * scenario.viewers + v,
                "room": room.slug,
                "url": self.stack.ws_url(room.slug),
                "headers": {"Cookie": cookies[v % len(cookies)], "Origin": self.stack.origin},
            }
            for r, room in enumerate(rooms)
            for v in range(scenario.viewers)
        ]
        self.connect(specs)
        return AppRooms(rooms=rooms, asker=asker, sockets=len(specs))

    def open_floor(self, scenario: Scenario) -> FloorRooms:
        """The scenario's rooms on the floor relay, every viewer connected."""
        self.round_no += 1
        keys = [f"f{self.round_no}-{i}" for i in range(scenario.streams)]
        specs = [
            {
                "sid": r * scenario.viewers + v,
                "room": key,
                "url": f"ws://127.0.0.1:{self.floor_port}/rooms/{key}/",
                "headers": {},
            }
            for r, key in enumerate(keys)
            for v in range(scenario.viewers)
        ]
        self.connect(specs)
        return FloorRooms(keys=keys, sockets=len(specs))

    def round_app(self, rooms: AppRooms, granularity: str, text: str) -> RoundData:
        """One reply per room on the app, every viewer watching; what they saw."""
        from messages_app import services
        from messages_app.models import Message, Room

        self.round_no += 1
        Room.objects.filter(pk__in=[room.pk for room in rooms.rooms]).update(
            granularity=granularity
        )
        self.prepare_round(text)
        pids = {"web": self.stack.web_pid, "worker": self.stack.worker_pid}
        with Meter(pids, self.viewer_pids(), self.probe) as meter:
            posted: list[tuple[int, str, float]] = []
            for i, room in enumerate(rooms.rooms):
                marker = f"{self.run_id}-{self.round_no}-{i}"
                at = time.time()
                result = services.message_post(
                    room=room, author=rooms.asker, body=f"@gpt bench [bench:{marker}]"
                )
                assert result.reply is not None
                posted.append((result.reply.pk, marker, at))
            expect = {room.slug: [posted[i][0]] for i, room in enumerate(rooms.rooms)}
            sockets = self.collect(expect, self.round_timeout(text))
        rows = {
            m.pk: m
            for m in Message.objects.select_related("room").filter(
                pk__in=[reply_id for reply_id, *_ in posted]
            )
        }
        replies = [
            metrics.Reply(
                reply_id=reply_id,
                room=rows[reply_id].room.slug,
                marker=marker,
                body=rows[reply_id].body,
                version=rows[reply_id].version,
                status=rows[reply_id].status,
                posted_at=at,
            )
            for reply_id, marker, at in posted
        ]
        return RoundData(replies, sockets, self.emissions(), meter)

    def round_floor(self, rooms: FloorRooms, granularity: str, text: str) -> RoundData:
        """One reply per room on the floor relay, every viewer watching."""
        assert self.floor_conn is not None
        self.round_no += 1
        self.prepare_round(text)
        markers = {key: f"{self.run_id}-{self.round_no}-{key}" for key in rooms.keys}
        with Meter({"relay": self.floor_pid}, self.viewer_pids(), self.probe) as meter:
            at = time.time()
            done = ask(
                self.floor_conn,
                {
                    "cmd": "stream",
                    "granularity": granularity,
                    "rooms": {key: f"@gpt bench [bench:{markers[key]}]" for key in rooms.keys},
                },
            )
            expect = {reply["room"]: [reply["reply_id"]] for reply in done["replies"]}
            sockets = self.collect(expect, self.round_timeout(text))
        replies = [
            metrics.Reply(
                reply_id=reply["reply_id"],
                room=reply["room"],
                marker=markers[reply["room"]],
                body=reply["body"],
                version=0,
                status="done",
                posted_at=at,
            )
            for reply in done["replies"]
        ]
        return RoundData(replies, sockets, self.emissions(), meter)

    def emissions(self) -> dict[str, metrics.Emission]:
        return metrics.emissions_by_marker(self.stack.emissions())

    def prepare_round(self, text: str) -> None:
        self.stack.wait_idle()
        self.stack.model.control(
            text=text,
            tokens_per_second=self.args.rate,
            first_token_delay=self.args.first_token_delay,
        )
        self.stack.emissions(clear=True)
        self.broadcast({"cmd": "mark"})
        time.sleep(self.args.settle)

    def round_timeout(self, text: str) -> float:
        from worker.demo_llm import tokenize

        return len(tokenize(text)) / self.args.rate * 4 + 60

    def run_scenario(
        self, scenario: Scenario, granularities: tuple[str, ...], text: str
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Each granularity: floor and app rounds, alternating ``--repeat`` times, pooled."""
        floor_rooms, app_rooms = self.open_floor(scenario), self.open_app(scenario)
        results = []
        for granularity in granularities:
            data: dict[str, list[RoundData]] = {"floor": [], "app": []}
            profilers = self.start_profilers(scenario, granularity)
            for _ in range(self.args.repeat):
                data["floor"].append(self.round_floor(floor_rooms, granularity, text))
                data["app"].append(self.round_app(app_rooms, granularity, text))
            self.stop_profilers(profilers)
            for path, expected in (("floor", floor_rooms.sockets), ("app", app_rooms.sockets)):
                figures = pooled_figures(data[path], expected)
                results.append((path, granularity, figures))
                self.report_round(path, scenario, granularity, figures)
        self.broadcast({"cmd": "close"})
        return results

    def viewer_pids(self) -> list[int]:
        return [p.pid for p in self.children if p.pid and p.pid != self.floor_pid]

    def start_profilers(self, scenario: Scenario, granularity: str) -> list[Any]:
        if not self.args.profile_dir:
            return []
        out = Path(self.args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = f"{slug(scenario.name)}-{granularity}"
        return [
            subprocess.Popen(  # noqa: S603 - py-spy on our own processes
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--nonblocking",
                    "--gil",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "-p",
                    str(pid),
                    "-o",
                    str(out / f"{name}-{role}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for role, pid in (("web", self.stack.web_pid), ("worker", self.stack.worker_pid))
        ]

    @staticmethod
    def stop_profilers(profilers: list[Any]) -> None:
        for process in profilers:
            process.send_signal(signal.SIGINT)
        for process in profilers:
            process.wait(30)

    def warm_up(self) -> None:
        """Short unmeasured rounds on each path: imports, clients, connections, caches."""
        self.warming = True
        repeat, self.args.repeat = self.args.repeat, 2
        self.run_scenario(Scenario("warm-up", 3, 3), ("token",), reply_text(30))
        self.args.repeat = repeat
        self.warming = False

    def report_round(
        self, path: str, scenario: Scenario, granularity: str, figures: dict[str, Any]
    ) -> None:
        if self.warming:
            return
        lat, d = figures["latency_ms"], figures["delivery"]
        print(
            f"{scenario.name:>12} {granularity:>8} {path:>5}: "
            f"p50 {lat['p50']:8.1f}  p95 {lat['p95']:8.1f}  p99 {lat['p99']:8.1f}  "
            f"max {lat['max']:8.1f} ms  ttft p50 {figures['ttft_ms']['p50']:7.1f} ms  "
            f"lost {d['lost']} reord {d['reordered']} dup {d['duplicated']}  "
            f"wire {figures['wire_ratio_to_reply']:.1f}x  "
            f"cpu {' '.join(f'{k} {v:.2f}' for k, v in figures['cpu_s'].items())}  "
            f"load {figures['load']:.2f} busy {figures['machine_busy']:.0%}  "
            f"commit p99 {figures['db_commit_ms']['p99']:.1f} ms",
            flush=True,
        )

    # --- a whole run ---------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        scenarios = QUICK if self.args.quick else FULL
        if self.args.scenarios:
            wanted = set(self.args.scenarios.split(","))
            known = {s.name: s for s in (*FULL, *QUICK)}
            scenarios = tuple(s for s in known.values() if slug(s.name) in wanted)
        granularities = tuple(self.args.granularities.split(","))
        tokens = self.args.tokens or (40 if self.args.quick else 150)
        text = reply_text(tokens)
        self.warm_up()
        started = time.time()
        info = machine()
        print(f"machine: {info['nproc']} × {info['cpu']}, load {info['loadavg']}", flush=True)
        results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
            "machine": info,
            "rate": self.args.rate,
            "reply_tokens": tokens,
            "reply_chars": len(text),
            "viewer_procs": self.args.viewer_procs,
            "repeat": self.args.repeat,
            "worker_concurrency": self.args.worker_concurrency,
            "scenarios": [],
        }
        for scenario in scenarios:
            chosen = tuple(g for g in scenario.granularities if g in granularities)
            if not chosen:
                continue
            rounds = self.run_scenario(scenario, chosen, text)
            results["scenarios"].append(
                {
                    "name": scenario.name,
                    "streams": scenario.streams,
                    "viewers": scenario.viewers,
                    "rounds": [
                        {"path": path, "granularity": g, **figures} for path, g, figures in rounds
                    ],
                }
            )
        results["seconds"] = time.time() - started
        results["loadavg_end"] = os.getloadavg()
        return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1×1 and 3×10, short replies")
    parser.add_argument(
        "--scenarios", default="", help="comma-separated, e.g. 1x1,3x50,10x50,100-streams"
    )
    parser.add_argument("--granularities", default=",".join(GRANULARITIES))
    parser.add_argument("--rate", type=float, default=50.0, help="model tokens per second")
    parser.add_argument("--tokens", type=int, default=0, help="reply length in model tokens")
    parser.add_argument("--first-token-delay", type=float, default=0.05)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of rest per round")
    parser.add_argument("--viewer-procs", type=int, default=2)
    parser.add_argument(
        "--repeat", type=int, default=0, help="alternating floor/app rounds pooled (3; quick 1)"
    )
    parser.add_argument("--worker-concurrency", type=int, default=120)
    parser.add_argument(
        "--compression",
        action="store_true",
        help="viewers offer permessage-deflate (the floor accepts it; daphne does not)",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for web and worker (repeatable)"
    )
    parser.add_argument("--run-id", default="", help="names the database, queue and prefix")
    parser.add_argument("--log-dir", default="")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--json", default="", help="write every figure here")
    parser.add_argument("--out", default="", help="write the Markdown report here")
    parser.add_argument("--plot", default="", help="write the PNG plot here (needs matplotlib)")
    parser.add_argument("--before", default="", help="a JSON of an earlier run to compare")
    parser.add_argument(
        "--report-from", default="", help="only write --out/--plot from this JSON (no run)"
    )
    parser.add_argument("--profile-dir", default="", help="py-spy web and worker per app round")
    parser.add_argument("--check", action="store_true", help="exit 1 on any delivery failure")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.replace("×", "x")
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


def write_report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The Markdown report and plot; a hand-written analysis below the marker is kept."""
    from bench import report

    before = json.loads(Path(args.before).read_text()) if args.before else None
    if args.plot:
        report.plot(results, Path(args.plot), before=before)
    if args.out:
        out = Path(args.out)
        kept = ""
        if out.exists() and report.MARKER in out.read_text():
            kept = out.read_text().split(report.MARKER, 1)[1].lstrip("\n")
        plot = Path(args.plot) if args.plot else None
        out.write_text(report.markdown(results, before=before, plot=plot, kept=kept))
        print(f"report: {out}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_from:
        write_report(args, json.loads(Path(args.report_from).read_text()))
        return 0
    # SIGTERM (a test's timeout, kill) stops the run like Ctrl-C: the processes it
    # started are stopped and its database dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    try:
        bench.start()
        results = bench.run()
    finally:
        bench.stop()
    json_path = Path(args.json or ROOT / "bench" / "results" / f"{bench.run_id}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"figures: {json_path}", flush=True)
    if args.out or args.plot:
        write_report(args, results)
    ok = all(
        metrics.delivery_ok(r) for scenario in results["scenarios"] for r in scenario["rounds"]
    )
    print("delivery: " + ("every viewer got every delta, in order" if ok else "FAILED"))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
