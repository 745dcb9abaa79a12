"""Incremental rendering of a growing reply equals a full rendering (issue 12, point 4).

``ChatMarkdown.live`` keeps the blocks of a reply that no later text can change and
renders again only its open end (markdown.js explains the rule). These tests feed
random Markdown, cut at random points as deltas cut it, to the real markdown.js
with the vendored marked and DOMPurify in headless Chromium, and compare the live
container's DOM with a full render of the same text after every cut and at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page, expect

from bench.replies import long_reply
from tests.e2e.conftest import wait_until
from tests.e2e.render_page import check_cuts, markdown_page
from worker.demo_llm import tokenize

pytestmark = [pytest.mark.e2e]

# Inline pieces, chosen for the constructs that interact across a cut: emphasis
# delimiters, code spans, links (inline, reference, autolinks, images), mentions,
# raw HTML, escapes, table pipes, and lone delimiters that later text may close.
WORDS = st.sampled_from(
    [
        "alpha", "beta", "gamma", "@gpt", "x@gpt", "@gpt-x", "@GPT,", "**bold**", "*em*",
        "_under_", "__strong__", "`code`", "``a`b``", "~~del~~", "[link](https://a.example/x)",
        "[ref]", "[ref][r2]", "[R2][]", "![img](https://i.example/p.png)", "<https://b.example>",
        "https://auto.example/p", "<b>raw</b>", "<script>x</script>", "&amp;", "&", "\\*",
        "foo_bar", "*", "**", "_", "`", "[", "]", "(", ")", "|", "<", ">", "~", "#", "1.",
        "[x](javascript:alert(1))", "mail@ex.example",
    ]
)  # fmt: skip
INLINE = st.lists(WORDS, min_size=1, max_size=7).map(" ".join)
LINES = st.lists(INLINE, min_size=1, max_size=3).map("\n".join)


@st.composite
def fence(draw: st.DrawFn) -> str:
    mark = draw(st.sampled_from(["```", "~~~", "````"]))
    lang = draw(st.sampled_from(["", "py", "js x"]))
    body = draw(st.lists(st.sampled_from(["x = 1", "", "  y", "```", "- a", "> q"]), max_size=4))
    closed = draw(st.booleans())
    return f"{mark}{lang}\n" + "\n".join(body) + (f"\n{mark}" if closed else "")


@st.composite
def bullet_list(draw: st.DrawFn) -> str:
    ordered = draw(st.booleans())
    items = draw(st.lists(LINES, min_size=1, max_size=4))
    joiner = draw(st.sampled_from(["\n", "\n\n"]))
    nested = draw(st.sampled_from(["", "\n  - nested", "\n    1. deeper", "\n\n  more"]))
    marks = [f"{i + 1}." if ordered else draw(st.sampled_from("-*+")) for i in range(len(items))]
    return joiner.join(f"{mark} {item}" for mark, item in zip(marks, items, strict=True)) + nested


@st.composite
def table(draw: st.DrawFn) -> str:
    cols = draw(st.integers(1, 3))
    head = "| " + " | ".join(draw(INLINE).replace("|", "") or "h" for _ in range(cols)) + " |"
    align = "|" + "|".join(draw(st.sampled_from(["---", ":--", "--:", ":-:"])) for _ in range(cols))
    rows = [
        "| "
        + " | ".join(draw(st.sampled_from(["1", "*b*", "`c`", "@gpt", ""])) for _ in range(cols))
        for _ in range(draw(st.integers(0, 3)))
    ]
    return "\n".join([head, align + "|", *rows])


BLOCKS = st.one_of(
    LINES,
    st.tuples(st.integers(1, 6), INLINE).map(lambda t: "#" * t[0] + " " + t[1]),
    st.tuples(INLINE, st.sampled_from(["===", "---", "-", "="])).map("\n".join),
    fence(),
    bullet_list(),
    table(),
    LINES.map(lambda text: "> " + text.replace("\n", "\n> ")),
    st.tuples(INLINE, INLINE).map(lambda t: f"> {t[0]}\n{t[1]}"),  # a lazy continuation line
    st.sampled_from(
        [
            "[ref]: https://r.example/one",
            '[r2]: https://r.example/two "Title"',
            "[REF]: <https://r.example/three>\n'title'",
            "[ref]:",
            "---",
            "***",
            "    indented code",
            "<div>\nhtml block",
            "<pre>\n\nkept\n</pre>",
            "<!-- comment",
            "\t tab",
            "1) one\n2) two",
            "- [ ] task\n- [x] done",
        ]
    ),
)
SEPARATORS = st.sampled_from(["\n", "\n\n", "\n\n\n", "\n \n", "\n\n    ", "\n\n- ", "\r\n\r\n"])


@st.composite
def documents(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(BLOCKS, SEPARATORS), min_size=1, max_size=7))
    return "".join(block + sep for block, sep in parts)


@st.composite
def cut_documents(draw: st.DrawFn) -> list[str]:
    """A document cut into deltas of random sizes (a cut may fall anywhere)."""
    text = draw(documents())
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    chunks, at, index = [], 0, 0
    while at < len(text):
        size = sizes[index % len(sizes)]
        chunks.append(text[at : at + size])
        at, index = at + size, index + 1
    return chunks


@pytest.fixture(scope="module")
def md_page(browser: Browser) -> Iterator[Page]:
    page = markdown_page(browser)
    yield page
    page.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chunks=cut_documents())
def test_live_render_equals_full_render_after_every_cut(md_page: Page, chunks: list[str]) -> None:
    result = check_cuts(md_page, chunks)
    assert result["text"] is None, result


@pytest.mark.parametrize(
    "chunks",
    [
        # A definition written after the link it resolves: the kept link changes.
        ["See [docs].\n\n", "Then more.\n\n", "Next ", "[docs]: https://d.example/", "a/b\n"],
        # A definition written before the link, then its URL grows.
        ["[docs]: https://d.", "example\n\nNow [docs] works.\n\n", "End"],
        # A fence left open swallows what follows, blank lines and all, until closed.
        ["```py\nx = 1\n\n", "Not a paragraph\n\n", "```\n\nA paragraph."],
        # A loose list goes on after a blank line with a new item.
        ["- one\n\n", "- two\n\n", "after"],
        # A setext underline turns the paragraph before it into a heading.
        ["Title\n", "===\n\nText"],
        # "\r\n" is one line break for marked, even when a delta splits it.
        ["one\r", "\n\r\ntwo\r\n\r\n", "three"],
        # A mention split across deltas.
        ["Hello @g", "pt, and x@gpt not.\n\n", "@gpt"],
    ],
)
def test_live_render_equals_full_render_at_known_hard_cuts(
    md_page: Page, chunks: list[str]
) -> None:
    result = check_cuts(md_page, chunks)
    assert result["text"] is None, result


def test_live_render_of_a_long_reply_at_token_cuts_keeps_all_but_its_open_end(
    md_page: Page,
) -> None:
    # A 12,000-character Markdown reply (headings, lists, code, tables), token by token,
    # each cut checked against a full render of the text so far (that reference costs
    # the square of the length; bench/browser.py streams 32,000 and checks the end).
    text = long_reply(12_000)
    tokens = tokenize(text)
    result = check_cuts(md_page, tokens)
    assert result["text"] is None, result
    # What is rendered again on each delta is the open end only: the blocks before
    # the last safe cut are kept, so all but a short end of the reply is kept.
    assert len(text) - int(result["kept"]) < 1_000


# --- the room page, five long replies at once --------------------------------------

# Wraps ChatMarkdown.live before any reply row exists, to count, per animation
# frame, how many times each row's body is rendered, and records the browser's
# long tasks (reported, never asserted: a slow machine must not fail a test).
COUNT_RENDERS = """
() => {
  window.__frame = 0;
  window.__rendersPerFrame = {};
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
  }).observe({ type: "longtask" });
  const tick = () => { window.__frame++; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  const live = ChatMarkdown.live;
  let next = 0;
  ChatMarkdown.live = (container) => {
    const renderer = live(container);
    const id = next++;
    const update = renderer.update.bind(renderer);
    renderer.update = (text) => {
      const key = `${window.__frame}:${id}`;
      window.__rendersPerFrame[key] = (window.__rendersPerFrame[key] || 0) + 1;
      return update(text);
    };
    return renderer;
  };
}
"""

# Each reply's body in the page against a full render of the row's text.
FULL_RENDER_DIFFS = """
(bodies) => bodies.filter(([id, text]) => {
  const shown = document.querySelector(`article[data-message-id="${id}"] .msg__body`);
  const full = document.createElement("div");
  full.replaceChildren(ChatMarkdown.render(text));
  return !shown || shown.innerHTML !== full.innerHTML;
}).map(([id]) => id)
"""


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_five_long_replies_stream_into_one_page_rendered_once_per_frame_and_exactly(
    browsing: Any, model_server: Any, make_user: Any
) -> None:
    from messages_app.models import Message, Room, Status

    text = long_reply(6_000, seed=7)
    users = [make_user(f"asker{n}", f"Asker {n}") for n in range(5)]
    room = Room.objects.create(name="Long answers", slug="long-answers", granularity="token")
    watcher = browsing.room(users[0], room.slug)
    watcher.evaluate(COUNT_RENDERS)
    model_server.control(text=text, tokens_per_second=0, first_token_delay=0, hold_after=0)
    askers = [browsing.room(user, room.slug) for user in users[1:]]
    for page in (watcher, *askers):
        box = page.get_by_role("textbox", name="Message", exact=True)
        box.fill("@gpt a long answer, please")
        box.press("Enter")
        expect(box).to_have_value("")
    # All five are claimed and held before their first token, then go at once.
    wait_until(lambda: model_server.stats()["held_streams"] == 5)
    model_server.control(release=True)

    wait_until(
        lambda: (
            Message.objects.filter(room=room, role="assistant", status=Status.DONE).count() == 5
        ),
        timeout=180,
    )
    replies = list(Message.objects.filter(room=room, role="assistant").order_by("id"))
    assert [r.body for r in replies] == [text] * 5
    for reply in replies:
        expect(watcher.locator(f'article[data-message-id="{reply.id}"]')).to_have_attribute(
            "data-status", "done", timeout=120_000
        )
    assert watcher.evaluate(FULL_RENDER_DIFFS, [[r.id, r.body] for r in replies]) == []
    renders = watcher.evaluate("window.__rendersPerFrame")
    assert renders, "no reply was rendered through ChatMarkdown.live"
    assert max(renders.values()) == 1, "a row's body was rendered twice in one frame"
    long_tasks = watcher.evaluate("window.__longTasks")
    print(f"long tasks (> 50 ms) while five replies streamed: {long_tasks}")  # noqa: T201
