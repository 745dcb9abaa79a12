"""The benchmark's arithmetic and the model server's emission log it relies on."""

from __future__ import annotations

import json
import math

import httpx

from bench import metrics
from bench.viewers import Row, Viewer, digest
from tests.live import ModelServer


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert metrics.percentile(values, 50) == 50
    assert metrics.percentile(values, 99) == 99
    assert metrics.percentile(values, 100) == 100
    assert math.isnan(metrics.percentile([], 50))


def test_emission_of_a_delta_is_that_of_the_token_holding_its_last_character() -> None:
    emission = metrics.Emission(received_at=0.0, ends=[5, 11, 17], emitted_at=[1.0, 2.0, 3.0])
    assert emission.emitted_for(5) == 1.0  # "Hello" ends with token 0
    assert emission.emitted_for(6) == 2.0  # "Hello " needs the space of token 1
    assert emission.emitted_for(17) == 3.0


def delta(message_id: int, version: int, offset: int, text: str) -> str:
    frame = {"type": "delta", "id": message_id, "version": version, "offset": offset}
    return json.dumps({**frame, "text": text})


def test_viewer_counts_gaps_duplicates_and_reorders() -> None:
    viewer = Viewer(0, "room", ws=None)  # type: ignore[arg-type]
    viewer.rows[7] = Row(version=2, body="", status="streaming", delta_text="")
    viewer.apply(delta(7, 3, 0, "Hi"), 1.0)
    viewer.apply(delta(7, 3, 0, "Hi"), 1.1)  # the same write again
    viewer.apply(delta(7, 5, 3, "x"), 1.2)  # write 4 never came: a gap
    viewer.apply(delta(7, 4, 2, " there"), 1.3)
    viewer.apply(delta(7, 4, 2, " there"), 1.4)
    viewer.apply(delta(7, 6, 8, "!"), 1.5)  # coalesced 5+6 would be fine too
    assert (viewer.duplicates, viewer.gaps, viewer.reordered) == (2, 1, 0)
    assert viewer.rows[7].delta_text == "Hi there!"
    viewer.apply(delta(7, 5, 8, "?"), 1.6)  # older than what the viewer holds
    assert viewer.reordered == 1


def test_model_server_logs_when_each_token_left(model_server: ModelServer) -> None:
    model_server.control(text="one two three", tokens_per_second=0, first_token_delay=0)
    httpx.get(f"{model_server.url}/_emissions?clear=1", timeout=10)
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "go [bench:k1]"}],
    }
    with httpx.stream(
        "POST", f"{model_server.url}/v1/chat/completions", json=body, timeout=10
    ) as response:
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    (stream,) = httpx.get(f"{model_server.url}/_emissions?clear=1", timeout=10).json()["streams"]
    assert stream["key"] == "go [bench:k1]"
    assert stream["tokens"] == ["one", " two", " three"]
    sent = [
        c["x_emitted_at"]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert stream["emitted_at"] == sent
    assert stream["received_at"] <= sent[0]
    found = metrics.emissions_by_marker([stream])
    assert found["k1"].ends == [3, 7, 13]
    assert httpx.get(f"{model_server.url}/_emissions", timeout=10).json()["streams"] == []


def test_round_figures_flag_a_viewer_whose_text_differs_from_the_row() -> None:
    reply = metrics.Reply(1, "r", "k", "Hi there", version=5, status="done", posted_at=0.0)
    emission = metrics.Emission(0.1, [2, 8], [1.0, 2.0])
    good = {"deltas": [(1.001, 0, 2, 3), (2.002, 2, 6, 4)], "status": "done", "version": 5}
    sockets = [
        {
            "replies": {1: {**good, "delta_text_sha1": digest(text)}},
            "gaps": 0,
            "reordered": 0,
            "duplicates": 0,
            "wire_bytes": 100,
            "payload_bytes": 90,
            "frames": 4,
        }
        for text in ("Hi there", "Hi")
    ]
    figures = metrics.round_figures(
        replies=[reply], sockets=sockets, emissions={"k": emission}, cpu={}, expected_sockets=2
    )
    assert figures["delivery"]["lost"] == 1
    assert not metrics.delivery_ok(figures)
    assert round(figures["latency_ms"]["p50"], 3) == 1.0
    assert round(figures["latency_ms"]["max"], 3) == 2.0
