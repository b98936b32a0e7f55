// The operator's dashboard: plain JavaScript against the service's own API, no build step.
//
// Authentication: the token lives in sessionStorage (this tab only) and goes in the
// Authorization header of every API call. The MJPEG previews are <img> tags, which cannot send
// headers, so their URLs carry it as ?token= (the API accepts that for stream.mjpg and
// snapshot.jpg only; the page sets Referrer-Policy: no-referrer so it is not passed on).
// The only pixels shown are the service's redacted previews.
"use strict";

const TOKEN_KEY = "edgeblur.token";
const REFRESH_MS = 2000;
const AUDIT_EVERY_TICKS = 5; // the audit log is re-read every 10 s (and after each save)
const AUDIT_LIMIT = 50;
const STREAM_RETRY_MS = [1000, 2000, 5000, 10000];

const session = {
  token: null, // null: no token (a service without one) or signed out
  active: false,
  timer: null,
  tick: 0,
  lastAudit: null, // time of the newest audit entry seen: a newer one means a config change
  loadedConfig: "", // the editor's text as last loaded from the device
};
const tiles = new Map(); // camera id -> Tile

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// ---- API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

async function request(path, { token = session.token, ...options } = {}) {
  const headers = new Headers(options.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
    throw new ApiError(response.status, detail || response.statusText);
  }
  return body;
}

/** An API call of the signed-in session: a 401 ends the session (back to sign-in). */
async function api(path, options) {
  try {
    return await request(path, options);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && session.active) {
      signOut("The service no longer accepts this token (was it changed?). Sign in again.");
    }
    throw error;
  }
}

function describe(error) {
  if (error instanceof ApiError) {
    const detail = typeof error.detail === "string" ? error.detail : JSON.stringify(error.detail);
    return `${error.status}: ${detail}`;
  }
  return `cannot reach the service (${error.message})`;
}

// ---- sign-in ----------------------------------------------------------------------------

async function start() {
  $("sign-in-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("config-form").addEventListener("submit", onSaveConfig);
  $("config-reload").addEventListener("click", () => loadConfig());
  const text = $("config-text");
  text.addEventListener("input", () => {
    renderGutter(new Map());
    markDirty();
  });
  text.addEventListener("scroll", () => {
    $("config-gutter").scrollTop = text.scrollTop;
  });
  document.addEventListener("visibilitychange", () => {
    // A hidden tab (a phone in a pocket) holds no preview open: the device serves few.
    for (const tile of tiles.values()) {
      if (document.hidden) tile.disconnect();
      else tile.connect();
    }
  });
  refreshReadiness();

  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) {
    await tryToken(stored, "The service no longer accepts the token of this tab. Sign in again.");
    return;
  }
  // A service without a token answers reads without one; say so instead of asking for one.
  try {
    await request("/api/cameras", { token: null });
    enter(null);
  } catch (error) {
    showSignIn(error instanceof ApiError && error.status === 401 ? "" : describe(error));
  }
}

async function onSignIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    showSignIn("Enter the API token.");
    return;
  }
  await tryToken(token, "The service refused this token. Check it and try again.");
}

