"""The limits as a person meets them in Chromium, against the real stack: the login
lockout on the real login page, a post refused with its wait, and a tab refused
because too many are open."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from limits import RateLimitItemPerMinute
from playwright.sync_api import Page, expect

from messages_app import limits
from messages_app.models import Message, Room, User
from tests.conftest import Stack
from tests.e2e.conftest import Browsing, expect_live

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

PASSWORD = "a-Strong-pass-9"


@pytest.fixture
def lounge(alice: User) -> Room:
    return Room.objects.create(name="Lounge", slug="lounge")


def log_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_login_page_locks_out_after_the_failures_and_says_how_long(
    browsing: Browsing, stack: Stack, alice: User
) -> None:
    browsing.expected_console.append("429")  # the lockout page's status
    # The tests hash passwords with MD5 for speed; the served app does not know it.
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    User.objects.filter(pk=alice.pk).update(password=hashed)
    page = browsing.page(None, "/accounts/login/")
    for _ in range(4):  # CHAT_LOGIN_FAILURE_LIMIT is 5 on the stack (the default)
        log_in(page, "alice", "not-her-password")
        expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username")
    log_in(page, "alice", "not-her-password")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Too many failed logins for this account or from your address")
    expect(alert).to_contain_text("try again in 15 min")
    # Her right password is refused too while the lockout lasts.
    log_in(page, "alice", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    expect(page).to_have_url(f"{stack.http_url}/accounts/login/")


def test_a_post_over_the_rate_shows_the_wait_and_keeps_its_text(
    browsing: Browsing, alice: User, lounge: Room
) -> None:
    page = browsing.room(alice, lounge.slug)
    # Alice's minute is used up (as by 60 posts): counted in the Redis the stack uses.
    limits.limiter().hit(
        RateLimitItemPerMinute(60, namespace="posts-minute"), f"user:{alice.pk}", cost=60
    )
    box = page.get_by_role("textbox", name="Message", exact=True)
    box.fill("one more")
    box.press("Enter")
    error = page.locator("#composer-error")
    expect(error).to_contain_text("You are posting too fast: at most 60 messages a minute.")
    expect(error).to_contain_text("Try again in")
    expect(box).to_have_value("one more")
    assert not Message.objects.filter(body="one more").exists()


def test_a_tab_over_the_socket_limit_says_why_and_does_not_connect(
    browsing: Browsing, alice: User, lounge: Room
) -> None:
    # Alice already has 20 sockets open (other tabs, other web processes).
    held = [limits.SocketLease(alice.pk) for _ in range(20)]
    for lease in held:
        lease.acquire()
    page = browsing.page(alice, f"/rooms/{lounge.slug}/")
    connection = page.locator("#connection")
    expect(connection).to_have_text("Too many open tabs: close one")
    expect(page.locator("#notice")).to_contain_text("You have 20 connections open")
    assert limits.open_sockets(alice.pk) == 20
    for lease in held:
        lease.release()
    # A tab opened now connects.
    expect_live(browsing.room(alice, lounge.slug))
