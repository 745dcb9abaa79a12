from __future__ import annotations

import pytest

from messages_app.mentions import mentioned_handles


@pytest.mark.parametrize(
    "body",
    [
        "@gpt",
        "@GPT, what now?",
        "hey @gpt?",
        "(@gpt)",
        "ok\n@Gpt: sum up",
        "@gpt's view",
        "thanks @gpt.",
    ],
)
def test_mentions_gpt_finds_a_mention_at_a_word_boundary(body: str) -> None:
    assert "gpt" in mentioned_handles(body)


@pytest.mark.parametrize(
    "body",
    [
        "me@gpt.com",
        "write to @gpt.com",
        "@gpt4 is another bot",
        "@gpt-bot",
        "@gpt_x",
        "gpt",
        "@ gpt",
        "@@gpt",
        "email: a.b@gpt",
    ],
)
def test_mentions_gpt_ignores_addresses_and_longer_handles(body: str) -> None:
    assert "gpt" not in mentioned_handles(body)


# --- several handles (issue 13): messages_app.mentions ------------------------------


@pytest.mark.parametrize(
    ("body", "handles"),
    [
        ("@gpt and @Claude, compare", ["gpt", "claude"]),
        ("@claude first, then @gpt, and @claude again", ["claude", "gpt"]),
        ("@LLAMA3 hi", ["llama3"]),
        ("(@a_b) [@c] {@d}", ["a_b", "c", "d"]),  # plain brackets are not a link
        ("**@gpt** and _@claude_", ["gpt", "claude"]),
        ("> @gpt quoted\n- @claude listed", ["gpt", "claude"]),
        ("line one\n@gpt on line two", ["gpt"]),
        ("", []),
        ("no mention here", []),
    ],
)
def test_mentioned_handles_lists_each_handle_once_in_the_order_first_mentioned(
    body: str, handles: list[str]
) -> None:
    assert mentioned_handles(body) == handles


@pytest.mark.parametrize(
    "body",
    [
        "me@claude.com",
        "write to @claude.ai",
        "@claude-bot",
        "@claude2x",  # a longer handle: not @claude
        "`@claude` in inline code",
        "``a @claude b``",
        "```\n@claude in a fence\n```",
        "~~~python\n# @claude\n~~~",
        "    @claude in an indented code block",
        "[@claude](https://example.com) in a link's text",
        "<https://x.test/@claude>",
        "@1claude",  # a handle starts with a letter
        "@@claude",
        "a.b@claude",
    ],
)
def test_mentioned_handles_ignores_code_links_addresses_and_longer_words(body: str) -> None:
    assert "claude" not in mentioned_handles(body)


def test_mentioned_handles_finds_prose_beside_code_but_not_the_code() -> None:
    body = "Ask `@gpt` nothing, but @claude yes:\n\n```\n@mistral\n```\n\nand @llama after."
    assert mentioned_handles(body) == ["claude", "llama"]
