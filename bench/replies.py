"""Long Markdown replies, as a model writes them: headings, paragraphs with
emphasis, code spans, links and mentions, lists, tables, quotes and fenced code.

Deterministic for a given length and seed, so that runs compare, and text that
compresses no better than real prose (words drawn at random, not one paragraph
repeated), used by the browser benchmark (``bench/browser.py``) and the browser
tests of long replies.
"""

from __future__ import annotations

import argparse
import random
import statistics

WORDS = (
    "the a request row stream reply token socket browser worker database commit version "
    "offset delta frame render block parse cache queue latency buffer index query table "
    "column value length server client message room user model answer write read append "
    "fast slow linear square cost time memory page paint layout list item code text"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    extra = rng.random()
    if extra < 0.15:
        words[rng.randrange(len(words))] = f"**{rng.choice(WORDS)}**"
    elif extra < 0.3:
        words[rng.randrange(len(words))] = f"`{rng.choice(WORDS)}()`"
    elif extra < 0.38:
        words[rng.randrange(len(words))] = (
            f"[{rng.choice(WORDS)}](https://docs.example/{rng.choice(WORDS)})"
        )
    elif extra < 0.42:
        words[rng.randrange(len(words))] = "@gpt"
    elif extra < 0.5:
        words[rng.randrange(len(words))] = f"*{rng.choice(WORDS)}*"
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", ":"])


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))


def _block(rng: random.Random, index: int) -> str:
    kind = rng.random()
    if index % 7 == 0:
        return f"{'#' * rng.randint(2, 3)} {_sentence(rng).rstrip('.?:')}"
    if kind < 0.45:
        return _paragraph(rng)
    if kind < 0.6:
        marker = rng.choice(["-", "1."])
        items = [_sentence(rng) for _ in range(rng.randint(2, 5))]
        return "\n".join(
            f"{f'{n + 1}.' if marker == '1.' else '-'} {item}" for n, item in enumerate(items)
        )
    if kind < 0.8:
        lines = [
            f"{rng.choice(WORDS)}_{n} = {rng.choice(WORDS)}({rng.randint(0, 99)})"
            for n in range(rng.randint(3, 10))
        ]
        return "```python\n" + "\n".join(lines) + "\n```"
    if kind < 0.9:
        head = "| name | value | note |\n|---|--:|:-:|"
        rows = [
            f"| {rng.choice(WORDS)} | {rng.randint(0, 9999)} | {rng.choice(WORDS)} |"
            for _ in range(rng.randint(2, 6))
        ]
        return "\n".join([head, *rows])
    return "> " + _sentence(rng)


def long_reply(chars: int, seed: int = 0) -> str:
    """A Markdown reply of exactly ``chars`` characters (its last block cut short)."""
    rng = random.Random(seed)
    blocks: list[str] = []
    length, index = 0, 0
    while length < chars:
        block = _block(rng, index)
        blocks.append(block)
        length += len(block) + 2
        index += 1
    return "\n\n".join(blocks)[:chars]


def parse_lengths(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """``--lengths`` of the long-reply benchmarks: comma-separated character counts."""
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        parser.error("--lengths: comma-separated character counts, e.g. 2000,8000,32000")
    if not lengths or min(lengths) < 100:
        parser.error("reply lengths must be at least 100 characters")
    return lengths


def tenth(values: list[float], end: bool) -> float:
    """The mean of the first (or last) tenth of ``values``: the cost at a reply's start
    against its end."""
    size = max(1, len(values) // 10)
    return statistics.fmean(values[-size:] if end else values[:size])