async function tryToken(token, refusedMessage) {
  $("sign-in-error").textContent = "";
  try {
    await request("/api/cameras", { token });
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    const refused = error instanceof ApiError && error.status === 401;
    showSignIn(refused ? refusedMessage : describe(error));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  enter(token);
}

function showSignIn(message) {
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.textContent = message;
  const input = $("token");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

function enter(token) {
  session.token = token;
  session.active = true;
  session.tick = 0;
  session.lastAudit = null;
  $("token").value = "";
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = token === null;
  $("open-mode").hidden = token !== null;
  loadConfig();
  refresh();
}

function signOut(message) {
  session.active = false;
  session.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(session.timer);
  for (const tile of tiles.values()) tile.remove();
  tiles.clear();
  $("config-text").value = "";
  session.loadedConfig = "";
  showConfigErrors([]);
  setConfigStatus("", "");
  showSignIn(message);
}

// ---- periodic refresh -------------------------------------------------------------------

async function refresh() {
  clearTimeout(session.timer);
  if (!session.active) return;
  const auditDue = session.tick % AUDIT_EVERY_TICKS === 0;
  session.tick += 1;
  await Promise.all([
    refreshCameras(),
    refreshReadiness(),
    auditDue ? refreshAudit() : Promise.resolve(),
  ]);
  if (session.active) session.timer = setTimeout(refresh, REFRESH_MS);
}

async function refreshCameras() {
  try {
    renderCameras(await api("/api/cameras"));
    $("connection").textContent = "";
    $("updated").textContent = `Last update ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    if (session.active) $("connection").textContent = `Camera status: ${describe(error)}`;
  }
}

async function refreshReadiness() {
  const pill = $("readiness");
  let body;
  try {
    // 200 when ready, 503 (with the same body) when not: both are answers. With the token
    // the reasons are detailed; without it, general.
    const headers = session.token ? { Authorization: `Bearer ${session.token}` } : {};
    const response = await fetch("/readyz", { headers, cache: "no-store" });
    body = await response.json();
  } catch (error) {
    pill.className = "pill bad";
    pill.textContent = "Readiness: unknown (service unreachable)";
    return;
  }
  const waiting = body.not_ready.map((camera) => `${camera.id}: ${camera.reason}`);
  pill.className = waiting.length ? "pill warn" : "pill ok";
  pill.textContent = waiting.length
    ? `Not ready (${waiting.join("; ")})`
    : `Ready (${body.ready.length} camera${body.ready.length === 1 ? "" : "s"})`;
}

// ---- camera tiles -----------------------------------------------------------------------

function renderCameras(cameras) {
  const container = $("cameras");
  const seen = new Set();
  for (const camera of cameras) {
    seen.add(camera.id);
    let tile = tiles.get(camera.id);
    if (!tile) {
      tile = new Tile(camera.id);
      tiles.set(camera.id, tile);
      container.append(tile.root);
    }
    tile.update(camera);
  }
  for (const [id, tile] of tiles) {
    if (!seen.has(id)) {
      tile.remove();
      tiles.delete(id);
    }
  }
  $("no-cameras").hidden = cameras.length > 0;
}

const FIGURES = [
  ["fps", "Frames per second", (c) => c.fps.toFixed(1)],
  ["detections_per_s", "Detections per second", (c) => c.detections_per_s.toFixed(1)],
  ["frames_out", "Frames delivered", (c) => c.counters.frames_out.toLocaleString()],
  ["faces_redacted", "Faces redacted", (c) => c.counters.faces_redacted.toLocaleString()],
  ["frames_withheld", "Frames withheld", (c) => c.counters.frames_withheld.toLocaleString()],
  ["frames_dropped", "Dropped at ingest", (c) => c.counters.frames_dropped.toLocaleString()],
  ["recording", "Recording", (c) => c.recording.replace("_", " ")],
  ["stream", "RTSP stream", (c) => (c.stream_url ? `${c.stream_url} (${c.stream})` : c.stream)],
];

class Tile {
  constructor(id) {
    this.id = id;
    this.enabled = false;
    this.live = false; // running and ready, as of the last refresh
    this.failures = 0;
    this.retry = null;
    this.connection = 0; // bumped on each (re)connect, so the URL is new each time

    const titleId = `camera-${id}-title`;
    this.state = el("span", { class: "state" });
    this.image = el("img", { alt: `Anonymised live view of camera ${id}`, hidden: "" });
    this.note = el("p", { class: "view-note", text: "Connecting…" });
    this.image.addEventListener("load", () => {
      this.failures = 0;
      this.note.hidden = true;
      this.image.hidden = false;
    });
    this.image.addEventListener("error", () => this.streamFailed());
    this.fields = {};
    const figures = el("dl", { class: "figures" });
    for (const [name, label] of FIGURES) {
      this.fields[name] = el("dd", { "data-field": name, text: "–" });
      figures.append(el("div", {}, el("dt", { text: label }), this.fields[name]));
    }
    this.reason = el("p", { class: "reason", "data-field": "reason" });
    this.lastError = el("p", { class: "error", "data-field": "last_error" });
    this.root = el(
      "article",
      { class: "tile", "data-camera": id, "aria-labelledby": titleId },
      el("h3", { id: titleId }, el("span", { class: "camera-id", text: id }), " ", this.state),
      el("div", { class: "view" }, this.image, this.note),
      figures,
      this.reason,
      this.lastError,
    );
  }

  update(camera) {
    this.state.textContent = camera.state;
    this.state.className = `state state-${camera.state}`;
    for (const [name, , format] of FIGURES) this.fields[name].textContent = format(camera);
    this.reason.textContent = camera.ready || !camera.reason ? "" : `Not ready: ${camera.reason}`;
    this.lastError.textContent = camera.last_error ? `Last error: ${camera.last_error}` : "";
    const live = camera.state === "running" && camera.ready;
    const wasLive = this.live;
    this.enabled = camera.enabled;
    this.live = live;
    if (!camera.enabled) {
      this.disconnect("Camera disabled.");
    } else if (live && (!wasLive || !this.image.src)) {
      // A camera that (re)started ended the previews of its old worker: open a new one.
      this.connect();
    } else if (!this.image.src && !this.retry) {
      this.connect();
    }
  }

  streamUrl() {
    this.connection += 1;
    const query = new URLSearchParams({ connection: String(this.connection) });
    if (session.token) query.set("token", session.token);
    return `/api/cameras/${encodeURIComponent(this.id)}/stream.mjpg?${query}`;
  }

  connect() {
    clearTimeout(this.retry);
    this.retry = null;
    if (!this.enabled || document.hidden || !session.active) return;
    this.image.src = this.streamUrl();
  }

  disconnect(message = "Preview paused.") {
    clearTimeout(this.retry);
    this.retry = null;
    if (this.image.src) this.image.removeAttribute("src"); // closes the stream
    this.image.hidden = true;
    this.note.textContent = message;
    this.note.hidden = false;
  }

  streamFailed() {
    // An <img> cannot tell why (camera starting, too many previews open, network): retry with
    // backoff; the figures below keep refreshing meanwhile.
    if (!this.image.getAttribute("src")) return;
    this.image.removeAttribute("src");
    this.image.hidden = true;
    this.note.textContent = "No preview yet: retrying…";
    this.note.hidden = false;
    const delay = STREAM_RETRY_MS[Math.min(this.failures, STREAM_RETRY_MS.length - 1)];
    this.failures += 1;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.connect(), delay);
  }

  remove() {
    this.disconnect();
    this.root.remove();
  }
}

function reconnectAll() {
  for (const tile of tiles.values()) tile.connect();
}

// ---- configuration editor ---------------------------------------------------------------

async function loadConfig() {
  setConfigStatus("Loading the configuration…", "");
  try {
    setEditor(await api("/api/config"));
    setConfigStatus("", "");
  } catch (error) {
    if (session.active) setConfigStatus(`Cannot load the configuration: ${describe(error)}`, "bad");
  }
}

function setEditor(config) {
  const text = JSON.stringify(config, null, 2);
  $("config-text").value = text;
  session.loadedConfig = text;
  showConfigErrors([]);
  markDirty();
}

function markDirty() {
  $("config-reload").disabled = $("config-text").value === session.loadedConfig;
}

async function onSaveConfig(event) {
  event.preventDefault();
  const text = $("config-text").value;
  let candidate;
  try {
    candidate = JSON.parse(text);
  } catch (error) {
    const line = syntaxErrorLine(text);
    showConfigErrors([{ line, path: "", msg: `not valid JSON: ${error.message}` }]);
    setConfigStatus("Not saved: the text is not valid JSON (see the marked line).", "bad");
    return;
  }
  showConfigErrors([]);
  setConfigStatus("Saving…", "");
  $("config-save").disabled = true;
  try {
    const result = await api("/api/config", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(candidate),
    });
    setEditor(result.config);
    if (result.changes.length === 0) {
      setConfigStatus("Nothing to save: the device already runs this configuration.", "ok");
    } else {
      const paths = result.changes.map((change) => change.path).join(", ");
      let message = `Saved and applied ${result.changes.length} change(s): ${paths}.`;
      if (result.restart_required.length) {
        message += ` These take effect when the service restarts: ${result.restart_required.join(", ")}.`;
      }
      setConfigStatus(message, "ok");
    }
    refreshAudit();
  } catch (error) {
    reportSaveError(error, text);
  } finally {
    $("config-save").disabled = false;
  }
}

function reportSaveError(error, text) {
  if (!(error instanceof ApiError)) {
    setConfigStatus(`Not saved: ${describe(error)}`, "bad");
    return;
  }
  if (error.status === 422 && Array.isArray(error.detail)) {
    const lines = lineIndex(text);
    const errors = error.detail.map((item) => ({
      line: lineOfPath(item.loc, lines),
      path: formatPath(item.loc),
      msg: item.msg,
    }));
    showConfigErrors(errors);
    const count = errors.length === 1 ? "1 error" : `${errors.length} errors`;
    setConfigStatus(`Not saved: the device refused it (${count}, marked at their lines).`, "bad");
  } else if (error.status === 409) {
    setConfigStatus(
      `Not saved: this service runs without a config file, so a change would be lost at the ` +
        `next restart. ${error.detail}`,
      "bad",
    );
  } else if (error.status === 403) {
    setConfigStatus(`Not saved: changes are refused. ${error.detail}`, "bad");
  } else if (error.status !== 401) {
    setConfigStatus(`Not saved: ${describe(error)}`, "bad");
  }
}

function setConfigStatus(message, kind) {
  const status = $("config-status");
  status.textContent = message;
  status.className = `status ${kind}`;
  status.setAttribute("role", kind === "bad" ? "alert" : "status");
}

/** errors: [{line (1-based), path, msg}]; marks each line in the gutter, lists them below. */
function showConfigErrors(errors) {
  const list = $("config-errors");
  list.replaceChildren();
  const byLine = new Map();
  for (const error of errors) {
    byLine.set(error.line, [...(byLine.get(error.line) || []), error]);
    const jump = el("button", { type: "button", class: "link", text: `Line ${error.line}` });
    jump.addEventListener("click", () => selectLine(error.line));
    const item = el("li", { "data-line": String(error.line), "data-path": error.path });
    item.append(jump, " ", el("code", { text: error.path || "(whole config)" }), ": ", error.msg);
    list.append(item);
  }
  const text = $("config-text");
  text.setAttribute("aria-invalid", errors.length ? "true" : "false");
  renderGutter(byLine);
  if (errors.length) selectLine(Math.min(...byLine.keys()));
}

function renderGutter(errorsByLine) {
  const gutter = $("config-gutter");
  const count = $("config-text").value.split("\n").length;
  const rows = [];
  for (let line = 1; line <= count; line += 1) {
    const errors = errorsByLine.get(line);
    const row = el("div", { "data-line": String(line), text: String(line) });
    if (errors) {
      row.className = "bad";
      row.title = errors.map((error) => `${error.path}: ${error.msg}`).join("\n");
    }
    rows.push(row);
  }
  gutter.replaceChildren(...rows);
  gutter.scrollTop = $("config-text").scrollTop;
}

function selectLine(line) {
  const text = $("config-text");
  const lines = text.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, item) => sum + item.length + 1, 0);
  text.focus();
  text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 20;
  text.scrollTop = Math.max(0, (line - 3) * lineHeight);
}

function formatPath(loc) {
  return loc
    .map((part, index) => (typeof part === "number" ? `[${part}]` : index ? `.${part}` : part))
    .join("");
}

/** The line of the deepest part of `loc` that the text holds (a missing key: its parent). */
function lineOfPath(loc, lines) {
  for (let length = loc.length; length >= 0; length -= 1) {
    const line = lines.get(JSON.stringify(loc.slice(0, length)));
    if (line !== undefined) return line;
  }
  return 1;
}

/**
 * Where each value sits in a JSON text: JSON.stringify(path) -> 1-based line of its key (or,
 * in an array, of the element). Throws a SyntaxError with `.line` on text that is not JSON.
 */
function lineIndex(text) {
  const lines = new Map();
  let pos = 0;
  let line = 1;
  const literal = /true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

  const fail = (message) => {
    const error = new SyntaxError(`${message} (line ${line})`);
    error.line = line;
    throw error;
  };
  const space = () => {
    for (; pos < text.length; pos += 1) {
      const char = text[pos];
      if (char === "\n") line += 1;
      else if (char !== " " && char !== "\t" && char !== "\r") return;
    }
  };
  const expect = (char) => {
    space();
    if (text[pos] !== char) fail(`expected '${char}'`);
    pos += 1;
  };
  const string = () => {
    const begin = pos;
    for (pos += 1; pos < text.length; pos += 1) {
      const char = text[pos];
      if (char === "\\") pos += 1;
      else if (char === "\n") fail("line break inside a string");
      else if (char === '"') {
        pos += 1;
        try {
          return JSON.parse(text.slice(begin, pos));
        } catch (error) {
          return fail("invalid string");
        }
      }
    }
    return fail("unterminated string");
  };
  const value = (path) => {
    space();
    if (!lines.has(JSON.stringify(path))) lines.set(JSON.stringify(path), line);
    const char = text[pos];
    if (char === "{") {
      pos += 1;
      space();
      if (text[pos] === "}") {
        pos += 1;
        return;
      }
      for (;;) {
        space();
        if (text[pos] !== '"') fail("expected a quoted key");
        const keyLine = line;
        const key = string();
        lines.set(JSON.stringify([...path, key]), keyLine);
        expect(":");
        value([...path, key]);
        space();
        if (text[pos] === ",") pos += 1;
        else if (text[pos] === "}") {
          pos += 1;
          return;
        } else fail("expected ',' or '}'");
      }
    } else if (char === "[") {
      pos += 1;
      space();
      if (text[pos] === "]") {
        pos += 1;
        return;
      }
      for (let index = 0; ; index += 1) {
        value([...path, index]);
        space();
        if (text[pos] === ",") pos += 1;
        else if (text[pos] === "]") {
          pos += 1;
          return;
        } else fail("expected ',' or ']'");
      }
    } else if (char === '"') {
      string();
    } else {
      literal.lastIndex = pos;
      if (!literal.test(text)) fail("expected a value");
      pos = literal.lastIndex;
    }
  };

  value([]);
  space();
  if (pos < text.length) fail("unexpected text after the end");
  return lines;
}

function syntaxErrorLine(text) {
  try {
    lineIndex(text);
  } catch (error) {
    if (error.line) return error.line;
  }
  return 1;
}

// ---- audit log --------------------------------------------------------------------------

function shown(value) {
  return value === null || value === undefined ? "(unset)" : JSON.stringify(value);
}

async function refreshAudit() {
  let entries;
  try {
    entries = await api(`/api/config/audit?limit=${AUDIT_LIMIT}`);
  } catch (error) {
    if (session.active) {
      $("audit-empty").textContent = `Cannot read the change log: ${describe(error)}`;
      $("audit-empty").hidden = false;
    }
    return;
  }
  const newest = entries.length ? entries[entries.length - 1].time : "";
  const changed = session.lastAudit !== null && newest !== session.lastAudit;
  session.lastAudit = newest;
  const list = $("audit");
  list.replaceChildren(
    ...entries.reverse().map((entry) => {
      const when = new Date(entry.time);
      const changes = el("ul", { class: "changes" });
      for (const change of entry.changes) {
        changes.append(
          el("li", {}, el("code", { text: change.path }), `: ${shown(change.old)} → ${shown(change.new)}`),
        );
      }
      const who = [`from ${entry.client}`];
      if (entry.forwarded_for) who.push(`(forwarded for ${entry.forwarded_for})`);
      if (entry.token) who.push(`with token ${entry.token}`);
      return el(
        "li",
        { class: "entry" },
        el(
          "p",
          {},
          el("time", { datetime: entry.time, text: when.toLocaleString() }),
          ` ${entry.method} ${who.join(" ")}`,
        ),
        changes,
      );
    }),
  );
  $("audit-empty").textContent = "No changes recorded yet.";
  $("audit-empty").hidden = entries.length > 0;
  // A config change (from here, another operator or curl) restarts the cameras it touches,
  // which ends their previews: open new ones.
  if (changed) reconnectAll();
}

document.addEventListener("DOMContentLoaded", start);
