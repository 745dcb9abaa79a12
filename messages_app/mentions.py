"""Which handles a message mentions: the words after ``@`` that call an assistant.

A mention is ``@handle`` as a word of its own, in any case: not inside an address
(``me@gpt.com``), a longer handle (``@gpt4``, ``@gpt-bot``) or a domain
(``@gpt.com``). It counts only in the message's prose, as the page highlights it:
not in inline code, a fenced or indented code block, raw HTML or a link's text
(the Markdown is parsed with the same parser as the page the server renders).
The browser's ``markdown.js`` highlights by the same rule.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

# The handle spelled as Assistant.handle allows (models.HANDLE_RE), any case; the
# look-arounds are those of the original ``@gpt`` rule.
MENTION_RE = re.compile(r"(?<![\w@.+-])@([a-z][a-z0-9_]*)(?![\w-]|\.\w)", re.IGNORECASE)

_PARSER = MarkdownIt("commonmark", {"html": False})
_PARSER.enable(["table", "strikethrough"])


def _prose(children: list[Token]) -> str:
    """The inline text outside code spans and links; what is left out becomes a space,
    so that no mention is made of text joined across it."""
    parts: list[str] = []
    in_link = 0
    for token in children:
        if token.type == "link_open":
            in_link += 1
            parts.append(" ")
        elif token.type == "link_close":
            in_link = max(0, in_link - 1)
            parts.append(" ")
        elif in_link:
            continue
        elif token.type in ("text", "text_special"):
            parts.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif token.type in ("code_inline", "html_inline", "image"):
            parts.append(" ")
    return "".join(parts)


def mentioned_handles(body: str) -> list[str]:
    """The handles ``body`` mentions outside code, lower-cased, each once, in the
    order of their first mention."""
    if "@" not in body:
        return []
    seen: dict[str, None] = {}
    for token in _PARSER.parse(body):
        if token.type != "inline" or not token.children:
            continue  # code blocks and fences are block tokens: never looked at
        for match in MENTION_RE.finditer(_prose(token.children)):
            seen.setdefault(match.group(1).lower(), None)
    return list(seen)
