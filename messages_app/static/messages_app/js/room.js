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
 * - "error" answers a frame of ours: the post in flight, or a cancel
 *   ("not_streaming" means the page's copy of that row is stale: a gap).
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
      "invalid_body",
      "invalid_client_id",
      "invalid_frame",
      "invalid_granularity",
      "invalid_id",
      "invalid_invite",
      "invalid_json",
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
      "not_found",
      "not_member",
      "not_retryable",
      "not_streaming",
      "rate_limited",
      "server_error",
      "slug_taken",
      "unknown_field",
      "unknown_type"
    ],
    "serverFrames": [
      "delta",
      "error",
      "heartbeat",
      "members",
      "message",
      "presence",
      "snapshot",
      "typing"
    ],
    "clientFrames": [
      "cancel",
      "delete",
      "post",
      "read",
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
    "</header>" +
    '<div class="msg__body md"></div>' +
    '<p class="msg__error" hidden></p>' +
    '<div class="msg__actions" hidden>' +
    '<button type="button" class="button button--small button--stop" data-action="stop">Stop</button>' +
    '<button type="button" class="button button--small button--ghost" data-action="delete">Delete</button>' +
    "</div>" +
    "</div>";

  /** id -> {row, length, el, parts, painted, stopping, body} */
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
        body,
        error: el.querySelector(".msg__error"),
        actions: el.querySelector(".msg__actions"),
        stop: el.querySelector("[data-action=stop]"),
        del: el.querySelector("[data-action=delete]"),
      },
      painted: { body: null, open: null, created: null },
      stopping: false,
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
    parts.author.textContent = assistant ? "GPT" : row.author || "(deleted user)";

    parts.model.hidden = !row.model;
    const demo = row.model === DEMO_MODEL;
    parts.model.textContent = demo ? "demo model · no API key" : row.model || "";
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

    const label = STATE_LABELS[row.status] ?? row.status;
    parts.state.textContent = label;
    parts.state.hidden = !label;

    if (row.deleted) el.dataset.deleted = "true";
    else delete el.dataset.deleted;
    if (painted.body !== row.body || painted.open !== open || painted.deleted !== row.deleted) {
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

    parts.error.hidden = !row.error;
    parts.error.textContent = row.error ? `Failed: ${row.error}` : "";

    const stoppable = assistant && open && !row.deleted && mayStop(row);
    const deletable = mayDelete(row);
    parts.actions.hidden = !(stoppable || deletable);
    parts.stop.hidden = !stoppable;
    parts.del.hidden = !deletable;
    parts.stop.disabled = entry.stopping;
    parts.stop.textContent = entry.stopping ? "Stopping…" : "Stop";
  }

  function mayDelete(row) {
    // The server decides (permissions.can_delete_message); this only hides a
    // button that would be refused: own messages, or any for owners and moderators.
    if (row.deleted) return false;
    return canModerate || (row.author_id != null && row.author_id === myId);
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
    // Rows are in id order; a new one is nearly always the last.
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

  function isLast(entry) {
    return entry.el === list.lastElementChild;
  }

  function updateEmpty() {
    empty.hidden = rows.size > 0;
  }

  // --- applying frames ---------------------------------------------------------

  function applySnapshot(messages) {
    const keep = new Set(messages.map((m) => m.id));
    for (const [id, entry] of rows) {
      if (!keep.has(id)) {
        entry.el.remove();
        rows.delete(id);
      }
    }
    for (const message of messages) {
      const entry = rows.get(message.id);
      if (entry) entry.stopping = false;
      upsert(message);
    }
    // Drop whatever the server rendered that is not a row (first load).
    for (const child of Array.from(list.children)) {
      const entry = rows.get(Number(child.dataset.messageId));
      if (!entry || entry.el !== child) child.remove();
    }
    updateEmpty();
  }

  function applyMessage(message, stick) {
    const entry = rows.get(message.id);
    if (entry && message.version <= entry.row.version) return false;
    if (!entry) arrived(message);
    const updated = upsert(message, { soon: true, stick });
    updateEmpty();
    if (outbox && message.client_id && message.client_id === outbox.clientId) postSucceeded();
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
    if (!entry && frame.id < oldestId()) return false; // a row older than the page shows
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
    if (outbox && outbox.sent && !CANCEL_ERRORS.has(frame.code)) {
      postFailed(withWait(frame, "The message was not sent."));
      return;
    }
    for (const entry of rows.values()) {
      if (entry.stopping) {
        entry.stopping = false;
        paint(entry);
      }
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
    for (const id of listed.keys()) if (!rows.has(id) && id > oldest) behind.set(id, 0);
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
        applySnapshot(frame.messages || []);
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
      case "error":
        onError(frame);
        break;
      case "members":
        refreshMembers();
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
      jump.hidden = true;
      markRead();
    }
  });
  jump.addEventListener("click", () => {
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
    if (!synced) showNotice("Not connected: your message goes out when the connection is back.");
    flushOutbox();
  }

  function flushOutbox() {
    if (!outbox || !socket || !synced) return;
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
  }

  function postFailed(detail) {
    outbox = null;
    setSending(false);
    showComposerError(detail);
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submitComposer();
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

  function newestId() {
    let newest = 0;
    for (const id of rows.keys()) newest = Math.max(newest, id);
    return newest;
  }

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
  applySnapshot(initialData ? JSON.parse(initialData.textContent) : []);
  scrollToBottom();
  root.dataset.ready = "true";
  connect();
})();
