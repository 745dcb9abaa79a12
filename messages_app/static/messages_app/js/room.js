/*
 * The live room page. Keeps the rows of the page in step with the room over the
 * WebSocket protocol of docs/architecture.md, and runs the composer. No framework, no build.
 *
 * What the page holds per row is the row as the server last sent it: its body,
 * its version and the body's length in code points. The rules of the protocol:
 * - "snapshot" (once per connection) replaces everything the page holds;
 * - "message" replaces a row when its version is above the one held;
 * - "delta" is dropped when its version is not above the one held, applied when
 *   its offset is the length of the held text, and anything else is a gap that
 *   is repaired by reconnecting (the fresh snapshot is authoritative);
 * - "heartbeat" lists the room's open rows and their versions: a row the page
 *   holds open that is not listed, or holds at a lower version, twice in a row
 *   (so that frames still on their way are not taken for lost), is a gap too;
 * - "history" answers our own request for older (or newer) rows: they join the
 *   page's rows and are live like the others from then on (the same version
 *   rules); frames about rows outside what the page holds that arrive while the
 *   request is on its way are kept and applied after the answer;
 * - "error" answers a frame of ours: the post in flight, a history request, an
 *   edit, or a cancel ("not_streaming" means the page's copy of that row is
 *   stale: a gap). At most one of post, edit and history is on its way at a
 *   time, so an error is never taken for another's.
 * Repairs back off (resync): however broken the stream, the page never loops.
 * A close code from the protocol says why a socket ended; 4401, 4403 and 4404
 * end the page's session with the room (it says why and stops reconnecting).
 */
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root) return;

  const slug = root.dataset.roomSlug;
  const loginUrl = root.dataset.loginUrl;
  const scroller = document.getElementById("scroller");
  const list = document.getElementById("messages");
  const empty = document.getElementById("empty");
  const jump = document.getElementById("jump");
  const notice = document.getElementById("notice");
  const connection = document.getElementById("connection");
  const form = document.getElementById("composer");
  const input = document.getElementById("composer-body");
  const sendButton = document.getElementById("send");
  const composerError = document.getElementById("composer-error");
  const historyTop = document.getElementById("history-top");
  const historyBottom = document.getElementById("history-bottom");

  const membersUrl = root.dataset.membersUrl;
  const myId = Number(root.dataset.userId);
  let canModerate = root.dataset.canModerate === "true";

  // --- the protocol: mirrors messages_app/protocol.py ----------------------------
  // Every frame the page sends is built, and every frame it receives parsed, in
  // this section. The block between the markers is JSON, and a test checks that
  // it equals protocol.mirror() (tests/messages_app/test_protocol_mirror.py).
  const PROTOCOL = Object.freeze(/* protocol-mirror-begin */ {
    "close": {
      "unauthenticated": 4401,
      "forbidden": 4403,
      "roomNotFound": 4404,
      "tooSlow": 4408,
      "tooManySockets": 4429
    },
    "closeReasons": {
      "4401": "You were signed out",
      "4403": "You were removed from this room",
      "4404": "This room no longer exists",
      "4408": "Too slow: catching up",
      "4429": "Too many open tabs"
    },
    "finalCloseCodes": [
      4401,
      4403,
      4404
    ],
    "errorCodes": [
      "already_deleted",
      "already_member",
      "binary_frame",
      "body_too_long",
      "client_id_reused",
      "empty_body",
      "forbidden",
      "frame_too_large",
      "instructions_too_long",
      "invalid_body",
      "invalid_client_id",
      "invalid_context_messages",
      "invalid_frame",
      "invalid_granularity",
      "invalid_history",
      "invalid_id",
      "invalid_invite",
      "invalid_json",
      "invalid_limit",
      "invalid_name",
      "invalid_role",
      "invalid_slug",
      "invalid_text",
      "invalid_visibility",
      "invite_expired",
      "last_owner",
      "missing_body",
      "missing_type",
      "name_too_long",
      "not_a_reply",
      "not_editable",
      "not_found",
      "not_member",
      "not_retryable",
      "not_streaming",
      "rate_limited",
      "server_error",
      "slug_taken",
      "too_many_revisions",
      "unknown_field",
      "unknown_type"
    ],
    "serverFrames": [
      "delta",
      "error",
      "heartbeat",
      "history",
      "members",
      "message",
      "presence",
      "snapshot",
      "typing"
    ],
    "clientFrames": [
      "cancel",
      "delete",
      "edit",
      "history",
      "post",
      "read",
      "retry",
      "typing"
    ]
  } /* protocol-mirror-end */);
  const CLOSE = PROTOCOL.close;
  const FINAL_CLOSE_CODES = new Set(PROTOCOL.finalCloseCodes);
  const SERVER_FRAMES = new Set(PROTOCOL.serverFrames);

  const Frames = {
    post(body, clientId) {
      return JSON.stringify({ type: "post", body, client_id: clientId });
    },
    cancel(id) {
      return JSON.stringify({ type: "cancel", id });
    },
    delete(id) {
      return JSON.stringify({ type: "delete", id });
    },
    retry(id) {
      return JSON.stringify({ type: "retry", id });
    },
    /** anchor: "before" | "after" | "around", id: a message id. */
    history(anchor, id, limit) {
      return JSON.stringify({ type: "history", [anchor]: id, limit });
    },
    edit(id, body) {
      return JSON.stringify({ type: "edit", id, body });
    },
    typing() {
      return JSON.stringify({ type: "typing" });
    },
    read(id) {
      return JSON.stringify({ type: "read", id });
    },
    /** A server frame, or null when it is not JSON or not an object with a known type. */
    parse(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return null;
      }
      if (!frame || typeof frame !== "object") return null;
      return SERVER_FRAMES.has(frame.type) ? frame : { type: "unknown", raw: frame };
    },
    closeReason(code) {
      return PROTOCOL.closeReasons[String(code)] || "";
    },
  };

  const CANCEL_ERRORS = new Set([
    "invalid_id",
    "not_found",
    "not_streaming",
    "forbidden",
    "not_member",
    "already_deleted",
    // answers to a retry only, never to a post
    "not_a_reply",
    "not_retryable",
    "too_many_revisions",
  ]);
  // What a refused retry (Regenerate) is answered with; a post in flight is not
  // failed by one of these while a regenerate waits for its answer.
  const RETRY_ERRORS = new Set([
    "not_found",
    "not_a_reply",
    "not_retryable",
    "too_many_revisions",
    "forbidden",
    "not_member",
    "already_deleted",
    "rate_limited",
  ]);
  const OPEN = new Set(["pending", "streaming"]);
  const STATE_LABELS = {
    pending: "waiting for the model",
    streaming: "writing…",
    failed: "failed",
    cancelled: "stopped",
    done: "",
  };
  const DEMO_MODEL = "demo";
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;
  // Resyncs back off: at once, then 0.5 s doubling up to 30 s; the count starts
  // again after RESYNC_QUIET_MS without one.
  const RESYNC_MIN_MS = 500;
  const RESYNC_MAX_MS = 30000;
  const RESYNC_QUIET_MS = 30000;
  // A connection counts as healthy (its reconnect backoff starts again) only
  // after it stayed up this long past its snapshot.
  const HEALTHY_AFTER_MS = 10000;
  const STICKY_PX = 48;

  const ARTICLE_HTML =
    '<div class="msg__avatar" aria-hidden="true"></div>' +
    '<div class="msg__main">' +
    '<header class="msg__meta">' +
    '<span class="msg__author"></span>' +
    '<span class="msg__model" hidden></span>' +
    '<time class="msg__time"></time>' +
    '<span class="msg__state" hidden></span>' +
    '<span class="msg__edited" hidden>edited</span>' +
    '<span class="msg__tools">' +
    '<button type="button" class="button button--small button--ghost" data-action="edit">Edit</button>' +
    '<button type="button" class="button button--small button--ghost" data-action="link" title="Copy a link to this message">Copy link</button>' +
    "</span>" +
    "</header>" +
    '<div class="msg__body md"></div>' +
    '<p class="msg__error" hidden></p>' +
    '<p class="msg__usage" hidden></p>' +
    '<div class="msg__actions" hidden>' +
    '<span class="msg__pager" hidden>' +
    '<button type="button" class="button button--small button--ghost" data-action="older" aria-label="Earlier attempt">‹</button>' +
    '<span class="msg__pager-label" aria-live="polite"></span>' +
    '<button type="button" class="button button--small button--ghost" data-action="newer" aria-label="Later attempt">›</button>' +
    "</span>" +
    '<button type="button" class="button button--small button--stop" data-action="stop">Stop</button>' +
    '<button type="button" class="button button--small button--ghost" data-action="regenerate">Regenerate</button>' +
    '<button type="button" class="button button--small button--ghost" data-action="delete">Delete</button>' +
    "</div>" +
    "</div>";

  /**
   * id -> {row, length, el, parts, painted, stopping, body, regenerating,
   *        viewing (the earlier attempt shown, or null: the current one),
   *        revisions (the earlier attempts fetched, or null)}
   */
  const rows = new Map();

  // --- rendering -------------------------------------------------------------

  function codePoints(text) {
    return Array.from(text).length;
  }

  function avatarHue(name) {
    // The same sum as the avatar_hue filter of messages_app/templatetags/chat.py.
    let sum = 0;
    for (const ch of name || "") sum += ch.codePointAt(0);
    return sum % 8;
  }

  function initial(name) {
    const first = Array.from((name || "?").trim())[0];
    return first ? first.toUpperCase() : "?";
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

  function shortTime(date) {
    const today = new Date();
    const sameDay = date.toDateString() === today.toDateString();
    return sameDay ? timeFormat.format(date) : `${dayFormat.format(date)}, ${timeFormat.format(date)}`;
  }

  function build() {
    const el = document.createElement("article");
    el.innerHTML = ARTICLE_HTML; // static markup: every value is set as text below
    const body = el.querySelector(".msg__body");
    return {
      el,
      // Renders the body as it grows, redoing only its open end (markdown.js).
      body: window.ChatMarkdown.live(body),
      parts: {
        avatar: el.querySelector(".msg__avatar"),
        author: el.querySelector(".msg__author"),
        model: el.querySelector(".msg__model"),
        time: el.querySelector(".msg__time"),
        state: el.querySelector(".msg__state"),
        edited: el.querySelector(".msg__edited"),
        body,
        error: el.querySelector(".msg__error"),
        usage: el.querySelector(".msg__usage"),
        actions: el.querySelector(".msg__actions"),
        pager: el.querySelector(".msg__pager"),
        pagerLabel: el.querySelector(".msg__pager-label"),
        older: el.querySelector("[data-action=older]"),
        newer: el.querySelector("[data-action=newer]"),
        stop: el.querySelector("[data-action=stop]"),
        regenerate: el.querySelector("[data-action=regenerate]"),
        del: el.querySelector("[data-action=delete]"),
        edit: el.querySelector("[data-action=edit]"),
      },
      painted: { body: null, open: null, created: null, revision: null },
      stopping: false,
      regenerating: false,
      viewing: null,
      revisions: null,
      seenRevisions: null,
      editor: null, // the inline editor while this row is being edited
    };
  }

  function paint(entry) {
    const { row, el, parts, painted } = entry;
    const assistant = row.role === "assistant";
    const open = OPEN.has(row.status);
    el.className = `msg msg--${row.role} hue-${assistant ? "gpt" : avatarHue(row.author)}`;
    el.dataset.messageId = row.id;
    el.dataset.role = row.role;
    el.dataset.status = row.status;
    el.dataset.version = row.version;
    if (open) el.setAttribute("aria-busy", "true");
    else el.removeAttribute("aria-busy");

    parts.avatar.textContent = assistant ? "✦" : initial(row.author);
    // A reply is written by its assistant (row.assistant: {handle, name}).
    parts.author.textContent = assistant
      ? (row.assistant && row.assistant.name) || "GPT"
      : row.author || "(deleted user)";
    if (assistant && row.assistant) {
      el.dataset.assistant = row.assistant.handle;
      parts.author.title = `@${row.assistant.handle}`;
    } else {
      delete el.dataset.assistant;
      parts.author.removeAttribute("title");
    }

    // A new attempt (a regenerate, here or elsewhere) shows itself: the pager
    // goes back to the current attempt and what was fetched is stale.
    if (entry.seenRevisions !== (row.revisions || 0)) {
      entry.seenRevisions = row.revisions || 0;
      entry.viewing = null;
      entry.revisions = null;
      entry.regenerating = false;
    }
    const shown = shownRevision(entry);
    if (shown) el.dataset.viewingRevision = String(shown.number);
    else delete el.dataset.viewingRevision;
    const model = shown ? shown.model : row.model;

    parts.model.hidden = !model;
    const demo = model === DEMO_MODEL;
    parts.model.textContent = demo ? "demo model · no API key" : model || "";
    parts.model.classList.toggle("msg__model--demo", demo);
    if (demo) {
      parts.model.title = "No OPENAI_API_KEY is set: this reply comes from the built-in demo model.";
    } else {
      parts.model.removeAttribute("title");
    }

    if (painted.created !== row.created_at) {
      const created = new Date(row.created_at);
      parts.time.dateTime = row.created_at;
      parts.time.textContent = shortTime(created);
      parts.time.title = fullFormat.format(created);
      painted.created = row.created_at;
    }

    const status = shown ? shown.status : row.status;
    const label = STATE_LABELS[status] ?? status;
    parts.state.textContent = label;
    parts.state.hidden = !label;

    parts.edited.hidden = !row.edited_at || row.deleted;
    if (row.edited_at) parts.edited.title = `Edited ${fullFormat.format(new Date(row.edited_at))}`;

    if (row.deleted) el.dataset.deleted = "true";
    else delete el.dataset.deleted;
    if (entry.editor && (row.deleted || !mayEdit(row))) closeEditor(entry);
    if (!entry.editor && !shown && painted.revision !== null) {
      // Back from an earlier attempt to the current one.
      painted.revision = null;
      painted.body = null;
      entry.body.reset();
      parts.body.replaceChildren();
    }
    if (entry.editor) {
      // The editor stands in for the body until it closes (saved or cancelled).
    } else if (shown) {
      // An earlier attempt: rendered whole (it no longer grows).
      if (painted.revision !== shown.number) {
        entry.body.reset();
        parts.body.replaceChildren(window.ChatMarkdown.render(shown.body));
        painted.revision = shown.number;
        painted.body = null;
      }
    } else if (painted.body !== row.body || painted.open !== open || painted.deleted !== row.deleted) {
      painted.deleted = row.deleted;
      if (row.deleted) {
        const gone = document.createElement("p");
        gone.className = "deleted";
        gone.textContent = "message deleted";
        entry.body.reset();
        parts.body.replaceChildren(gone);
      } else if (row.body) {
        entry.body.update(row.body);
      } else if (open) {
        const thinking = document.createElement("p");
        thinking.className = "thinking";
        thinking.textContent = "thinking…";
        entry.body.reset();
        parts.body.replaceChildren(thinking);
      } else {
        entry.body.reset();
        parts.body.replaceChildren();
      }
      painted.body = row.body;
      painted.open = open;
    }

    const error = shown ? shown.error : row.error;
    parts.error.hidden = !error;
    parts.error.textContent = error ? `Failed: ${error}` : "";

    const usage = assistant && !row.deleted ? usageLine(row, shown) : null;
    parts.usage.hidden = !usage;
    parts.usage.textContent = usage ? usage.text : "";
    if (usage) parts.usage.title = usage.title;
    else parts.usage.removeAttribute("title");

    const total = (row.revisions || 0) + 1;
    const paged = assistant && !row.deleted && total > 1;
    parts.pager.hidden = !paged;
    if (paged) {
      const at = entry.viewing ?? total;
      parts.pagerLabel.textContent = `${at} / ${total}`;
      parts.older.disabled = at <= 1;
      parts.newer.disabled = at >= total;
    }

    const stoppable = assistant && open && !row.deleted && mayStop(row);
    const regenerable = assistant && !open && !row.deleted && mayStop(row);
    const deletable = mayDelete(row);
    parts.actions.hidden = !(stoppable || deletable || regenerable || paged);
    parts.stop.hidden = !stoppable;
    parts.regenerate.hidden = !regenerable;
    parts.regenerate.disabled = entry.regenerating;
    parts.regenerate.textContent = entry.regenerating ? "Regenerating…" : "Regenerate";
    parts.del.hidden = !deletable;
    parts.edit.hidden = !mayEdit(row) || Boolean(entry.editor);
    parts.stop.disabled = entry.stopping;
    parts.stop.textContent = entry.stopping ? "Stopping…" : "Stop";
  }

  /** The earlier attempt the pager shows, once fetched; null for the current one. */
  function shownRevision(entry) {
    if (entry.viewing === null || !entry.revisions) return null;
    return entry.revisions.find((r) => r.number === entry.viewing) || null;
  }

  function seconds(from, to) {
    const ms = new Date(to) - new Date(from);
    if (!Number.isFinite(ms) || ms < 0) return "";
    return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
  }

  /**
   * The reply's usage, compactly: its assistant, model, tokens (prompt + completion
   * = total) and how long it took; the tooltip says each in words. For the attempt
   * shown (an earlier one on the pager). Null while it streams and nothing is known.
   */
  function usageLine(row, shown) {
    const attempt = shown || row;
    if (!shown && OPEN.has(row.status)) return null;
    const name = (row.assistant && row.assistant.name) || "GPT";
    const u = attempt.usage || {};
    const parts = [name];
    const title = [`Assistant: ${name}`];
    if (attempt.model) {
      parts.push(attempt.model);
      title.push(`Model: ${attempt.model}`);
    }
    if (u.total_tokens != null) {
      const split = u.prompt_tokens != null && u.completion_tokens != null;
      parts.push(split ? `${u.prompt_tokens} + ${u.completion_tokens} = ${u.total_tokens} tokens` : `${u.total_tokens} tokens`);
      title.push(`Tokens: ${u.prompt_tokens ?? "?"} prompt + ${u.completion_tokens ?? "?"} completion = ${u.total_tokens} total`);
    }
    const took = attempt.finished_at ? seconds(attempt.requested_at || row.created_at, attempt.finished_at) : "";
    if (took) {
      parts.push(took);
      title.push(`Took ${took} from the request to the end of the reply`);
    }
    if (parts.length === 1) return null;
    return { text: parts.join(" · "), title: title.join("\n") };
  }

  function mayDelete(row) {
    // The server decides (permissions.can_delete_message); this only hides a
    // button that would be refused: own messages, or any for owners and moderators.
    if (row.deleted) return false;
    return canModerate || (row.author_id != null && row.author_id === myId);
  }

  function mayEdit(row) {
    // As permissions.can_edit: one's own message, never a reply, not once deleted.
    return !row.deleted && row.role === "user" && row.author_id != null && row.author_id === myId;
  }

  function mayStop(row) {
    // As permissions.can_cancel_reply: the member who asked, owners and moderators.
    if (canModerate) return true;
    const question = row.reply_to != null ? rows.get(row.reply_to) : null;
    return !!question && question.row.author_id === myId;
  }

  // A new row is painted at once (it must be placed); a known one, like a delta's,
  // in the next animation frame with whatever else changed it meanwhile (soon), or
  // at once (a snapshot, which replaces what the page shows).
  function upsert(row, { soon = false, stick = false } = {}) {
    let entry = rows.get(row.id);
    const known = Boolean(entry);
    if (!entry) {
      entry = build();
      rows.set(row.id, entry);
      entry.row = row;
      place(entry);
    }
    entry.row = { ...row };
    entry.length = codePoints(row.body);
    if (!OPEN.has(row.status)) entry.stopping = false;
    if (known && soon) {
      paintSoon(entry, stick);
    } else {
      dirty.delete(entry); // painted now, with the latest text
      paint(entry);
    }
    return entry;
  }

  function place(entry) {
    // Rows are in id order; a new one is nearly always the last, or (a page of
    // history) before the first.
    const first = list.firstElementChild;
    if (first && Number(first.dataset.messageId) > entry.row.id) {
      list.insertBefore(entry.el, first);
      return;
    }
    let next = null;
    for (const child of Array.from(list.children).reverse()) {
      if (Number(child.dataset.messageId) > entry.row.id) next = child;
      else break;
    }
    list.insertBefore(entry.el, next);
  }

  function oldestId() {
    let oldest = Infinity;
    for (const id of rows.keys()) oldest = Math.min(oldest, id);
    return oldest;
  }

  function newestId() {
    let newest = 0;
    for (const id of rows.keys()) newest = Math.max(newest, id);
    return newest;
  }

  /** Whether a frame about row ``id``, which the page does not hold, is outside its rows. */
  function outsideHeld(id) {
    if (!rows.size) return false;
    return id < oldestId() || (detached && id > newestId());
  }

  function isLast(entry) {
    return entry.el === list.lastElementChild;
  }

  function updateEmpty() {
    empty.hidden = rows.size > 0;
  }

  // --- applying frames ---------------------------------------------------------

  function applySnapshot(messages, more) {
    const keep = new Set(messages.map((m) => m.id));
    // Older rows that history brought stay when they join the snapshot's without
    // a gap (the page held a row the snapshot holds too); they are read again
    // (refreshFrom back to refreshTo) as they may have changed while the page
    // was not connected.
    const snapOldest = messages.length ? messages[0].id : Infinity;
    const keepOlder = !detached && rows.size > 0 && newestId() >= snapOldest && oldestId() < snapOldest;
    const olderFrom = keepOlder ? oldestId() : null;
    for (const [id, entry] of rows) {
      if (!keep.has(id) && !(keepOlder && id < snapOldest)) {
        entry.el.remove();
        rows.delete(id);
      }
    }
    for (const message of messages) {
      const entry = rows.get(message.id);
      if (entry) {
        // A fresh snapshot answers whatever was in flight (a lost frame included).
        entry.stopping = false;
        entry.regenerating = false;
      }
      upsert(message);
    }
    // Drop whatever the server rendered that is not a row (first load).
    for (const child of Array.from(list.children)) {
      const entry = rows.get(Number(child.dataset.messageId));
      if (!entry || entry.el !== child) child.remove();
    }
    detached = false;
    hasNewer = false;
    if (keepOlder) {
      refreshTo = olderFrom;
      refreshFrom = snapOldest;
    } else {
      hasMore = Boolean(more);
      refreshTo = null;
    }
    updateEmpty();
    updateHistoryMarkers();
  }

  function applyMessage(message, stick) {
    const entry = rows.get(message.id);
    if (entry && message.version <= entry.row.version) return false;
    if (!entry && outsideHeld(message.id)) {
      // A row older (or, away from the present, newer) than the page shows:
      // kept for after a history answer that may hold an older copy of it.
      if (historyRequest) historyRequest.held.push({ type: "message", message });
      return false;
    }
    if (!entry) arrived(message);
    const updated = upsert(message, { soon: true, stick });
    updateEmpty();
    if (outbox && message.client_id && message.client_id === outbox.clientId) postSucceeded();
    if (editing && message.id === editing.id && message.version > editing.version) editSaved();
    // A known row is painted, and scrolled, in the next animation frame.
    return !entry && isLast(updated);
  }

  // Deltas arrive faster than a screen refreshes (one per token, for several rows):
  // each changes the row at once, and the rows they changed are painted at most
  // once per animation frame, with the text of the latest.
  const dirty = new Set();
  let frameRequested = false;
  let frameStick = false;

  function paintSoon(entry, stick) {
    if (!frameRequested) {
      // Whether to follow the bottom is decided as the page was before these deltas.
      frameStick = stick;
      frameRequested = true;
      requestAnimationFrame(paintFrame);
    }
    dirty.add(entry);
  }

  function paintFrame() {
    frameRequested = false;
    let grew = false;
    for (const entry of dirty) {
      if (rows.get(entry.row.id) !== entry) continue; // dropped by a snapshot meanwhile
      paint(entry);
      grew = grew || isLast(entry);
    }
    dirty.clear();
    if (grew) afterGrowth(frameStick);
  }

  function applyDelta(frame, stick) {
    const entry = rows.get(frame.id);
    if (entry && frame.version <= entry.row.version) return false; // already included
    if (!entry && outsideHeld(frame.id)) {
      // a row outside what the page shows; kept while a history answer is on its way
      if (historyRequest) historyRequest.held.push(frame);
      return false;
    }
    if (!entry || frame.offset !== entry.length) {
      resync(entry ? `delta at offset ${frame.offset}, the page holds ${entry.length}` : "delta of a row the page lacks", frame);
      return false;
    }
    entry.row.body += frame.text;
    entry.row.version = frame.version;
    entry.length += codePoints(frame.text);
    paintSoon(entry, stick);
    return false; // painted, and scrolled, in the next animation frame
  }

  // rate_limited: the detail says how long to wait; retry_after (seconds) says it
  // to the page. Before the snapshot it refuses the socket itself (too many open),
  // which the server then closes with 4429: wait that long before reconnecting.
  let limitedWaitMs = 0;

  function withWait(frame, fallback) {
    const detail = frame.detail || fallback;
    if (frame.code !== "rate_limited" || !frame.retry_after || /try again/i.test(detail)) {
      return detail;
    }
    return `${detail} Try again in ${Math.ceil(frame.retry_after)} s.`;
  }

  function onError(frame) {
    if (frame.code === "rate_limited" && !synced) {
      limitedWaitMs = (frame.retry_after || 30) * 1000;
      showNotice(withWait(frame, "Too many connections are open."));
      return;
    }
    if (historyRequest) {
      historyFailed(frame);
      return;
    }
    if (editing) {
      editFailed(frame);
      return;
    }
    if (outbox && outbox.sent && !CANCEL_ERRORS.has(frame.code)) {
      postFailed(withWait(frame, "The message was not sent."));
      return;
    }
    let regenerating = false;
    for (const entry of rows.values()) {
      if (entry.stopping || entry.regenerating) {
        regenerating = regenerating || entry.regenerating;
        entry.stopping = false;
        entry.regenerating = false;
        paint(entry);
      }
    }
    if (regenerating && RETRY_ERRORS.has(frame.code)) {
      showNotice(withWait(frame, "The reply could not be regenerated."));
      return;
    }
    if (frame.code === "not_streaming") {
      // The server says the row is not open: the page's copy is stale.
      resync("Stop answered not_streaming", frame);
      return;
    }
    showNotice(withWait(frame, "Something went wrong."));
  }

  // Rows the last heartbeat found behind: id -> the version the page held then.
  let suspects = new Map();

  function onHeartbeat(frame) {
    const listed = new Map();
    for (const pair of Array.isArray(frame.open) ? frame.open : []) listed.set(pair[0], pair[1]);
    const behind = new Map();
    for (const [id, entry] of rows) {
      const version = listed.get(id);
      if (version === undefined ? OPEN.has(entry.row.status) : version > entry.row.version) {
        behind.set(id, entry.row.version);
      }
    }
    const oldest = rows.size ? oldestId() : 0;
    const newest = detached ? newestId() : Infinity;
    for (const id of listed.keys()) if (!rows.has(id) && id > oldest && id < newest) behind.set(id, 0);
    for (const [id, version] of behind) {
      if (suspects.get(id) === version) {
        suspects = new Map();
        const listedVersion = listed.has(id) ? `version ${listed.get(id)}` : "not open";
        resync(`heartbeat: row ${id} is ${listedVersion} on the server, the page holds version ${version}`, frame);
        return;
      }
    }
    suspects = behind;
  }

  function onFrame(data) {
    const frame = Frames.parse(data);
    if (frame === null) {
      resync("a frame that is not a JSON object", data);
      return;
    }
    const stick = nearBottom();
    let grew = false;
    switch (frame.type) {
      case "snapshot":
        abandonHistory();
        applySnapshot(frame.messages || [], frame.has_more);
        reconcileEdit();
        synced = true;
        suspects = new Map();
        clearTimeout(healthyTimer);
        healthyTimer = setTimeout(() => {
          attempts = 0;
        }, HEALTHY_AFTER_MS);
        setConnection("online", "Live");
        flushOutbox();
        grew = true;
        break;
      case "message":
        grew = applyMessage(frame.message, stick);
        break;
      case "delta":
        grew = applyDelta(frame, stick);
        break;
      case "history":
        onHistory(frame);
        break;
      case "error":
        onError(frame);
        break;
      case "members":
        refreshMembers();
        updateMemberCandidates(frame.members);
        break;
      case "heartbeat":
        onHeartbeat(frame);
        break;
      case "presence":
        onPresence(frame);
        break;
      case "typing":
        onTyping(frame);
        break;
      default:
        break; // a frame type this page does not know: ignore it
    }
    if (grew) afterGrowth(stick);
    if (frame.type === "snapshot") afterSnapshot();
    if (frame.type === "snapshot" || frame.type === "message") markRead();
  }

  // --- scrolling ---------------------------------------------------------------

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= STICKY_PX;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    jump.hidden = true;
  }

  function afterGrowth(wasAtBottom) {
    if (wasAtBottom) scrollToBottom();
    else if (!nearBottom()) jump.hidden = false; // (our own post has scrolled down already)
  }

  scroller.addEventListener("scroll", () => {
    if (nearBottom()) {
      if (!detached) jump.hidden = true;
      markRead();
    }
    maybeLoad();
  });
  jump.addEventListener("click", () => {
    if (detached) {
      // Away from the present (a link to an old message): the newest rows come
      // with a fresh snapshot.
      backToPresent();
      return;
    }
    scrollToBottom();
    input.focus();
  });

  // --- the connection ----------------------------------------------------------

  let socket = null;
  let synced = false;
  let attempts = 0;
  let retryTimer = null;
  let healthyTimer = null;
  let leaving = false;
  let closedForGood = false;

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
    root.dataset.connection = state;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (closedForGood || leaving) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/rooms/${encodeURIComponent(slug)}/`);
    socket = ws;
    synced = false;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (event) => {
      if (ws === socket) onFrame(event.data);
    });
    ws.addEventListener("close", (event) => {
      if (ws === socket) onClose(event, opened);
    });
  }

  function onClose(event, opened) {
    socket = null;
    synced = false;
    clearTimeout(healthyTimer);
    offline();
    if (leaving) return;
    if (FINAL_CLOSE_CODES.has(event.code)) {
      ended(event.code);
      return;
    }
    if (event.code === CLOSE.tooSlow) {
      // The server dropped this socket for falling behind: a fresh snapshot
      // (after the usual backoff) brings back everything it missed.
      console.warn("room: the server closed the socket as too slow (4408); resyncing");
    }
    if (event.code === CLOSE.tooManySockets) {
      tooManySockets();
      return;
    }
    scheduleReconnect();
    if (!opened) checkAccess();
  }

  function ended(code) {
    // The server ended this page's session with the room: say why, stop.
    closedForGood = true;
    clearTimeout(retryTimer);
    const reason = Frames.closeReason(code);
    root.dataset.ended = String(code);
    setConnection("offline", reason);
    clearTimeout(noticeTimer);
    notice.textContent = code === CLOSE.unauthenticated ? `${reason}. Log in again to continue.` : `${reason}.`;
    notice.hidden = false;
    input.disabled = true;
    sendButton.disabled = true;
  }

  async function checkAccess() {
    // The server refuses a socket before accepting it, and a browser then sees
    // a bare failure (1006) instead of 4401/4404. Ask the page itself why: a
    // redirect means signed out, 404 a room that is gone; no answer means the
    // server is away, and the retries go on.
    let response;
    try {
      response = await fetch(location.pathname, { redirect: "manual", cache: "no-store" });
    } catch {
      return;
    }
    if (response.type === "opaqueredirect") signedOut();
    else if (response.status === 404) roomGone();
  }

  function signedOut() {
    closedForGood = true;
    clearTimeout(retryTimer);
    setConnection("offline", "Signed out");
    const next = encodeURIComponent(location.pathname).replace(/%2F/g, "/");
    location.assign(`${loginUrl}?next=${next}`);
  }

  function roomGone() {
    closedForGood = true;
    clearTimeout(retryTimer);
    setConnection("offline", Frames.closeReason(CLOSE.roomNotFound));
    input.disabled = true;
    sendButton.disabled = true;
  }

  function tooManySockets() {
    // Not a failure to back off from quickly: another tab must close first.
    const wait = limitedWaitMs || 30000;
    limitedWaitMs = 0;
    setConnection("offline", `${Frames.closeReason(CLOSE.tooManySockets)}: close one`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, wait * (0.9 + Math.random() * 0.2));
  }

  function removedFromRoom() {
    // As the server's close 4403 (once the sessions-end work closes the socket).
    const old = socket;
    socket = null;
    if (old) old.close(1000, "removed");
    ended(CLOSE.forbidden);
  }

  // --- members -------------------------------------------------------------------

  const membersSlot = document.getElementById("members-slot");
  let membersFetch = null;

  async function refreshMembers() {
    // A "members" frame says the list changed; the panel (with the buttons this
    // user may press) comes from the server, which alone decides who may do what.
    if (!membersSlot || !membersUrl) return;
    const mine = (membersFetch = fetch(membersUrl, { cache: "no-store", redirect: "manual" }));
    let response;
    try {
      response = await mine;
    } catch {
      return;
    }
    if (mine !== membersFetch) return; // a newer refresh is under way
    if (response.status === 404) {
      // No longer a member of a private room (or it is gone).
      removedFromRoom();
      return;
    }
    if (!response.ok) return;
    membersSlot.innerHTML = await response.text(); // the server's own escaped template
    const panel = document.getElementById("members-panel");
    if (panel) {
      canModerate = panel.dataset.canModerate === "true";
      if (panel.dataset.member !== "true") {
        setConnection("offline", "You are no longer a member of this room");
      }
    }
    for (const entry of rows.values()) paint(entry);
    markOnline();
  }

  function scheduleReconnect() {
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempts) * (0.8 + Math.random() * 0.4);
    attempts += 1;
    setConnection("reconnecting", "Reconnecting…");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  let lastResyncAt = 0;
  let resyncs = 0;

  function resync(reason, frame) {
    // A gap: this socket's stream can no longer be trusted. Drop it (its late
    // frames are ignored) and take a fresh snapshot on a new one: the first at
    // once, the next ones backing off, so a stream that keeps breaking (or a
    // server that keeps disagreeing) costs a reconnect every 30 s at most.
    console.warn(`room: resync (${reason})`, frame);
    const old = socket;
    socket = null;
    synced = false;
    clearTimeout(healthyTimer);
    if (old) old.close(1000, "resync");
    const now = Date.now();
    if (now - lastResyncAt > RESYNC_QUIET_MS) resyncs = 0;
    lastResyncAt = now;
    const delay = resyncs === 0 ? 0 : Math.min(RESYNC_MAX_MS, RESYNC_MIN_MS * 2 ** (resyncs - 1));
    resyncs += 1;
    root.dataset.resyncs = String(Number(root.dataset.resyncs || 0) + 1);
    setConnection("reconnecting", "Catching up…");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (!socket && !closedForGood) connect();
  }

  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      reconnectNow();
      clearUnseen();
      markRead();
    }
  });
  window.addEventListener("pagehide", () => {
    leaving = true;
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) {
      leaving = false;
      reconnectNow();
    }
  });

  // --- the composer ------------------------------------------------------------

  let outbox = null; // the post in flight: {clientId, body, sent}

  function uuid4() {
    if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function setSending(sending) {
    sendButton.disabled = sending;
    form.setAttribute("aria-busy", sending ? "true" : "false");
  }

  function showComposerError(text) {
    composerError.textContent = text;
    composerError.hidden = !text;
  }

  let noticeTimer = null;
  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      notice.hidden = true;
    }, 6000);
  }

  function submitComposer() {
    if (outbox || closedForGood) return;
    const body = input.value;
    if (!body.trim()) {
      input.focus();
      return;
    }
    outbox = { clientId: uuid4(), body, sent: false };
    showComposerError("");
    setSending(true);
    if (detached) {
      // Away from the present, the page would not show the new message: go back
      // first; the post goes out after the fresh snapshot.
      backToPresent();
      return;
    }
    if (!synced) showNotice("Not connected: your message goes out when the connection is back.");
    flushOutbox();
  }

  function flushOutbox() {
    // One request on its way at a time (see the top): a post waits for a history
    // answer or an edit.
    if (!outbox || !socket || !synced || historyRequest || editing) return;
    // After a reconnect the post may have been stored already: the snapshot says.
    for (const entry of rows.values()) {
      if (entry.row.client_id === outbox.clientId) {
        postSucceeded();
        return;
      }
    }
    // The same client_id again stores one message (docs/architecture.md): resending is safe.
    socket.send(Frames.post(outbox.body, outbox.clientId));
    outbox.sent = true;
  }

  function postSucceeded() {
    lastTypingAt = -Infinity; // the server starts the typing throttle again too
    if (input.value === outbox.body) input.value = "";
    outbox = null;
    setSending(false);
    notice.hidden = true;
    resizeInput();
    scrollToBottom();
    nextRequest();
  }

  function postFailed(detail) {
    outbox = null;
    setSending(false);
    showComposerError(detail);
    input.focus();
    nextRequest();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submitComposer();
    } else if (event.key === "ArrowUp" && !input.value && !event.shiftKey && !event.isComposing) {
      // As Slack: Up in an empty composer edits your last message.
      const last = lastOwnMessage();
      if (last) {
        event.preventDefault();
        openEditor(last);
      }
    }
  });

  const autosize = !(window.CSS && CSS.supports("field-sizing", "content"));
  function resizeInput() {
    if (!autosize) return;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }
  input.addEventListener("input", () => {
    resizeInput();
    if (!composerError.hidden) showComposerError("");
    typed();
  });

  // --- @ suggestions -----------------------------------------------------------
  // After "@" the composer offers the room's active assistants, then its members
  // (rendered into the page: json_script "mention-candidates"). Arrows move,
  // Enter or Tab picks, Escape closes; a click picks too.

  const mentionList = document.getElementById("mention-list");
  const candidatesData = document.getElementById("mention-candidates");
  let candidates = candidatesData ? JSON.parse(candidatesData.textContent) : [];
  const suggest = { open: false, start: 0, items: [], active: 0 };
  // "@" and what follows it up to the caret, where a mention may start.
  const MENTION_QUERY = /(?:^|[^\w@.+-])@([\w.+-]*)$/;
  const MAX_SUGGESTIONS = 8;

  // A "members" frame lists the room's members now: the suggestions follow it.
  function updateMemberCandidates(members) {
    if (!Array.isArray(members)) return;
    const people = members
      .map((m) => ({ kind: "member", handle: m.username, name: m.name }))
      .sort((a, b) => (a.handle < b.handle ? -1 : a.handle > b.handle ? 1 : 0));
    candidates = [...candidates.filter((c) => c.kind !== "member"), ...people];
  }

  function mentionQuery() {
    if (input.selectionStart !== input.selectionEnd) return null;
    const before = input.value.slice(0, input.selectionStart);
    const match = MENTION_QUERY.exec(before);
    if (!match) return null;
    return { start: before.length - match[1].length - 1, text: match[1].toLowerCase() };
  }

  function closeSuggestions() {
    if (!mentionList) return;
    suggest.open = false;
    mentionList.hidden = true;
    mentionList.replaceChildren();
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function matches(candidate, text) {
    if (candidate.handle.toLowerCase().startsWith(text)) return true;
    return (candidate.name || "")
      .toLowerCase()
      .split(/\s+/)
      .some((word) => word.startsWith(text));
  }

  function updateSuggestions() {
    const query = mentionList ? mentionQuery() : null;
    const items = query
      ? candidates.filter((c) => matches(c, query.text)).slice(0, MAX_SUGGESTIONS)
      : [];
    if (!items.length) {
      closeSuggestions();
      return;
    }
    const same = suggest.open && suggest.items.length === items.length &&
      suggest.items.every((c, i) => c === items[i]);
    suggest.open = true;
    suggest.start = query.start;
    if (!same) suggest.active = 0;
    suggest.items = items;
    renderSuggestions();
  }

  function renderSuggestions() {
    mentionList.replaceChildren(
      ...suggest.items.map((candidate, index) => {
        const item = document.createElement("li");
        item.id = `mention-option-${index}`;
        item.className = "mention-list__item";
        item.setAttribute("role", "option");
        item.dataset.index = String(index);
        item.dataset.handle = candidate.handle;
        item.dataset.kind = candidate.kind;
        item.setAttribute("aria-selected", index === suggest.active ? "true" : "false");
        const handle = document.createElement("span");
        handle.className = "mention-list__handle";
        handle.textContent = `@${candidate.handle}`;
        const name = document.createElement("span");
        name.className = "mention-list__name";
        name.textContent =
          candidate.kind === "assistant" ? `${candidate.name} · assistant` : candidate.name;
        item.append(handle, name);
        return item;
      }),
    );
    mentionList.hidden = false;
    input.setAttribute("aria-expanded", "true");
    input.setAttribute("aria-activedescendant", `mention-option-${suggest.active}`);
  }

  function pickSuggestion(index) {
    const candidate = suggest.items[index];
    if (!candidate) return;
    const caret = input.selectionStart;
    const before = input.value.slice(0, suggest.start);
    const after = input.value.slice(caret);
    const insert = `@${candidate.handle}${after.startsWith(" ") ? "" : " "}`;
    input.value = before + insert + after;
    const position = before.length + insert.length;
    input.setSelectionRange(position, position);
    closeSuggestions();
    input.focus();
    resizeInput();
  }

  if (mentionList) {
    // On the form, in the capture phase: before the input's own Enter-sends handler.
    form.addEventListener(
      "keydown",
      (event) => {
        if (!suggest.open || event.target !== input || event.isComposing) return;
        const count = suggest.items.length;
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          suggest.active = (suggest.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
          renderSuggestions();
        } else if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") {
          pickSuggestion(suggest.active);
        } else if (event.key === "Escape") {
          closeSuggestions();
        } else {
          return;
        }
        event.preventDefault();
        event.stopPropagation();
      },
      true,
    );
    input.addEventListener("input", updateSuggestions);
    input.addEventListener("click", updateSuggestions);
    input.addEventListener("blur", closeSuggestions);
    // mousedown, not click: the textarea keeps its focus and caret.
    mentionList.addEventListener("mousedown", (event) => {
      const item = event.target.closest("li[data-index]");
      if (!item) return;
      event.preventDefault();
      pickSuggestion(Number(item.dataset.index));
    });
  }

  // --- stop ----------------------------------------------------------------------

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action=delete]");
    if (!button) return;
    const entry = rows.get(Number(button.closest("article").dataset.messageId));
    if (!entry) return;
    if (!socket || !synced) {
      showNotice("Not connected: try again in a moment.");
      return;
    }
    socket.send(Frames.delete(entry.row.id));
  });

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action=stop]");
    if (!button) return;
    const entry = rows.get(Number(button.closest("article").dataset.messageId));
    if (!entry || entry.stopping) return;
    if (!socket || !synced) {
      showNotice("Not connected: try again in a moment.");
      return;
    }
    entry.stopping = true;
    paint(entry);
    socket.send(Frames.cancel(entry.row.id));
  });

  // --- regenerate, and the pager of a reply's attempts ------------------------------

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action=regenerate]");
    if (!button) return;
    const entry = rows.get(Number(button.closest("article").dataset.messageId));
    if (!entry || entry.regenerating) return;
    if (!socket || !synced) {
      showNotice("Not connected: try again in a moment.");
      return;
    }
    entry.regenerating = true;
    paint(entry);
    socket.send(Frames.retry(entry.row.id));
  });

  function revisionsUrl(id) {
    // Next to the members panel's URL: /rooms/<slug>/messages/<id>/revisions/.
    return membersUrl.replace(/members\/$/, `messages/${id}/revisions/`);
  }

  async function fetchRevisions(id) {
    try {
      const response = await fetch(revisionsUrl(id), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const data = await response.json();
        if (Array.isArray(data.revisions)) return data.revisions;
      }
    } catch (error) {
      console.warn("revisions of", id, error);
    }
    showNotice("The earlier attempts could not be loaded: try again.");
    return null;
  }

  list.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action=older], button[data-action=newer]");
    if (!button) return;
    const id = Number(button.closest("article").dataset.messageId);
    const entry = rows.get(id);
    if (!entry) return;
    const total = (entry.row.revisions || 0) + 1;
    const at = entry.viewing ?? total;
    const next = button.dataset.action === "older" ? at - 1 : at + 1;
    if (next < 1 || next > total) return;
    if (next < total && !entry.revisions) {
      const asked = entry.row.revisions;
      const fetched = await fetchRevisions(id);
      // A new attempt meanwhile (or the row gone): this answer is stale.
      if (!fetched || rows.get(id) !== entry || entry.row.revisions !== asked) return;
      entry.revisions = fetched;
    }
    entry.viewing = next < total ? next : null;
    paint(entry);
  });

  // --- history: older rows on scrolling up, a link to one message ---------------

  const MAX_HISTORY_LIMIT = Number(root.dataset.historyMaxLimit) || 100;
  const HISTORY_PAGE = Math.min(50, MAX_HISTORY_LIMIT);
  const HISTORY_TIMEOUT_MS = 15000;
  const jumpHtml = jump.innerHTML;
  const jumpText = jump.textContent;
  const LOAD_MARGIN_PX = 400;
  let hasMore = root.dataset.hasMore === "true"; // the room has rows older than the page's
  let detached = false; // the page shows a window of the past, not the newest rows
  let hasNewer = false; // (detached) rows newer than the page's exist
  let historyRequest = null; // {anchor, id, held, timer}: the request on its way
  let historyRetryAt = 0; // after rate_limited, not before this (ms)
  // After a reconnect: the older rows kept from before are read again, page by
  // page, from refreshFrom back to refreshTo (the oldest the page held).
  let refreshFrom = null;
  let refreshTo = null;
  // ?m=<id>: the message to show and highlight (null when none or done).
  let linkTarget = null;
  let linkAsked = false;

  function updateHistoryMarkers() {
    const loadingOlder = historyRequest && historyRequest.anchor !== "after";
    historyTop.dataset.state = loadingOlder ? "loading" : hasMore ? "more" : rows.size ? "start" : "empty";
    historyTop.textContent = loadingOlder ? "Loading older messages…" : hasMore || !rows.size ? "" : "Beginning of the room";
    historyTop.setAttribute("aria-busy", loadingOlder ? "true" : "false");
    const loadingNewer = historyRequest && historyRequest.anchor === "after";
    historyBottom.hidden = !detached;
    historyBottom.textContent = loadingNewer ? "Loading newer messages…" : "";
    historyBottom.dataset.state = loadingNewer ? "loading" : "";
    if (detached) {
      jump.hidden = false;
      jump.textContent = "Jump to the newest messages ↓";
    } else if (jump.textContent !== jumpText) {
      jump.innerHTML = jumpHtml; // the template's own markup
    }
  }

  function canRequest() {
    return socket && synced && !historyRequest && !editing && !(outbox && outbox.sent) && Date.now() >= historyRetryAt;
  }

  function requestHistory(anchor, id, limit = HISTORY_PAGE) {
    if (!canRequest()) return false;
    historyRequest = { anchor, id, held: [], timer: null };
    // An answer that never comes (a lost socket drops it: abandonHistory) must not
    // stop the page from asking again.
    historyRequest.timer = setTimeout(() => {
      abandonHistory();
      nextRequest();
    }, HISTORY_TIMEOUT_MS);
    socket.send(Frames.history(anchor, id, limit));
    updateHistoryMarkers();
    return true;
  }

  function abandonHistory() {
    if (!historyRequest) return;
    clearTimeout(historyRequest.timer);
    historyRequest = null;
    updateHistoryMarkers();
  }

  /** Whatever the page should ask next, if anything: a refresh, a link, a page. */
  function nextRequest() {
    flushOutbox();
    flushEdit();
    if (!canRequest()) return;
    if (linkTarget !== null && !linkAsked) {
      openLink();
      return;
    }
    if (refreshTo !== null) {
      requestHistory("before", refreshFrom, MAX_HISTORY_LIMIT);
      return;
    }
    maybeLoad();
  }

  function maybeLoad() {
    if (!canRequest() || (linkTarget !== null && !linkAsked)) return;
    if (hasMore && rows.size && scroller.scrollTop < LOAD_MARGIN_PX) {
      requestHistory("before", oldestId());
    } else if (detached && hasNewer && rows.size) {
      const fromBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
      if (fromBottom < LOAD_MARGIN_PX) requestHistory("after", newestId());
    }
  }

  function onHistory(frame) {
    const request = historyRequest;
    if (!request) return; // not ours any more (a snapshot replaced everything)
    clearTimeout(request.timer);
    historyRequest = null;
    const messages = Array.isArray(frame.messages) ? frame.messages : [];
    if (request.anchor === "around") {
      showWindow(messages, frame, request.id);
    } else if (refreshTo !== null && request.anchor === "before" && request.id === refreshFrom) {
      for (const message of messages) {
        const entry = rows.get(message.id);
        if (!entry || message.version > entry.row.version) upsert(message);
      }
      const first = messages.length ? messages[0].id : null;
      if (first !== null && first > refreshTo && frame.has_more) refreshFrom = first;
      else refreshTo = refreshFrom = null;
    } else {
      insertKeepingPosition(messages);
      if (request.anchor === "before") hasMore = Boolean(frame.has_more);
      else {
        hasNewer = Boolean(frame.has_newer);
        if (!hasNewer) detached = false; // the page reaches the present again
      }
    }
    // Frames about rows outside the page that came meanwhile: applied now, by
    // the usual version rules (what the answer already holds is dropped).
    for (const held of request.held) {
      if (held.type === "message") applyMessage(held.message, false);
      else applyDelta(held, false);
    }
    updateEmpty();
    updateHistoryMarkers();
    nextRequest();
  }

  function insertKeepingPosition(messages) {
    // The row at the top of the view stays where it is on the screen: rows
    // added above it move the scroll position by their height, not the view.
    const anchorEl = list.firstElementChild;
    const before = anchorEl ? anchorEl.getBoundingClientRect().top : 0;
    for (const message of messages) {
      const entry = rows.get(message.id);
      if (!entry || message.version > entry.row.version) upsert(message);
    }
    if (anchorEl) scroller.scrollTop += anchorEl.getBoundingClientRect().top - before;
  }

  function historyFailed(frame) {
    const request = historyRequest;
    abandonHistory();
    if (frame.code === "rate_limited") {
      historyRetryAt = Date.now() + (frame.retry_after || 5) * 1000;
      setTimeout(nextRequest, (frame.retry_after || 5) * 1000 + 50);
      showNotice(withWait(frame, "Loading history too fast."));
      return;
    }
    if (request && request.anchor === "around") {
      linkTarget = null;
      showNotice(frame.code === "not_found" ? "That link points to no message of this room." : withWait(frame, "The message could not be shown."));
      return;
    }
    refreshTo = refreshFrom = null;
    showNotice(withWait(frame, "Older messages could not be loaded."));
  }

  function showWindow(messages, frame, targetId) {
    const ids = messages.map((m) => m.id);
    const joins = !frame.has_newer || (rows.size > 0 && ids.length > 0 && ids[ids.length - 1] >= oldestId());
    if (!joins) {
      // A gap between the window and the newest rows: show the window alone,
      // away from the present, until scrolling down (or the jump) closes it.
      for (const entry of rows.values()) entry.el.remove();
      rows.clear();
      detached = true;
      hasNewer = true;
      hasMore = Boolean(frame.has_more);
    } else if (!rows.size || ids[0] < oldestId()) {
      hasMore = Boolean(frame.has_more);
    }
    for (const message of messages) {
      const entry = rows.get(message.id);
      if (!entry || message.version > entry.row.version) upsert(message);
    }
    focusMessage(targetId);
  }

  function openLink() {
    linkAsked = true;
    if (rows.has(linkTarget)) focusMessage(linkTarget);
    else requestHistory("around", linkTarget, HISTORY_PAGE);
  }

  function focusMessage(id) {
    linkTarget = null;
    const entry = rows.get(id);
    if (!entry) return;
    for (const el of list.querySelectorAll("[data-highlighted]")) delete el.dataset.highlighted;
    entry.el.dataset.highlighted = "true";
    entry.el.scrollIntoView({ block: "center" });
    jump.hidden = !detached && nearBottom();
    if (entry.row.deleted) showNotice("That message was deleted.");
  }

  function afterSnapshot() {
    updateHistoryMarkers();
    nextRequest();
  }

  function backToPresent() {
    // Leave the window of the past: a fresh socket's snapshot brings the newest rows.
    for (const entry of rows.values()) entry.el.remove();
    rows.clear();
    detached = false;
    hasNewer = false;
    abandonHistory();
    updateHistoryMarkers();
    const old = socket;
    socket = null;
    synced = false;
    if (old) old.close(1000, "present");
    connect();
  }

  function readLink() {
    const value = new URLSearchParams(location.search).get("m");
    if (value === null) return;
    if (!/^[1-9][0-9]{0,15}$/.test(value)) {
      showNotice("That link points to no message of this room.");
      return;
    }
    linkTarget = Number(value);
  }

  // --- editing one's own message --------------------------------------------------

  let editing = null; // {id, version, body}: the edit on its way
  let editWaiting = null; // an edit saved while another request was on its way

  function lastOwnMessage() {
    let last = null;
    for (const entry of rows.values()) {
      if (mayEdit(entry.row) && (!last || entry.row.id > last.row.id)) last = entry;
    }
    return last;
  }

  function openEditor(entry) {
    for (const other of rows.values()) if (other.editor && other !== entry) closeEditor(other);
    if (entry.editor) {
      entry.editor.input.focus();
      return;
    }
    const form = document.createElement("form");
    form.className = "msg__editor";
    const area = document.createElement("textarea");
    area.className = "msg__editor-input";
    area.setAttribute("aria-label", "Edit message");
    area.value = entry.row.body;
    area.rows = Math.min(8, entry.row.body.split("\n").length + 1);
    const error = document.createElement("p");
    error.className = "msg__editor-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const bar = document.createElement("div");
    bar.className = "msg__editor-bar";
    const hint = document.createElement("span");
    hint.className = "msg__editor-hint";
    hint.textContent = "Enter to save · Escape to cancel";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "button button--small button--ghost";
    cancel.dataset.action = "edit-cancel";
    cancel.textContent = "Cancel";
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "button button--small button--primary";
    save.dataset.action = "edit-save";
    save.textContent = "Save";
    bar.append(hint, cancel, save);
    form.append(area, error, bar);
    entry.editor = { form, input: area, error, save };
    entry.parts.body.replaceChildren(form);
    entry.body.reset();
    entry.painted.body = null; // the body is painted again once the editor closes
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveEdit(entry);
    });
    cancel.addEventListener("click", () => closeEditor(entry));
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        saveEdit(entry);
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeEditor(entry);
        input.focus();
      }
    });
    paint(entry);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  function closeEditor(entry) {
    if (!entry.editor) return;
    entry.editor = null;
    entry.painted.body = null;
    if (editWaiting && editWaiting.id === entry.row.id) editWaiting = null;
    paint(entry);
  }

  function editError(entry, text) {
    if (!entry.editor) return;
    entry.editor.error.textContent = text;
    entry.editor.error.hidden = !text;
    entry.editor.save.disabled = false;
  }

  function saveEdit(entry) {
    if (!entry.editor || (editing && editing.id === entry.row.id)) return;
    const body = entry.editor.input.value;
    if (!body.trim()) {
      editError(entry, "The message is empty: delete it instead.");
      return;
    }
    if (body.replace(/\r\n?/g, "\n").normalize("NFC") === entry.row.body) {
      closeEditor(entry); // nothing changed: nothing to send
      return;
    }
    if (!socket || !synced) {
      editError(entry, "Not connected: try again in a moment.");
      return;
    }
    entry.editor.save.disabled = true;
    editError(entry, "");
    entry.editor.save.disabled = true;
    editWaiting = { id: entry.row.id, body };
    flushEdit();
  }

  function flushEdit() {
    if (!editWaiting || editing || historyRequest || (outbox && outbox.sent) || !socket || !synced) return;
    const entry = rows.get(editWaiting.id);
    const waiting = editWaiting;
    editWaiting = null;
    if (!entry || !entry.editor) return;
    editing = { id: waiting.id, version: entry.row.version, body: waiting.body };
    editing.timer = setTimeout(() => editFailed({ detail: "The edit was not confirmed; try again." }), HISTORY_TIMEOUT_MS);
    socket.send(Frames.edit(waiting.id, waiting.body));
  }

  function reconcileEdit() {
    // A fresh snapshot says whether the edit on its way was stored (the row is
    // at a higher version): if not, it is sent again on this socket.
    if (!editing) return;
    const entry = rows.get(editing.id);
    if (entry && entry.row.version > editing.version) {
      editSaved();
      return;
    }
    clearTimeout(editing.timer);
    if (entry && entry.editor) editWaiting = { id: editing.id, body: editing.body };
    editing = null;
  }

  function editSaved() {
    const entry = rows.get(editing.id);
    clearTimeout(editing.timer);
    editing = null;
    if (entry) closeEditor(entry);
    nextRequest();
  }

  function editFailed(frame) {
    const entry = editing ? rows.get(editing.id) : null;
    if (editing) clearTimeout(editing.timer);
    editing = null;
    if (entry && entry.editor) editError(entry, withWait(frame, "The message was not saved."));
    else showNotice(withWait(frame, "The message was not saved."));
    nextRequest();
  }

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action=edit]");
    if (!button) return;
    const entry = rows.get(Number(button.closest("article").dataset.messageId));
    if (entry && mayEdit(entry.row)) openEditor(entry);
  });

  // --- a link to one message ---------------------------------------------------------

  function messageUrl(id) {
    return `${location.origin}${location.pathname}?m=${id}`;
  }

  list.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action=link]");
    if (!button) return;
    const id = Number(button.closest("article").dataset.messageId);
    const url = messageUrl(id);
    root.dataset.copiedLink = url;
    try {
      await navigator.clipboard.writeText(url);
      showNotice("Link copied.");
    } catch {
      // No clipboard (an insecure origin, a refusal): show the link to copy by hand.
      showNotice(`Link to this message: ${url}`);
    }
  });

  // --- presence, typing, unread (issue 14) ----------------------------------------

  const presenceBox = document.getElementById("presence");
  const presenceList = document.getElementById("presence-list");
  const presenceCount = document.getElementById("presence-count");
  const typingLine = document.getElementById("typing");
  const roomName = root.dataset.roomName || "";
  const baseTitle = document.title;
  // The server passes one typing frame per person per interval; this page sends
  // no faster, and forgets a name that many seconds (and a margin) after its last.
  const TYPING_INTERVAL_MS = (Number(root.dataset.typingInterval) || 3) * 1000;
  const TYPING_SHOWN_MS = TYPING_INTERVAL_MS + 3000;
  // The header shows this many avatars; "N here" and the tooltip say the rest.
  const PRESENCE_AVATARS = 5;
  let present = new Set();

  function onPresence(frame) {
    // The whole list, each user once (names sorted); "count" may be above what is listed.
    const users = Array.isArray(frame.users) ? frame.users : [];
    const count = Number.isInteger(frame.count) ? frame.count : users.length;
    present = new Set(users.map((user) => user.user_id));
    markOnline();
    const items = users.slice(0, PRESENCE_AVATARS).map((user) => {
      const li = document.createElement("li");
      li.className = `presence__user hue-${avatarHue(user.name)}`;
      li.dataset.userId = user.user_id;
      li.title = user.user_id === myId ? `${user.name} (you)` : user.name;
      li.textContent = initial(user.name);
      const name = document.createElement("span");
      name.className = "visually-hidden";
      name.textContent = ` ${user.name}`;
      li.append(name);
      return li;
    });
    presenceList.replaceChildren(...items);
    presenceCount.textContent = `${count} here`;
    const more = count - users.length;
    const names = users.map((user) => user.name).join(", ");
    presenceBox.title = `In the room now: ${names}${more > 0 ? ` and ${more} more` : ""}`;
    presenceBox.dataset.count = String(count);
    presenceBox.hidden = count === 0;
  }

  function markOnline() {
    // The members panel (server-rendered) marks who has the room open now.
    for (const item of document.querySelectorAll("#members-panel .member[data-user-id]")) {
      item.dataset.online = String(present.has(Number(item.dataset.userId)));
    }
  }

  /** user id -> {name, timer}: who is typing now, as the last typing frames said. */
  const typists = new Map();

  function onTyping(frame) {
    if (!Number.isInteger(frame.user_id) || frame.user_id === myId) return;
    const known = typists.get(frame.user_id);
    if (known) clearTimeout(known.timer);
    const timer = setTimeout(() => stoppedTyping(frame.user_id), TYPING_SHOWN_MS);
    typists.set(frame.user_id, { name: String(frame.name || "Someone"), timer });
    paintTyping();
  }

  function stoppedTyping(userId) {
    const known = typists.get(userId);
    if (!known) return;
    clearTimeout(known.timer);
    typists.delete(userId);
    paintTyping();
  }

  function paintTyping() {
    const names = Array.from(typists.values(), (typist) => typist.name);
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = "Several people are typing…";
    typingLine.textContent = text;
    typingLine.dataset.typing = String(names.length);
  }

  let lastTypingAt = -Infinity;

  function typed() {
    // At most one frame per interval while the user types (the server drops faster ones).
    if (!socket || !synced || !input.value.trim()) return;
    const now = performance.now();
    if (now - lastTypingAt < TYPING_INTERVAL_MS) return;
    lastTypingAt = now;
    socket.send(Frames.typing());
  }

  // Unread: the read position moves (a "read" frame) when the newest row is on
  // screen in a visible tab; the title counts others' new rows while the tab is hidden.
  let lastReadSent = 0;
  let unseen = 0;

  function markRead() {
    if (!socket || !synced || document.visibilityState !== "visible" || !nearBottom()) return;
    const newest = newestId();
    if (newest <= lastReadSent) return;
    lastReadSent = newest;
    socket.send(Frames.read(newest));
  }

  function arrived(message) {
    // A row the page did not hold: its author has stopped typing (it was sent).
    if (message.author_id !== null && message.author_id !== undefined) {
      stoppedTyping(message.author_id);
    }
    if (document.visibilityState !== "hidden" || message.author_id === myId || message.deleted) {
      return;
    }
    unseen += 1;
    document.title = `(${unseen}) ${roomName || baseTitle}`;
  }

  function offline() {
    // Who is here and who types is known only while connected: the next socket's
    // presence frame (right after its snapshot) brings it back.
    presenceBox.hidden = true;
    present = new Set();
    markOnline();
    for (const userId of Array.from(typists.keys())) stoppedTyping(userId);
  }

  function clearUnseen() {
    unseen = 0;
    document.title = baseTitle;
  }

  // --- start -------------------------------------------------------------------

  // The server rendered the first page; the same rows, as data, take it over.
  const initialData = document.getElementById("initial-messages");
  list.replaceChildren();
  applySnapshot(initialData ? JSON.parse(initialData.textContent) : [], root.dataset.hasMore === "true");
  scrollToBottom();
  readLink();
  if (linkTarget !== null && rows.has(linkTarget)) {
    linkAsked = true;
    focusMessage(linkTarget);
  }
  root.dataset.ready = "true";
  connect();
})();
