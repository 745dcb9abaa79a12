/*
 * Message bodies as sanitised HTML in the browser: Markdown by the vendored
 * `marked`, then `DOMPurify`. The same rules as messages_app/markdown.py (the
 * server's rendering of the first page):
 * - raw HTML in a message is shown as text, never interpreted;
 * - images become plain links (no remote fetches from someone else's message);
 * - links open in a new tab with rel="noopener noreferrer";
 * - only the tags, attributes and URL schemes below survive.
 * Exposes window.ChatMarkdown.render(text) -> DocumentFragment.
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
  // "@gpt" as a word of its own, as messages_app.services.MENTION_RE.
  const MENTION = /(?<![\w@.+-])@gpt(?![\w-]|\.\w)/gi;

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
      MENTION.lastIndex = 0;
      if (MENTION.test(node.data)) hits.push(node);
    }
    for (const node of hits) {
      const parts = node.data.split(/((?<![\w@.+-])@gpt(?![\w-]|\.\w))/i);
      const replacement = document.createDocumentFragment();
      parts.forEach((part, index) => {
        if (index % 2 === 1) {
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

  function render(text) {
    const html = parser.parse(text || "");
    const fragment = DOMPurify.sanitize(html, {
      ALLOWED_TAGS,
      ALLOWED_ATTR,
      ALLOWED_URI_REGEXP,
      RETURN_DOM_FRAGMENT: true,
    });
    return highlightMentions(fragment);
  }

  window.ChatMarkdown = { render };
})();
