"""A bare page holding the room's real Markdown code: the vendored ``marked`` and
``DOMPurify`` and ``markdown.js``, exactly the files the room page loads, with no
server. The exactness tests render into it directly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page

# Debian's Chromium (Playwright cannot download its own browsers here), with
# the flags that keep it off the network this machine does not reach.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

STATIC = Path(__file__).resolve().parents[2] / "messages_app" / "static" / "messages_app"
# In the order the room template loads them.
SCRIPTS = (
    STATIC / "vendor" / "marked-18.2.1" / "marked.umd.js",
    STATIC / "vendor" / "dompurify-3.4.18" / "purify.min.js",
    STATIC / "js" / "markdown.js",
)

# Feeds `chunks` to a live renderer one by one (as deltas arrive) and, after each,
# compares its container with a full render of the text so far. Returns the first
# difference (or null) and what the live renderer kept at the end.
CHECK_CUTS = """
(chunks) => {
  const box = document.createElement("div");
  const live = ChatMarkdown.live(box);
  const full = document.createElement("div");
  let text = "";
  for (const chunk of chunks) {
    text += chunk;
    live.update(text);
    full.replaceChildren(ChatMarkdown.render(text));
    if (box.innerHTML !== full.innerHTML) {
      return { text, live: box.innerHTML, full: full.innerHTML, kept: live.kept.length };
    }
  }
  return { text: null, html: box.innerHTML, kept: live.kept.length };
}
"""


def markdown_page(browser: Browser) -> Page:
    """A new page with the room's Markdown scripts loaded and nothing else."""
    page = browser.new_page()
    page.set_content("<!doctype html><html><head><meta charset='utf-8'></head><body></body></html>")
    for script in SCRIPTS:
        page.add_script_tag(path=str(script))
    return page


def check_cuts(page: Page, chunks: list[str]) -> dict[str, object]:
    """Render ``chunks`` incrementally on ``page`` (see CHECK_CUTS)."""
    return page.evaluate(CHECK_CUTS, chunks)
