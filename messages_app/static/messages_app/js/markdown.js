/*
 * Message bodies as sanitised HTML in the browser: Markdown by the vendored
 * `marked`, then `DOMPurify`. The same rules as messages_app/markdown.py (the
 * server's rendering of the first page):
 * - raw HTML in a message is shown as text, never interpreted;
 * - images become plain links (no remote fetches from someone else's message);
 * - links open in a new tab with rel="noopener noreferrer";
 * - only the tags, attributes and URL schemes below survive.
 * Exposes window.ChatMarkdown:
 * - render(text) -> DocumentFragment: the whole text, every time (the reference);
 * - live(container) -> {update(text), reset()}: keeps `container` equal to
 *   render(text) for a text that grows, doing work for the end of it only (below).
 */
(function () {
  "use strict";

  const ALLOWED_TAGS = [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
  ];
  const ALLOWED_ATTR = ["href", "title", "class", "start", "align"];
  // http(s), mailto and relative URLs; nothing else (no javascript:, data:, ...).
  const ALLOWED_URI_REGEXP = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
  // "@handle" as a word of its own, as messages_app/mentions.py's MENTION_RE; it
  // is highlighted when the handle is an active assistant's (the room page lists
  // them in json_script "assistant-handles"; without it, "@gpt").
  const MENTION_SPLIT = /((?<![\w@.+-])@[a-z][a-z0-9_]*(?![\w-]|\.\w))/i;
  const handlesData = document.getElementById("assistant-handles");
  const HANDLES = new Set(
    (handlesData ? JSON.parse(handlesData.textContent) : ["gpt"]).map((h) => h.toLowerCase()),
  );
  function isHandle(part) {
    return HANDLES.has(part.slice(1).toLowerCase());
  }

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (ch) => ESCAPES[ch]);
  }

  const parser = new marked.Marked({
    gfm: true,
    breaks: true,
    renderer: {
      html(token) {
        return escapeHtml(token.text);
      },
      image(token) {
        const href = token.href || "";
        return `<a href="${escapeHtml(href)}">${escapeHtml(token.text || href)}</a>`;
      },
    },
  });

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  function highlightMentions(fragment) {
    const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT, {
      acceptNode(node) {
        return node.parentElement && node.parentElement.closest("code, pre, a")
          ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_ACCEPT;
      },
    });
    const hits = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.data.includes("@") && node.data.split(MENTION_SPLIT).some((p, i) => i % 2 === 1 && isHandle(p))) {
        hits.push(node);
      }
    }
    for (const node of hits) {
      const parts = node.data.split(MENTION_SPLIT);
      const replacement = document.createDocumentFragment();
      parts.forEach((part, index) => {
        if (index % 2 === 1 && isHandle(part)) {
          const span = document.createElement("span");
          span.className = "mention";
          span.textContent = part;
          replacement.appendChild(span);
        } else if (part) {
          replacement.appendChild(document.createTextNode(part));
        }
      });
      node.replaceWith(replacement);
    }
    return fragment;
  }

  function sanitise(html) {
    const fragment = DOMPurify.sanitize(html, {
      ALLOWED_TAGS,
      ALLOWED_ATTR,
      ALLOWED_URI_REGEXP,
      RETURN_DOM_FRAGMENT: true,
    });
    return highlightMentions(fragment);
  }

  function render(text) {
    return sanitise(parser.parse(text || ""));
  }

  // --- rendering a growing text: only its open end ------------------------------
  //
  // A streaming reply grows by appends. Rendering all of it on every delta costs
  // time in proportion to its length (docs/benchmarks.md, "The browser"). Instead
  // the text is cut, once and for all, at boundaries between top-level blocks that
  // no later text can change: what is before a cut is rendered once and its nodes
  // kept; only the text after the last cut (the open block, usually one) is lexed,
  // rendered and sanitised again. With the same `marked` instance, the same
  // DOMPurify config and the same mention highlighting, so the container's DOM is
  // exactly render(text)'s.
  //
  // Why a cut is safe. marked lexes top-level blocks one after another from the
  // start, each tokenizer looking only at the text from its own start on. A cut is
  // made before token j (offset b in the text after the last cut) only when
  //  1. the text before b ends with a blank line ("\n", spaces or tabs, "\n"):
  //     paragraphs, tables, block quotes (lazy lines included), setext headings,
  //     link-definition titles and HTML blocks of kind 6/7 end there; an unclosed
  //     fence, <pre>/<script>/<style>/<textarea>, comment, <?...?> or <!...> block
  //     runs to the end of the text, so it is never followed by a token j at all;
  //  2. the character at b is there and is not white space: indented code and list
  //     items continue past a blank line only with an indented line;
  //  3. if the last block before b is a list, that character is not a list marker
  //     (*, +, -, or a digit): a list continues past a blank line with a new item;
  //  4. token j - 1 is not a paragraph or text: marked merges a following
  //     indented code, definition or paragraph into one of those;
  //  5. the text after the last cut has no "\r" (marked turns "\r\n" into "\n", so
  //     offsets would no longer be the text's), and its tokens' raw texts add up to
  //     it exactly (else nothing is cut).
  // Then for every text appended later, marked yields the same tokens before b,
  // and lexing from b alone yields the same tokens as lexing in place (the only
  // state carried from one top-level token to the next is the previous token,
  // consulted for the merges of rule 4, and the link definitions). The HTML of a
  // token list is the concatenation of its tokens' HTML (a "space" token is ""), and
  // each block's HTML is balanced, so sanitising the pieces apart gives the same
  // nodes as sanitising them together.
  //
  // Link definitions are the one thing later text changes in earlier blocks: a
  // "[foo]: /url" anywhere defines what "[foo]" means everywhere. The text after
  // the last cut is lexed with the definitions of the text before it (first one
  // wins, as marked does), and when the definitions known after lexing differ from
  // those the kept blocks were rendered with, everything is rendered again from
  // the start. That happens only while a definition is being written.
  const LIST_MARKER = /[*+\-0-9]/;

  function parserOptions() {
    // What parser.parse() uses: the instance's defaults (our renderer included).
    return { ...parser.defaults };
  }

  function endsWithBlankLine(text, end) {
    let i = end - 1;
    if (i < 0 || text[i] !== "\n") return false;
    i -= 1;
    while (i >= 0 && (text[i] === " " || text[i] === "\t")) i -= 1;
    return i >= 0 && text[i] === "\n";
  }

  function sameLinks(a, b) {
    const keys = Object.keys(a);
    if (keys.length !== Object.keys(b).length) return false;
    return keys.every(
      (key) => b[key] !== undefined && a[key].href === b[key].href && a[key].title === b[key].title,
    );
  }

  function copyLinks(links) {
    const copy = Object.create(null);
    for (const key of Object.keys(links)) copy[key] = { ...links[key] };
    return copy;
  }

  /** The index of the first token after the last safe cut in `tokens` (0: none). */
  function lastCut(tail, tokens) {
    if (tail.includes("\r")) return 0;
    const starts = [];
    let offset = 0;
    for (const token of tokens) {
      starts.push(offset);
      offset += token.raw.length;
    }
    if (offset !== tail.length) return 0;
    for (let j = tokens.length - 1; j >= 1; j -= 1) {
      const at = starts[j];
      const next = tail[at];
      if (next === undefined || next === " " || next === "\t" || next === "\n") continue;
      const before = tokens[j - 1].type;
      if (before === "paragraph" || before === "text") continue;
      if (!endsWithBlankLine(tail, at)) continue;
      let block = j - 1;
      while (block >= 0 && tokens[block].type === "space") block -= 1;
      if (block >= 0 && tokens[block].type === "list" && LIST_MARKER.test(next)) continue;
      return j;
    }
    return 0;
  }

  class LiveMarkdown {
    constructor(container) {
      this.container = container;
      this.reset();
    }

    /** Forget what was rendered; the next update() starts from an empty container. */
    reset() {
      this.owned = false; // the container holds what someone else put there
      this.kept = ""; // the text before the last cut, whose nodes are kept
      this.keptLinks = Object.create(null); // the definitions in it
      this.renderedWith = Object.create(null); // all definitions known when it was rendered
      this.tailNodes = [];
      this.tailHtml = null;
    }

    /** Make the container show render(text). */
    update(text) {
      text = text || "";
      if (!this.owned || !text.startsWith(this.kept)) {
        this.reset();
        this.container.replaceChildren();
        this.owned = true;
      }
      const options = parserOptions();
      const tail = text.slice(this.kept.length);
      const lexer = new marked.Lexer(options);
      Object.assign(lexer.tokens.links, copyLinks(this.keptLinks));
      const tokens = lexer.lex(tail);
      const links = lexer.tokens.links;
      if (this.kept && !sameLinks(links, this.renderedWith)) {
        // A definition changed what the kept blocks may mean: start again.
        this.owned = false;
        this.update(text);
        return;
      }
      const cut = lastCut(tail, tokens);
      if (cut > 0) {
        const done = tokens.slice(0, cut);
        const doneText = done.map((token) => token.raw).join("");
        if (doneText.includes("]:")) {
          // It may hold definitions: learn which, by lexing it alone once.
          const alone = new marked.Lexer(parserOptions());
          Object.assign(alone.tokens.links, copyLinks(this.keptLinks));
          alone.lex(doneText);
          this.keptLinks = copyLinks(alone.tokens.links);
        }
        this.renderedWith = copyLinks(links);
        this.kept += doneText;
        this.removeTail();
        this.container.append(sanitise(marked.Parser.parse(done, options)));
      }
      const html = marked.Parser.parse(cut > 0 ? tokens.slice(cut) : tokens, options);
      if (html === this.tailHtml) return;
      this.removeTail();
      const fragment = sanitise(html);
      this.tailNodes = Array.from(fragment.childNodes);
      this.tailHtml = html;
      this.container.append(fragment);
    }

    removeTail() {
      for (const node of this.tailNodes) node.remove();
      this.tailNodes = [];
      this.tailHtml = null;
    }
  }

  function live(container) {
    return new LiveMarkdown(container);
  }

  window.ChatMarkdown = { render, live };
})();
