"""Headless Chromium (Playwright) against the real stack: daphne, Celery, Redis, Postgres.

Playwright cannot download its browsers here: it drives Debian's ``chromium``
(the machines this runs on reach no network but the package registries).
Every room page is served under a strict Content-Security-Policy that forbids
inline script (added here, in the browser, when the app sends none), and a page
that breaks it, or throws, fails its test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from messages_app.models import User
from tests.conftest import Stack, session_cookie
from tests.e2e.render_page import CHROMIUM, CHROMIUM_ARGS

# Generous: a slow machine must never fail a test, only make it slower.
TIMEOUT_MS = 30_000
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Runs before any script of the page: records what must never happen.
WATCH_SCRIPT = """
window.__cspViolations = [];
window.__dialogs = 0;
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Playwright's sync API runs an event loop in this thread, so Django's ORM
    # refuses sync calls from tests and fixtures unless told it is safe.
    # Only for this module; the served app never gets it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as instance:
            expect.set_options(timeout=TIMEOUT_MS)
            yield instance


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield instance
    instance.close()


def _add_csp(route: Route) -> None:
    request = route.request
    if request.resource_type != "document" or request.method != "GET":
        route.fallback()
        return
    response = route.fetch(max_redirects=0)
    headers = dict(response.headers)
    # The app's own policy, once it sends one, is the one under test.
    headers.setdefault("content-security-policy", CSP)
    route.fulfill(response=response, headers=headers)


@dataclass
class Browsing:
    """Opens pages as users of the stack, and checks what each page did."""

    browser: Browser
    stack: Stack
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Console errors a test causes on purpose (text fragments).
    expected_console: list[str] = field(
        # While a test has stopped the server, the page's reconnects (and its
        # check of the page itself) fail, and the browser logs them.
        default_factory=lambda: ["WebSocket", "ERR_CONNECTION_REFUSED"]
    )

    def context(
        self, user: User | None = None, viewport: dict[str, int] | None = None
    ) -> BrowserContext:
        context = self.browser.new_context(
            base_url=self.stack.http_url, viewport=viewport or DESKTOP
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(WATCH_SCRIPT)
        context.route("**/rooms/**", _add_csp)
        # A page fulfilled by the route above has no server address, so Chromium's
        # Local Network Access checks take it for a public page and block its
        # socket to 127.0.0.1; allow it, as a user would.
        context.grant_permissions(["local-network-access"])
        if user is not None:
            name, _, value = session_cookie(user).partition("=")
            context.add_cookies([{"name": name, "value": value, "url": self.stack.http_url}])
        self.contexts.append(context)
        return context

    def page(
        self, user: User | None = None, path: str = "/", viewport: dict[str, int] | None = None
    ) -> Page:
        """A new browser (context) signed in as ``user``, at ``path``."""
        page = self.context(user, viewport).new_page()
        self.watch(page)
        page.goto(path)
        return page

    def watch(self, page: Page) -> None:
        label = f"page {len(self.pages) + 1}"

        def on_console(message: ConsoleMessage) -> None:
            text = message.text
            expected = any(fragment in text for fragment in self.expected_console)
            if message.type == "error" and not expected:
                self.problems.append(f"{label} console error: {text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"{label} error: {error}"))
        page.on("dialog", lambda dialog: self.problems.append(f"{label} dialog: {dialog.message}"))
        self.pages.append(page)

    def room(self, user: User, slug: str, viewport: dict[str, int] | None = None) -> Page:
        """``user``'s browser on the room page, once its socket is live."""
        page = self.page(user, f"/rooms/{slug}/", viewport)
        expect_live(page)
        return page

    def check_pages(self) -> None:
        for index, page in enumerate(self.pages, start=1):
            if page.is_closed():
                continue
            violations = page.evaluate("window.__cspViolations || []")
            if violations:
                self.problems.append(f"page {index} CSP violations: {violations}")
        assert self.problems == [], "\n".join(self.problems)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser: Browser, stack: Stack) -> Iterator[Browsing]:
    session = Browsing(browser=browser, stack=stack)
    try:
        yield session
        session.check_pages()
    finally:
        session.close()


@pytest.fixture(autouse=True)
def _show_stack_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        print(stack.logs())  # noqa: T201 - shown by pytest with the failure


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def expect_live(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT_MS / 1000) -> Any:
    """Poll ``predicate`` (something outside the browser: the model server, the database)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {predicate}")
        time.sleep(0.05)
