from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.chunker import GRANULARITIES, Chunker
from worker.demo_llm import tokenize


def run(granularity: str, tokens: list[str]) -> list[str]:
    chunker = Chunker(granularity)
    flushed: list[str] = []
    for token in tokens:
        flushed.extend(chunker.feed(token))
    flushed.append(chunker.finish())
    return flushed


# Text with the characters that matter: spaces, newlines, terminators, emoji.
pieces = st.lists(
    st.sampled_from(
        list("ab Z.!?…\n\t3,'\")")
        + ["é", "日本", "。", "👍🏽", "👨‍👩‍👧", "\u200d", "\u00a0", "..."]
    )
    | st.characters(blacklist_categories=("Cs",)),
    max_size=8,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(pieces, max_size=40), granularity=st.sampled_from(GRANULARITIES))
def test_chunker_concatenation_equals_input(tokens: list[str], granularity: str) -> None:
    flushed = run(granularity, tokens)
    assert "".join(flushed) == "".join(tokens)
    # Every flush before the final remainder carries text.
    assert all(flushed[:-1])


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_chunker_granularities_order_by_number_of_writes(text: str) -> None:
    tokens = tokenize(text)
    counts = {g: len([f for f in run(g, tokens) if f]) for g in GRANULARITIES}
    assert counts["token"] >= counts["word"]
    # At most one write per token, plus the rest at the end. Sentence mode is not
    # always below word mode: it also cuts inside a token, at a newline or a CJK
    # full stop (see the test below), which word mode never does.
    assert counts["sentence"] <= len(tokens) + 1


def test_chunker_sentence_may_cut_inside_a_token() -> None:
    # Found by the property above: a token holding a sentence end.
    assert run("sentence", ["a。b"]) == ["a。", "b"]
    assert run("token", ["a。b"]) == ["a。b", ""]


def test_chunker_token_flushes_every_token() -> None:
    assert run("token", ["Hel", "lo", " wor", "ld"]) == ["Hel", "lo", " wor", "ld", ""]


def test_chunker_word_flushes_at_word_boundaries() -> None:
    assert run("word", ["Hel", "lo", " wor", "ld", "!", " Bye"]) == ["Hello ", "world! ", "Bye"]


def test_chunker_word_whitespace_only_tokens_lead_the_next_word() -> None:
    assert run("word", ["Hi", " ", " ", "\n", "there", " you"]) == ["Hi ", " \nthere ", "you"]


def test_chunker_word_leading_whitespace_is_not_a_word() -> None:
    assert run("word", ["  ", "\n", "Hi", " there"]) == ["  \nHi ", "there"]


def test_chunker_sentence_flushes_at_sentence_ends_and_newlines() -> None:
    tokens = [
        "It",
        " is",
        " 3",
        ".",
        "14",
        " wide",
        ".",
        " Is",
        " it",
        "?",
        " Yes",
        "!\n",
        "- a",
        "\n",
        "end",
    ]
    assert run("sentence", tokens) == [
        "It is 3.14 wide. ",
        "Is it? ",
        "Yes!\n",
        "- a\n",
        "end",
    ]


def test_chunker_sentence_ellipsis_ends_a_sentence_but_abbreviations_do_not() -> None:
    tokens = [
        "Dr",
        ".",
        " Smith",
        " and",
        " J",
        ".",
        " Doe",
        " came",
        ", e",
        ".g",
        ".",
        " late",
        "...",
        " Then",
        " left",
        ".",
    ]
    assert run("sentence", tokens) == [
        "Dr. Smith and J. Doe came, e.g. late... ",
        "Then left.",
    ]


def test_chunker_sentence_numbered_list_marker_is_not_a_sentence_end() -> None:
    assert run("sentence", ["1", ".", " First", " item", "\n", "2", ".", " Next"]) == [
        "1. First item\n",
        "2. Next",
    ]


def test_chunker_sentence_without_an_end_flushes_only_at_finish() -> None:
    assert run("sentence", ["no", " end", " here"]) == ["no end here"]


def test_chunker_sentence_closing_quote_stays_with_its_sentence() -> None:
    assert run("sentence", ["He", " said", ' "go', '."', " Then"]) == ['He said "go." ', "Then"]


def test_chunker_cjk_full_stop_ends_a_sentence() -> None:
    assert run("sentence", ["你好", "。", "再见", "。"]) == ["你好。", "再见。", ""]


def test_chunker_empty_stream_flushes_nothing() -> None:
    for granularity in GRANULARITIES:
        assert run(granularity, []) == [""]
        assert run(granularity, ["", ""]) == [""]


def test_chunker_joins_a_surrogate_pair_split_across_tokens() -> None:
    # Some servers split an astral character (UTF-16 pair) across two chunks.
    for granularity in GRANULARITIES:
        flushed = run(granularity, ["ok ", "\ud83d", "\ude00", " done"])
        assert "".join(flushed) == "ok 😀 done"
        assert all("\ud800" > ch or ch > "\udfff" for ch in "".join(flushed))


def test_chunker_token_never_ends_a_write_on_a_zero_width_joiner() -> None:
    flushed = run("token", ["👨", "\u200d", "👩", "\u200d", "👧", " hi"])
    assert "".join(flushed) == "👨‍👩‍👧 hi"
    assert not any(f.endswith("\u200d") for f in flushed)


def test_chunker_multibyte_emoji_inside_words_never_split_a_code_point() -> None:
    flushed = run("word", ["caf", "é", " 👍", "🏽", " ok"])
    assert flushed == ["café ", "👍🏽 ", "ok"]


def test_chunker_rejects_unknown_granularity() -> None:
    with pytest.raises(ValueError, match="unknown granularity 'line'"):
        Chunker("line")
