"""From what the viewers saw and what the model logged to the figures of a round.

Added latency of a delta = the time a viewer got it − the time the model emitted
the token holding the delta's last character (the token whose arrival let the
chunker flush it). Every process runs on one machine, on one clock.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Any

from bench.viewers import digest

MARKER_RE = re.compile(r"\[bench:([\w.-]+)\]")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < q <= 100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max (and count) of seconds, in milliseconds."""
    return {
        "n": len(values),
        "p50": percentile(values, 50) * 1e3,
        "p95": percentile(values, 95) * 1e3,
        "p99": percentile(values, 99) * 1e3,
        "max": (max(values) * 1e3) if values else math.nan,
    }


@dataclass
class Emission:
    """One model stream: when the request came, and when each token left."""

    received_at: float
    ends: list[int]  # cumulative end offset (code points) of each token
    emitted_at: list[float]

    def emitted_for(self, end: int) -> float:
        """When the token holding the character just before ``end`` was emitted."""
        index = bisect.bisect_left(self.ends, end)
        return self.emitted_at[min(index, len(self.emitted_at) - 1)]


def emissions_by_marker(streams: list[dict[str, Any]]) -> dict[str, Emission]:
    found = {}
    for stream in streams:
        match = MARKER_RE.search(stream["key"])
        if not match or not stream["tokens"]:
            continue
        ends, total = [], 0
        for token in stream["tokens"]:
            total += len(token)
            ends.append(total)
        found[match.group(1)] = Emission(stream["received_at"], ends, stream["emitted_at"])
    return found


@dataclass
class Reply:
    """A reply of the round as the source of truth has it (the row, or the floor's text)."""

    reply_id: int
    room: str
    marker: str
    body: str
    version: int
    status: str
    posted_at: float


def round_figures(
    *,
    replies: list[Reply],
    sockets: list[dict[str, Any]],
    emissions: dict[str, Emission],
    cpu: dict[str, float],
    expected_sockets: int,
) -> dict[str, Any]:
    """Every figure of one round (one path, one scenario, one granularity)."""
    by_id = {reply.reply_id: reply for reply in replies}
    latencies: list[float] = []
    ttft: list[float] = []
    lost = reordered = duplicated = coalesced = 0
    missing = mismatched = not_done = 0
    wire: list[float] = []
    payload: list[float] = []
    frames: list[float] = []
    for sock in sockets:
        lost += sock["gaps"]
        reordered += sock["reordered"]
        duplicated += sock["duplicates"]
        seen = 0
        for reply_id, got in sock["replies"].items():
            reply = by_id[int(reply_id)]
            if got is None:
                missing += 1
                continue
            seen += 1
            if got["status"] != "done" or reply.status != "done":
                not_done += 1
            if got["delta_text_sha1"] != digest(reply.body):
                mismatched += 1
            emission = emissions.get(reply.marker)
            deltas = got["deltas"]
            previous = None
            for received, offset, length, version in deltas:
                if previous is not None and version > previous + 1:
                    coalesced += version - previous - 1
                previous = version
                if emission is not None:
                    latencies.append(received - emission.emitted_for(offset + length))
            if emission is not None and deltas:
                ttft.append(deltas[0][0] - emission.emitted_at[0])
        if seen:
            wire.append(sock["wire_bytes"] / seen)
            payload.append(sock["payload_bytes"] / seen)
            frames.append(sock["frames"] / seen)
    reply_bytes = [len(reply.body.encode()) for reply in replies]
    mean_reply = sum(reply_bytes) / len(reply_bytes) if reply_bytes else math.nan
    starts = [
        emissions[reply.marker].received_at - reply.posted_at
        for reply in replies
        if reply.marker in emissions
    ]
    return {
        "latency_ms": summary_ms(latencies),
        "ttft_ms": summary_ms(ttft),
        "start_ms": summary_ms(starts),
        "delivery": {
            "sockets": len(sockets),
            "sockets_expected": expected_sockets,
            "replies": len(replies),
            "lost": lost + missing + mismatched,
            "gaps": lost,
            "missing": missing,
            "text_mismatch": mismatched,
            "not_done": not_done,
            "reordered": reordered,
            "duplicated": duplicated,
            "versions_coalesced": coalesced,
        },
        "reply_bytes": mean_reply,
        "db_writes_per_reply": _mean([reply.version for reply in replies if reply.version]),
        "wire_bytes_per_viewer_per_reply": _mean(wire),
        "payload_bytes_per_viewer_per_reply": _mean(payload),
        "frames_per_viewer_per_reply": _mean(frames),
        "wire_ratio_to_reply": _mean(wire) / mean_reply if mean_reply else math.nan,
        "cpu_s": cpu,
    }


def delivery_ok(figures: dict[str, Any]) -> bool:
    delivery = figures["delivery"]
    return (
        delivery["sockets"] == delivery["sockets_expected"]
        and delivery["lost"] == 0
        and delivery["reordered"] == 0
        and delivery["duplicated"] == 0
        and delivery["not_done"] == 0
    )


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else math.nan
