"""The WAL benchmark (bench/wal.py) on the test database: it writes the reply's
exact text in both designs, and WAL bytes (counted by Postgres per statement, not
timed) show the chunk rows meet issue 12's target where the old append did not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import wal
from tests import live


@pytest.mark.django_db
def test_wal_bench_chunk_rows_meet_the_target_the_old_append_misses(tmp_path: Path) -> None:
    figures = wal.measure((2_000,))
    reply = figures["lengths"][2_000]
    assert reply["writes"] > 300  # token granularity: one write per token
    assert reply["after"]["meets_target"] is True
    assert reply["before"]["meets_target"] is False
    assert reply["after"]["wal"] * 4 < reply["before"]["wal"]
    assert reply["after"]["folds"] >= 1
    assert "| 2,000 |" in wal.markdown(figures)
    wal.plot(figures, tmp_path / "wal.png")
    assert (tmp_path / "wal.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lengths", "x"], "comma-separated character counts"),
        (["--lengths", "99"], "at least 100 characters"),
    ],
)
def test_wal_bench_refuses_bad_arguments(args: list[str], message: str) -> None:
    result = live.run_module("bench.wal", *args)
    assert result.returncode == 2
    assert message in result.stderr
