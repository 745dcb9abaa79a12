"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the time goes.

    python -m bench.profile bench/results/prof/3x50-token-web.txt [--top 25] [--match text]

Prints the share of samples whose stack includes each function (inclusive) and
the share where it is the innermost frame (self), most first. Idle samples (a
thread waiting in ``select``/``epoll``/a lock) are counted apart.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = re.compile(r"\b(select|poll|epoll|wait|_worker|acquire|sleep|accept)\b")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """``name (path/to/module.py:12)`` → ``name (module.py)``."""
    match = re.match(r"(.*?) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return f"{name} ({'/'.join(parts[-2:])})"


def summarise(path: Path, top: int, match: str = "") -> str:
    stacks = load(path)
    total = sum(count for _, count in stacks)
    busy = [(s, c) for s, c in stacks if not (s and IDLE.search(s[-1].split(" ")[0]))]
    busy_total = sum(c for _, c in busy)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in busy:
        frames = [short(f) for f in stack]
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [
        f"{path.name}: {total} samples, {busy_total} on CPU ({busy_total / max(total, 1):.0%}); "
        "shares below are of on-CPU samples"
    ]
    lines.append("inclusive:")
    for frame, count in inclusive.most_common():
        if match and match not in frame:
            continue
        lines.append(f"  {count / max(busy_total, 1):6.1%}  {frame}")
        if len(lines) > top + 2:
            break
    lines.append("self:")
    for frame, count in own.most_common(top):
        lines.append(f"  {count / max(busy_total, 1):6.1%}  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only inclusive frames containing this")
    args = parser.parse_args(argv)
    for path in args.paths:
        print(summarise(path, args.top, args.match))  # noqa: T201


if __name__ == "__main__":
    main()
