"""The browser's cost of a growing reply, before and after incremental rendering.

In headless Chromium (Playwright, Debian's ``chromium``), on a page holding the
room's own Markdown code (the vendored marked and DOMPurify and ``markdown.js``),
long Markdown replies (``bench/replies.py``) are fed token by token, as deltas
arrive, in three ways measured in the same run:

- ``floor``: the text set as plain text (``textContent``) on every delta: what
  showing a growing text costs at the least, with no Markdown at all;
- ``before``: the whole body parsed, sanitised and put in the DOM on every delta
  (``ChatMarkdown.render`` of the full text, what room.js did before);
- ``after``: ``ChatMarkdown.live(container).update(text)``, which renders again
  only the open end of the body (what room.js does now).

Figures per reply length: the main-thread time of one delta's render at the
start (first tenth of the deltas) and at the end (last tenth), their ratio, and
the total. Then the room's case: five long replies streaming into one room at
token granularity, each delta its own task (as WebSocket messages are), painted
as room.js paints (at most once per animation frame per row for ``after``, at
once for ``before``): total main-thread time, wall time and the long tasks
(> 50 ms, from the browser's own ``longtask`` entries). Each final DOM is checked
against a full render of the final text.

    python -m bench.browser [--lengths 2000,8000,32000] [--json FILE] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from bench import plots, replies
from bench.replies import long_reply, tenth
from tests.e2e.render_page import CHROMIUM, CHROMIUM_ARGS, SCRIPTS
from worker.demo_llm import tokenize

LENGTHS = (2_000, 8_000, 32_000)
ROOM_REPLIES = 5
# The room's "before" case is capped: at 32,000 characters five replies would
# keep the old renderer busy for about half an hour.
ROOM_BEFORE_MAX_CHARS = 8_000
MODES = ("floor", "before", "after")

# One reply, one render per delta, timed one by one.
PER_DELTA = """
([mode, tokens]) => {
  const box = document.createElement("div");
  document.body.replaceChildren(box);
  const live = mode === "after" ? ChatMarkdown.live(box) : null;
  const costs = new Array(tokens.length);
  let text = "";
  for (let i = 0; i < tokens.length; i++) {
    text += tokens[i];
    const start = performance.now();
    if (mode === "floor") box.textContent = text;
    else if (mode === "before") box.replaceChildren(ChatMarkdown.render(text));
    else live.update(text);
    costs[i] = performance.now() - start;
  }
  const full = document.createElement("div");
  full.replaceChildren(ChatMarkdown.render(text));
  const exact = mode === "floor" ? box.textContent === text : box.innerHTML === full.innerHTML;
  return { costs, exact };
}
"""

# Several replies into one room, one task per delta (a MessageChannel message, as
# a WebSocket frame is a task of its own), painted as room.js paints them.
ROOM = """
async ([mode, streams]) => {
  const longTasks = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longTasks.push(entry.duration);
  });
  observer.observe({ type: "longtask" });
  const rows = streams.map(() => {
    const box = document.createElement("div");
    document.body.appendChild(box);
    return { box, text: "", live: mode === "after" ? ChatMarkdown.live(box) : null };
  });
  const order = [];
  const longest = Math.max(...streams.map((s) => s.length));
  for (let i = 0; i < longest; i++) {
    for (let r = 0; r < streams.length; r++) if (i < streams[r].length) order.push([r, i]);
  }
  let busy = 0;
  const dirty = new Set();
  let frameRequested = false;
  function paintFrame() {
    frameRequested = false;
    const start = performance.now();
    for (const row of dirty) row.live.update(row.text);
    dirty.clear();
    busy += performance.now() - start;
  }
  const channel = new MessageChannel();
  const started = performance.now();
  await new Promise((resolve) => {
    let next = 0;
    channel.port1.onmessage = () => {
      const start = performance.now();
      const [r, i] = order[next++];
      const row = rows[r];
      row.text += streams[r][i];
      if (mode === "before") row.box.replaceChildren(ChatMarkdown.render(row.text));
      else {
        dirty.add(row);
        if (!frameRequested) { frameRequested = true; requestAnimationFrame(paintFrame); }
      }
      busy += performance.now() - start;
      if (next < order.length) channel.port2.postMessage(0);
      else requestAnimationFrame(() => requestAnimationFrame(resolve));
    };
    channel.port2.postMessage(0);
  });
  const wall = performance.now() - started;
  await new Promise((resolve) => setTimeout(resolve, 100));  // the last longtask entries
  observer.disconnect();
  let exact = true;
  for (const row of rows) {
    const full = document.createElement("div");
    full.replaceChildren(ChatMarkdown.render(row.text));
    exact = exact && row.box.innerHTML === full.innerHTML;
  }
  return { busy, wall, longTasks, exact, deltas: order.length };
}
"""


def markdown_page(page: Page) -> None:
    page.set_content("<!doctype html><html><head><meta charset='utf-8'></head><body></body></html>")
    for script in SCRIPTS:
        page.add_script_tag(path=str(script))


def per_delta(page: Page, mode: str, tokens: list[str]) -> dict[str, Any]:
    markdown_page(page)
    result = page.evaluate(PER_DELTA, [mode, tokens])
    costs = result["costs"]
    start, end = tenth(costs, end=False), tenth(costs, end=True)
    return {
        "deltas": len(costs),
        "start_ms": start,
        "end_ms": end,
        "end_over_start": end / start if start else None,
        "total_ms": sum(costs),
        "max_ms": max(costs),
        "exact": result["exact"],
    }


def room(page: Page, mode: str, chars: int) -> dict[str, Any]:
    markdown_page(page)
    streams = [tokenize(long_reply(chars, seed=seed)) for seed in range(ROOM_REPLIES)]
    result = page.evaluate(ROOM, [mode, streams])
    tasks = result["longTasks"]
    return {
        "replies": ROOM_REPLIES,
        "chars": chars,
        "deltas": result["deltas"],
        "main_thread_ms": result["busy"],
        "wall_ms": result["wall"],
        "long_tasks": len(tasks),
        "longest_task_ms": max(tasks) if tasks else 0.0,
        "exact": result["exact"],
    }


def run(lengths: tuple[int, ...], room_chars: int) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "lengths": {},
        "room": {},
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        figures["chromium"] = browser.version
        page = browser.new_page()
        for chars in lengths:
            tokens = tokenize(long_reply(chars))
            figures["lengths"][chars] = {mode: per_delta(page, mode, tokens) for mode in MODES}
            print(f"{chars} chars: {json.dumps(figures['lengths'][chars])}", flush=True)  # noqa: T201
        for mode in ("before", "after"):
            chars = min(room_chars, ROOM_BEFORE_MAX_CHARS) if mode == "before" else room_chars
            figures["room"][mode] = room(page, mode, chars)
            print(f"room {mode}: {json.dumps(figures['room'][mode])}", flush=True)  # noqa: T201
        browser.close()
    return figures


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        f"Chromium {figures['chromium']}, {figures['machine']}, started {figures['started']}.",
        "",
        "One reply fed token by token; the time of one delta's render (main thread):",
        "",
        "| reply (chars) | deltas | mode | at the start | at the end | end ÷ start | total |",
        "|--:|--:|---|--:|--:|--:|--:|",
    ]
    for chars, modes in figures["lengths"].items():
        for mode in MODES:
            m = modes[mode]
            ratio = f"{m['end_over_start']:.2f}×" if m["end_over_start"] else "n/a"
            lines.append(
                f"| {int(chars):,} | {m['deltas']:,} | {mode} | {m['start_ms']:.3f} ms | "
                f"{m['end_ms']:.3f} ms | {ratio} | {m['total_ms'] / 1000:.2f} s |"
            )
    lines += [
        "",
        f"{ROOM_REPLIES} replies streaming into one room, token by token, each delta its own "
        f"task (the old renderer at most {ROOM_BEFORE_MAX_CHARS:,} characters a reply):",
        "",
        "| mode | chars a reply | deltas | main thread | wall | long tasks (> 50 ms) "
        "| longest | exact |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for mode in ("before", "after"):
        r = figures["room"][mode]
        lines.append(
            f"| {mode} | {r['chars']:,} | {r['deltas']:,} | {r['main_thread_ms'] / 1000:.2f} s | "
            f"{r['wall_ms'] / 1000:.2f} s | {r['long_tasks']} | {r['longest_task_ms']:.0f} ms | "
            f"{'yes' if r['exact'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def plot(figures: dict[str, Any], path: Path) -> None:
    lengths = list(figures["lengths"])
    series = [
        (
            f"{mode}: one delta at the end of the reply",
            style,
            [figures["lengths"][c][mode]["end_ms"] for c in lengths],
        )
        for mode, style in zip(MODES, ("k:", "r-o", "g-o"), strict=True)
    ]
    plots.against_length(
        path,
        [int(c) for c in lengths],
        series,
        xlabel="reply length (characters)",
        ylabel="main-thread ms per delta",
        title="Browser cost of a delta against reply length (headless Chromium)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--room-chars", type=int, default=LENGTHS[-1])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG of cost against length here")
    args = parser.parse_args(argv)
    lengths = replies.parse_lengths(parser, args.lengths)
    if args.room_chars < 100:
        parser.error("reply lengths must be at least 100 characters")
    figures = run(lengths, args.room_chars)
    print(markdown(figures))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.plot:
        plot(figures, args.plot)


if __name__ == "__main__":
    main()
