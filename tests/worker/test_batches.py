"""ChatStream.batches: what queued up while the caller was busy comes as one batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from worker import llm


class FakeStream(llm.ChatStream):
    """Pieces from a list, each released when the test says so."""

    def __init__(self, texts: list[str], fail: Exception | None = None) -> None:
        super().__init__([], llm.Endpoint(None, "k", "m"))
        self.texts = texts
        self.fail = fail
        self.release = threading.Semaphore(0)

    def __iter__(self) -> Iterator[llm.Piece]:
        for text in self.texts:
            self.release.acquire()
            if self.closed:
                return
            yield llm.Piece(text=text)
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        super().close()
        self.release.release()  # as a closed socket wakes the reader


def test_batches_are_single_pieces_when_the_caller_keeps_up() -> None:
    stream = FakeStream(["a", "b", "c"])
    seen: list[list[str]] = []
    stream.release.release()
    for batch in stream.batches():
        seen.append([piece.text for piece in batch])
        if len(seen) < 3:
            stream.release.release()
    assert seen == [["a"], ["b"], ["c"]]


def test_on_wait_is_called_once_before_each_wait_for_a_piece() -> None:
    stream = FakeStream(["a", "b"])
    waits: list[float] = []
    batches = stream.batches(on_wait=lambda: waits.append(time.monotonic()))
    threading.Timer(0.2, stream.release.release).start()
    assert [p.text for p in next(batches)] == ["a"]
    assert len(waits) == 1  # nothing had arrived: it was told once, then waited
    stream.release.release()
    time.sleep(0.1)  # "b" arrives while the caller handles "a": no wait, no call
    assert [p.text for p in next(batches)] == ["b"]
    assert len(waits) == 1
    assert list(batches) == []  # the end had arrived too: no wait, no call
    assert len(waits) == 1


def test_pieces_that_arrive_during_a_slow_write_come_together() -> None:
    stream = FakeStream(["a", "b", "c", "d"])
    seen: list[list[str]] = []
    batches = stream.batches()
    stream.release.release()
    seen.append([p.text for p in next(batches)])
    for _ in range(3):  # three pieces arrive while the caller "writes" "a"
        stream.release.release()
    time.sleep(0.2)
    seen += [[p.text for p in batch] for batch in batches]
    assert seen == [["a"], ["b", "c", "d"]]


def test_an_error_is_raised_after_the_pieces_before_it() -> None:
    stream = FakeStream(["a", "b"], fail=llm.LLMError("boom"))
    for _ in range(2):
        stream.release.release()
    seen: list[str] = []
    with pytest.raises(llm.LLMError, match="boom"):
        for batch in stream.batches():
            seen += [piece.text for piece in batch]
    assert seen == ["a", "b"]


def test_stopping_early_closes_the_stream() -> None:
    stream = FakeStream(["a", "b"])
    stream.release.release()
    for _batch in stream.batches():
        break
    assert stream.closed
