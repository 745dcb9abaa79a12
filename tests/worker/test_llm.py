"""Reading stream chunks as JSON objects (worker.llm._piece)."""

from __future__ import annotations

import pytest

from worker import llm


def test_piece_takes_text_usage_and_model() -> None:
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    assert llm._piece(chunk) == llm.Piece(text="Hi", model="m")
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert llm._piece({"model": "m", "choices": [], "usage": usage}) == llm.Piece(
        usage=usage, model="m"
    )


def test_piece_of_a_role_or_finish_chunk_has_no_text() -> None:
    assert llm._piece({"choices": [{"delta": {"role": "assistant", "content": None}}]}) == (
        llm.Piece()
    )
    assert llm._piece({"choices": [{"delta": {}, "finish_reason": "stop"}]}) == llm.Piece(
        finish_reason="stop"
    )


@pytest.mark.parametrize("chunk", [[1, 2], "text", {"choices": [{"delta": {"content": 7}}]}])
def test_piece_refuses_what_is_not_a_chunk(chunk: object) -> None:
    with pytest.raises(ValueError):
        llm._piece(chunk)
