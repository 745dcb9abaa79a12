from __future__ import annotations

import pytest

from messages_app.services import mentions_gpt


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
    assert mentions_gpt(body)


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
    assert not mentions_gpt(body)
