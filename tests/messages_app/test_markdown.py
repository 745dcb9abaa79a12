"""The server's rendering of message bodies: Markdown, sanitised."""

from __future__ import annotations

import re

import pytest

from messages_app.markdown import render_markdown
from messages_app.templatetags.chat import avatar_hue, initial, model_label


@pytest.mark.parametrize(
    "payload",
    [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        '<a href="https://x.example" onclick="alert(1)">x</a>',
        "<iframe src=https://x.example></iframe>",
        "<svg onload=alert(1)>",
        "<style>body{display:none}</style>",
    ],
)
def test_render_markdown_shows_raw_html_as_text(payload: str) -> None:
    html = render_markdown(f"before {payload} after")
    # The only element is the paragraph; the payload is its text.
    assert {tag for tag in re.findall(r"</?([a-zA-Z][\w-]*)", html)} == {"p"}
    assert html.startswith("<p>before &lt;") and html.endswith(" after</p>\n")


@pytest.mark.parametrize(
    "link",
    [
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x](data:text/html,<script>alert(1)</script>)",
        "[x](vbscript:msgbox)",
        "<javascript:alert(1)>",
    ],
)
def test_render_markdown_drops_dangerous_links(link: str) -> None:
    html = render_markdown(link)
    assert "href" not in html


def test_render_markdown_links_open_in_a_new_tab_without_opener() -> None:
    html = render_markdown("see [docs](https://docs.example/a?b=1&c=2) or mail [me](mailto:a@b.c)")
    assert (
        '<a href="https://docs.example/a?b=1&amp;c=2" target="_blank" '
        'rel="noopener noreferrer">docs</a>'
    ) in html
    assert '<a href="mailto:a@b.c" target="_blank" rel="noopener noreferrer">me</a>' in html


def test_render_markdown_images_become_links() -> None:
    html = render_markdown("![a cat](https://img.example/cat.png)")
    assert "<img" not in html
    assert '<a href="https://img.example/cat.png" target="_blank"' in html and ">a cat</a>" in html


def test_render_markdown_code_lists_emphasis_tables_and_line_breaks() -> None:
    html = render_markdown(
        "**bold** _it_ ~~gone~~ `x<y`\nnext line\n\n"
        "```python\nif a < b:\n    print('<b>')\n```\n\n"
        "1. one\n2. two\n\n- a\n- b\n\n> quoted\n\n| h |\n|---|\n| c |"
    )
    assert "<strong>bold</strong> <em>it</em> <s>gone</s> <code>x&lt;y</code><br>" in html
    assert "next line" in html
    assert (
        "<pre><code class=\"language-python\">if a &lt; b:\n    print('&lt;b&gt;')\n</code></pre>"
        in html
    )
    assert "<ol>\n<li>one</li>\n<li>two</li>\n</ol>" in html
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in html
    assert "<blockquote>\n<p>quoted</p>\n</blockquote>" in html
    assert "<th>h</th>" in html and "<td>c</td>" in html


def test_render_markdown_of_empty_text_is_empty() -> None:
    assert render_markdown("") == ""


def test_model_label_names_the_demo_model() -> None:
    assert model_label("demo") == "demo model · no API key"
    assert model_label("gpt-4o-mini") == "gpt-4o-mini"


def test_avatar_hue_and_initial_are_stable() -> None:
    assert avatar_hue("Alice") == sum(map(ord, "Alice")) % 8
    assert avatar_hue(None) == 0
    assert initial(" bob") == "B"
    assert initial("") == "?"
    assert initial("😀 smile") == "😀"
