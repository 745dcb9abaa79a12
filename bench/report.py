"""The Markdown report and the percentile plot of a benchmark run (``bench.run``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.metrics import delivery_ok


def _ms(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(app: float, floor: float) -> str:
    if any(v is None or math.isnan(v) for v in (app, floor)) or floor <= 0:
        return "—"
    return f"×{app / floor:.2f}"


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _cpu(figures: dict[str, Any]) -> str:
    cpu = figures["cpu_s"]
    if "relay" in cpu:
        return f"relay {cpu['relay']:.2f}"
    return f"web {cpu['web']:.2f} + worker {cpu['worker']:.2f}"


def _commit(figures: dict[str, Any]) -> str:
    commit = figures.get("db_commit_ms")
    if not commit or not commit.get("n"):
        return "—"
    return f"{_ms(commit['p50'])} / {_ms(commit['p99'])}"


def _cpu_total(figures: dict[str, Any]) -> float:
    cpu = figures["cpu_s"]
    return cpu.get("relay", cpu.get("web", 0.0) + cpu.get("worker", 0.0))


def _delivery(figures: dict[str, Any]) -> str:
    d = figures["delivery"]
    text = f"{d['lost']} / {d['reordered']} / {d['duplicated']}"
    if d["versions_coalesced"]:
        text += f" ({d['versions_coalesced']} writes coalesced)"
    if not delivery_ok(figures):
        text += " **FAILED**"
    return text


HEADER = (
    "| granularity | path | p50 ms | p95 ms | p99 ms | max ms | TTFT overhead p50 / p95 ms "
    "| lost / reordered / dup | DB writes per reply | wire bytes per viewer per reply "
    "(× reply) | CPU s per round | load / machine busy | Postgres commit p50 / p99 ms |\n"
    "|---|---|--:|--:|--:|--:|--:|---|--:|--:|---|---|---|\n"
)


def scenario_table(scenario: dict[str, Any]) -> str:
    rows = []
    by_key = {(r["path"], r["granularity"]): r for r in scenario["rounds"]}
    granularities = list(dict.fromkeys(r["granularity"] for r in scenario["rounds"]))
    for granularity in granularities:
        floor, app = by_key.get(("floor", granularity)), by_key.get(("app", granularity))
        for path, figures in (("floor", floor), ("app", app)):
            if figures is None:
                continue
            lat, ttft = figures["latency_ms"], figures["ttft_ms"]
            rows.append(
                f"| {granularity} | {path} | {_ms(lat['p50'])} | {_ms(lat['p95'])} "
                f"| {_ms(lat['p99'])} | {_ms(lat['max'])} "
                f"| {_ms(ttft['p50'])} / {_ms(ttft['p95'])} | {_delivery(figures)} "
                f"| {_num(figures['db_writes_per_reply'])} "
                f"| {_num(figures['wire_bytes_per_viewer_per_reply'], 0)} "
                f"({_num(figures['wire_ratio_to_reply'], 2)}×) "
                f"| {_cpu(figures)} | {figures['load']:.2f} / {figures['machine_busy']:.0%} "
                f"| {_commit(figures)} |"
            )
        if floor and app:
            la, lf = app["latency_ms"], floor["latency_ms"]
            rows.append(
                f"| {granularity} | **app ÷ floor** | {_ratio(la['p50'], lf['p50'])} "
                f"| {_ratio(la['p95'], lf['p95'])} | {_ratio(la['p99'], lf['p99'])} "
                f"| {_ratio(la['max'], lf['max'])} "
                f"| {_ratio(app['ttft_ms']['p50'], floor['ttft_ms']['p50'])} | | "
                f"| {_ratio(app['wire_bytes_per_viewer_per_reply'], floor['wire_bytes_per_viewer_per_reply'])} "  # noqa: E501
                f"| {_ratio(_cpu_total(app), _cpu_total(floor))} | | |"
            )
    return HEADER + "\n".join(rows) + "\n"


def _round(results: dict[str, Any], name: str, path: str, granularity: str) -> dict[str, Any]:
    for scenario in results["scenarios"]:
        if scenario["name"] == name:
            for r in scenario["rounds"]:
                if r["path"] == path and r["granularity"] == granularity:
                    return r
    return {}


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets (token granularity), each with the measured figure and verdict."""
    out: list[tuple[str, str, bool | None]] = []

    def pair(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return _round(results, name, "app", "token"), _round(results, name, "floor", "token")

    app, floor = pair("1×1")
    if app and floor:
        a, f = app["latency_ms"]["p50"], floor["latency_ms"]["p50"]
        out.append(("1×1: p50 ≤ floor + 3 ms", f"{a:.1f} ms vs floor {f:.1f} + 3 ms", a <= f + 3))
    app, floor = pair("3×50")
    if app and floor:
        a, f = app["latency_ms"], floor["latency_ms"]
        out.append(
            ("3×50: p50 ≤ 1.5× floor", f"×{a['p50'] / f['p50']:.2f}", a["p50"] <= 1.5 * f["p50"])
        )
        out.append(
            ("3×50: p99 ≤ 2× floor", f"×{a['p99'] / f['p99']:.2f}", a["p99"] <= 2 * f["p99"])
        )
    app, floor = pair("10×50")
    if app and floor:
        a, f = app["latency_ms"], floor["latency_ms"]
        d = app["delivery"]
        out.append(
            ("10×50: p50 ≤ 2× floor", f"×{a['p50'] / f['p50']:.2f}", a["p50"] <= 2 * f["p50"])
        )
        out.append(
            ("10×50: p99 ≤ 3× floor", f"×{a['p99'] / f['p99']:.2f}", a["p99"] <= 3 * f["p99"])
        )
        out.append(
            (
                "10×50: zero lost or reordered",
                f"lost {d['lost']}, reordered {d['reordered']}",
                d["lost"] == 0 and d["reordered"] == 0,
            )
        )
    app, _ = pair("100 streams")
    if app:
        ttft = app["ttft_ms"]
        for q in ("p50", "p95"):
            out.append(
                (
                    f"100 streams on one worker: TTFT overhead {q} ≤ 50 ms",
                    f"{ttft[q]:.1f} ms (max {ttft['max']:.1f} ms)",
                    ttft[q] <= 50,
                )
            )
    for name in ("1×1", "3×50", "10×50"):
        app, _ = pair(name)
        if app:
            ratio = app["wire_ratio_to_reply"]
            out.append(
                (
                    f"{name}: wire bytes per viewer per reply ≤ 1.5× reply",
                    f"{ratio:.2f}×",
                    ratio <= 1.5,
                )
            )
    return out


# Everything after this line of an existing report is kept when it is written again:
# the analysis written by hand (where the time goes, what limits a missed target).
MARKER = "<!-- analysis: kept when bench.run rewrites this file -->"


def before_after(results: dict[str, Any], before: dict[str, Any]) -> str:
    """App latency as a ratio to the floor of its own run: before this work, and now."""
    rows = [
        "| scenario | granularity | before: app p50 / p99 ms (× its floor) "
        "| now: app p50 / p99 ms (× its floor) |",
        "|---|---|---|---|",
    ]
    for scenario in results["scenarios"]:
        name = scenario["name"]
        for granularity in dict.fromkeys(r["granularity"] for r in scenario["rounds"]):
            cells = []
            for run in (before, results):
                app = _round(run, name, "app", granularity)
                floor = _round(run, name, "floor", granularity)
                if not app or not floor:
                    cells.append("not run")
                    continue
                a, f = app["latency_ms"], floor["latency_ms"]
                cells.append(
                    f"{_ms(a['p50'])} / {_ms(a['p99'])} "
                    f"({_ratio(a['p50'], f['p50'])} / {_ratio(a['p99'], f['p99'])})"
                )
            rows.append(f"| {name} | {granularity} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def markdown(
    results: dict[str, Any],
    *,
    before: dict[str, Any] | None = None,
    plot: Path | None = None,
    kept: str = "",
) -> str:
    m = results["machine"]
    parts = [
        "# Benchmarks: the persisted stream against a direct relay\n",
        'Generated by `bench/run.py` (see README.md, "Benchmarks"). Every figure of a table '
        "comes from one run, in which the direct-relay floor (one asyncio process: openai SDK "
        "stream → `websockets.broadcast`, no database, no Redis) was measured the same way, "
        "by the same viewer processes, in rounds alternating with the app's "
        f"({results.get('repeat', 1)} of each per scenario and granularity, samples "
        "pooled), so that load from other processes falls on both alike.\n",
        "## Machine and command\n",
        f"- {m['nproc']} cores: {m['cpu']}; Linux {m['kernel']}; Python {m['python']}",
        f"- load average at start {tuple(round(x, 2) for x in m['loadavg'])}, at end "
        f"{tuple(round(x, 2) for x in results['loadavg_end'])} (other engineers' processes "
        "share the machine; each row gives the 1-minute load and the whole machine's busy "
        "share during its round)",
        f"- command: `{results['command']}` ({results['seconds']:.0f} s), started "
        f"{results['started']}",
        f"- model: the demo server at {results['rate']:g} tokens/s, a reply of "
        f"{results['reply_tokens']} tokens ({results['reply_chars']} characters); "
        f"{results['viewer_procs']} viewer processes; Celery threads pool, concurrency "
        f"{results['worker_concurrency']}",
        "",
        "Added latency = time a viewer received a delta − time the model emitted the token "
        "holding the delta's last character. TTFT overhead = first delta at a viewer − first "
        "token emitted. Lost counts gaps, missing replies and a final text (built from deltas "
        "alone) that differs from the database row. Wire bytes are the TCP payload a viewer "
        "received from its post to the final `message` frame (every frame of the reply: the "
        "question, the placeholder, the status changes, the deltas).\n",
    ]
    if plot is not None:
        parts.append(f"![percentiles]({plot.name})\n")
    if before is not None:
        parts.append("## Before and after (each against the floor of its own run)\n")
        parts.append(
            f"Before: `{before['command']}`, run in an export of the code before this work "
            f"(`d944a72`) with this benchmark, started {before['started']} (load at start "
            f"{tuple(round(x, 2) for x in before['machine']['loadavg'])}).\n"
        )
        parts.append(before_after(results, before))
    verdicts = targets(results)
    if verdicts:
        parts.append("## Targets (token granularity)\n")
        parts.append("| target | measured | met |\n|---|---|---|")
        for name, measured, ok in verdicts:
            parts.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
        parts.append("")
    for scenario in results["scenarios"]:
        parts.append(
            f"## {scenario['name']}: {scenario['streams']} stream(s) × {scenario['viewers']} "
            "viewer(s) per room\n"
        )
        parts.append(scenario_table(scenario))
    if before is not None:
        parts.append("## Before: every figure of the run on the code before this work\n")
        for scenario in before["scenarios"]:
            parts.append(f"### {scenario['name']} (before)\n")
            parts.append(scenario_table(scenario))
    parts.append(MARKER)
    return "\n".join(parts) + "\n" + kept


def plot(results: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = results["scenarios"]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 4.2), squeeze=False)
    colours = {"floor": "#4c72b0", "app": "#dd8452", "before": "#999999"}
    series = [("floor", results, "floor"), ("app", results, "app")]
    if before is not None:
        series.append(("before", before, "app"))
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        granularities = list(dict.fromkeys(r["granularity"] for r in scenario["rounds"]))
        width = 0.8 / (3 * len(series))
        for gi, granularity in enumerate(granularities):
            for pi, (label, run, path_name) in enumerate(series):
                r = _round(run, scenario["name"], path_name, granularity)
                if not r:
                    continue
                for qi, q in enumerate(("p50", "p95", "p99")):
                    x = gi + (pi * 3 + qi - (3 * len(series) - 1) / 2) * width
                    ax.bar(
                        x,
                        r["latency_ms"][q],
                        width,
                        color=colours[label],
                        alpha=(1.0, 0.7, 0.45)[qi],
                        edgecolor="black",
                        linewidth=0.3,
                    )
        ax.set_yscale("log")
        ax.set_xticks(range(len(granularities)), granularities)
        ax.set_title(f"{scenario['name']} ({scenario['streams']}×{scenario['viewers']})")
        ax.set_ylabel("added latency, ms (log)")
        ax.grid(axis="y", which="both", alpha=0.3)
    names = [label for label, *_ in series]
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[name], alpha=alpha)
        for name in names
        for alpha in (1.0, 0.7, 0.45)
    ]
    titles = {"floor": "floor", "app": "app", "before": "app before"}
    labels = [f"{titles[p]} {q}" for p in names for q in ("p50", "p95", "p99")]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8)
    fig.suptitle(
        f"Added latency token→viewer at {results['rate']:g} tokens/s "
        "(each run against its own direct-relay floor)"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
