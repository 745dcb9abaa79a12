"""The benchmark's quick mode, run for real: it must deliver every delta to every
viewer, in order, ending with the database text. Speed is never asserted here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT

pytestmark = pytest.mark.integration


def test_bench_quick_delivers_every_delta_in_order_on_both_paths(tmp_path: Path) -> None:
    run_id = re.sub(r"\W", "_", os.environ.get("CHAT_TEST_ID", "chat_test")) + "_smoke"
    figures = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--run-id",
            run_id,
            "--json",
            str(figures),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        process.terminate()  # the bench stops its processes and drops its database
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the quick benchmark took over 240 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    results = json.loads(figures.read_text())
    rounds = [
        (scenario["name"], r) for scenario in results["scenarios"] for r in scenario["rounds"]
    ]
    # both paths, every granularity, in each quick scenario
    assert {(name, r["path"], r["granularity"]) for name, r in rounds} == {
        (name, path, granularity)
        for name in ("1×1", "3×10")
        for path in ("floor", "app")
        for granularity in ("token", "word", "sentence")
    }
    for name, r in rounds:
        delivery = r["delivery"]
        where = f"{name} {r['path']} {r['granularity']}: {delivery}"
        assert delivery["sockets"] == delivery["sockets_expected"] > 0, where
        assert delivery["replies"] > 0, where
        assert delivery["lost"] == 0, where  # no gap, no missing reply, text == database
        assert delivery["reordered"] == 0, where
        assert delivery["duplicated"] == 0, where
        assert delivery["not_done"] == 0, where
        assert r["latency_ms"]["n"] > 0, where  # every delta was matched to a model token
        if r["path"] == "app":
            # every row written: insert, claim, one per flush, finish
            assert r["db_writes_per_reply"] >= 4, where
