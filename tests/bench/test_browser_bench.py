"""The browser benchmark (bench/browser.py) runs, checks what it measures, and
refuses bad arguments. Its figures are reported, never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import browser

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]


def test_browser_bench_measures_every_mode_and_checks_the_final_dom(tmp_path: Path) -> None:
    figures = browser.run((400, 1200), room_chars=400)
    assert set(figures["lengths"]) == {400, 1200}
    for modes in figures["lengths"].values():
        assert set(modes) == set(browser.MODES)
        for mode in browser.MODES:
            assert modes[mode]["exact"] is True
            assert modes[mode]["deltas"] > 10
            assert modes[mode]["total_ms"] >= 0
    for mode in ("before", "after"):
        room = figures["room"][mode]
        assert room["exact"] is True
        assert room["replies"] == browser.ROOM_REPLIES
        assert room["deltas"] > browser.ROOM_REPLIES * 10
    report = browser.markdown(figures)
    assert "| 1,200 |" in report and "| after | 400 |" in report
    browser.plot(figures, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lengths", "2000,lots"], "comma-separated character counts"),
        (["--lengths", "50"], "at least 100 characters"),
        (["--room-chars", "10"], "at least 100 characters"),
    ],
)
def test_browser_bench_refuses_bad_arguments(args: list[str], message: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "bench.browser", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
