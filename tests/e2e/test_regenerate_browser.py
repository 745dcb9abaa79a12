"""Regenerate, the attempts pager and usage in a real browser (issue 13): headless
Chromium against daphne, a Celery worker, Redis, Postgres and the test model server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from messages_app.models import Message, ReplyRevision, Room, Status, User
from tests.e2e.conftest import Browsing, wait_until
from tests.live import ModelServer
from tests.rows import stored

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

FIRST = "The first answer, plain words."
SECOND = "A second answer that streams in after the regenerate button."


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def send(page: Page, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def reply(page: Page) -> Locator:
    return page.locator("article[data-role='assistant']").last


def reply_row() -> Message:
    return wait_until(lambda: Message.objects.filter(role="assistant").order_by("-id").first())


def finished(reply_id: int) -> Message:
    return wait_until(
        lambda: (row := stored(reply_id)).status in (Status.DONE, Status.FAILED) and row
    )


def test_regenerate_streams_a_new_attempt_and_the_pager_shows_the_old_one(
    browsing: Browsing, model_server: ModelServer, alice: User, bob: User, room: Room
) -> None:
    model_server.control(text=FIRST, tokens_per_second=0, first_token_delay=0)
    page = browsing.room(alice, room.slug)
    watcher = browsing.room(bob, room.slug)
    send(page, "@gpt say something")
    article = reply(page)
    expect(article.locator(".msg__body")).to_have_text(FIRST)
    row = finished(reply_row().pk)
    # The usage line: assistant, model, tokens, duration, once the reply finished.
    usage = article.locator(".msg__usage")
    expect(usage).to_be_visible()
    expect(usage).to_contain_text(f"GPT · {row.model} · ")
    expect(usage).to_contain_text(
        f"{row.prompt_tokens} + {row.completion_tokens} = {row.total_tokens} tokens"
    )
    expect(usage).to_have_text(re.compile(r" · \d+(\.\d)? s$"))
    assert row.model and row.total_tokens
    # No pager yet: a single attempt. Bob (not the asker, a plain member) has no button.
    expect(article.locator(".msg__pager")).to_be_hidden()
    expect(reply(watcher).get_by_role("button", name="Regenerate")).to_be_hidden()

    # Regenerate: the same article streams a new attempt while the model holds.
    model_server.control(text=SECOND, tokens_per_second=100, first_token_delay=0, hold_after=4)
    article.get_by_role("button", name="Regenerate").click()
    expect(article.locator(".msg__pager-label")).to_have_text("2 / 2")
    expect(article).to_have_attribute("data-status", "streaming")
    expect(article.locator(".msg__usage")).to_be_hidden()  # nothing known mid-stream
    expect(reply(watcher).locator(".msg__pager-label")).to_have_text("2 / 2")
    model_server.control(release=True, hold_after=-1)
    expect(article.locator(".msg__body")).to_have_text(SECOND)
    expect(article).to_have_attribute("data-status", "done")
    expect(reply(watcher).locator(".msg__body")).to_have_text(SECOND)
    assert page.locator("article[data-role='assistant']").count() == 1
    again = finished(row.pk)
    expect(usage).to_contain_text(f"= {again.total_tokens} tokens")

    # The pager pages back to the first attempt's text and usage, and forward again.
    article.get_by_role("button", name="Earlier attempt").click()
    expect(article.locator(".msg__pager-label")).to_have_text("1 / 2")
    expect(article.locator(".msg__body")).to_have_text(FIRST)
    expect(usage).to_contain_text(f"= {row.total_tokens} tokens")
    expect(article.get_by_role("button", name="Earlier attempt")).to_be_disabled()
    article.get_by_role("button", name="Later attempt").click()
    expect(article.locator(".msg__pager-label")).to_have_text("2 / 2")
    expect(article.locator(".msg__body")).to_have_text(SECOND)
    assert list(ReplyRevision.objects.filter(message_id=row.pk).values_list("text", flat=True)) == [
        FIRST
    ]


def test_usage_page_shows_todays_tokens_from_the_header_link(
    browsing: Browsing, model_server: ModelServer, alice: User, room: Room
) -> None:
    model_server.control(text=FIRST, tokens_per_second=0, first_token_delay=0)
    page = browsing.room(alice, room.slug)
    send(page, "@gpt count my tokens")
    expect(reply(page).locator(".msg__usage")).to_be_visible()
    row = finished(reply_row().pk)
    page.get_by_role("link", name="Usage").click()
    expect(page).to_have_url(re.compile(r"/usage/$"))
    expect(page.get_by_role("heading", name="Your @gpt usage")).to_be_visible()
    today = page.locator("tr[data-usage='today']")
    expect(today.locator("td[data-usage='total']")).to_have_text(str(row.total_tokens))
    expect(today.locator("td").first).to_have_text("1")  # one reply
