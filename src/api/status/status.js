// Livechain's status page: polls the REST API every 2 s (chains, providers, processes) and
// follows the change feed over /v1/stream for the live tail. No dependency, nothing fetched
// from anywhere but this service. When the service goes away (a restart) every request keeps
// being retried with a backoff and the tail resumes from the last cursor it showed. A hidden
// page (a background tab) asks nothing of the service until it is shown again.
"use strict";

const POLL_MS = 2000;
const MAX_BACKOFF_MS = 5000;
const SPARK_POINTS = 150; // five minutes at one sample every POLL_MS
const TAIL_ROWS = 100;
const TAIL_DRAW_MS = 500; // the tail is redrawn at most this often, however fast the chain

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

// One formatter for every number (toLocaleString would build one per call).
const thousands = new Intl.NumberFormat("en");
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

const fmt = {
  num: (n) => (n === null || n === undefined ? "—" : thousands.format(Number(n))),
  ms: (n) => (n === null || n === undefined ? "—" : `${Number(n).toFixed(1)} ms`),
  rate: (n) => (n === null || !isFinite(n) ? "—" : n >= 100 ? thousands.format(Math.round(n)) : n.toFixed(1)),
  ago: (iso) => {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  },
  eta: (s) => {
    if (s === null || !isFinite(s)) return "—";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
  short: (hex) => (hex ? `${hex.slice(0, 10)}…` : "—"),
};

// --- connection state -------------------------------------------------------------------

let failures = 0;
function setConn(state) {
  const badge = $("#conn");
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "connecting…";
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (response.status === 401) $("#auth").hidden = false;
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// A service that wants its token (server.auth_token): kept in the cookie the service reads, so
// the tail's WebSocket carries it too (a browser cannot add headers to one).
$("#auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = new FormData(event.target).get("token")?.toString().trim() ?? "";
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `livechain_token=${token}; path=/; SameSite=Strict${secure}`;
  $("#auth").hidden = true;
  event.target.reset();
  clearTimeout(pollTimer);
  if (!pollBusy) poll();
  closeTail();
  openTail();
});

// --- rates over time (per chain, from stored_since_start and the checkpoint) -------------

const history = new Map(); // chain -> {samples: [{t, events, checkpoint}], spark: number[]}

function observe(chain) {
  const now = Date.now() / 1000;
  const stored = chain.stored_since_start;
  const events = stored.blocks + stored.logs;
  let h = history.get(chain.name);
  if (!h) {
    h = { samples: [], spark: [] };
    history.set(chain.name, h);
  }
  const last = h.samples[h.samples.length - 1];
  if (last && events < last.events) {
    h.samples = []; // the service restarted: its counters start again
  }
  h.samples.push({ t: now, events, checkpoint: chain.checkpoint ?? 0 });
  while (h.samples.length > 2 && now - h.samples[0].t > 30) h.samples.shift();
  const first = h.samples[0];
  const span = now - first.t;
  const eventsPerSecond = span > 0 ? (events - first.events) / span : null;
  const blocksPerSecond = span > 0 ? ((chain.checkpoint ?? 0) - first.checkpoint) / span : null;
  if (last) h.spark.push(Math.max(0, (events - last.events) / Math.max(0.001, now - last.t)));
  while (h.spark.length > SPARK_POINTS) h.spark.shift();
  return { eventsPerSecond, blocksPerSecond, spark: h.spark };
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS} 28`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...values);
  const points = values.map((v, i) => `${i + SPARK_POINTS - values.length},${27 - (v / max) * 26}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = `events per second, last ${values.length} s (max ${fmt.rate(max)})`;
  svg.append(title);
  return svg;
}

// --- renderers ---------------------------------------------------------------------------

// Puts `rows` in `body`, keeping every row and cell that did not change: the browser then
// lays out and paints only what moved (a few cells a second), not every table at every poll.
function patch(body, rows) {
  rows.forEach((row, i) => {
    const old = body.rows[i];
    if (!old) body.append(row);
    else if (old.isEqualNode(row)) return;
    else if (old.cells.length !== row.cells.length || !old.cloneNode(false).isEqualNode(row.cloneNode(false))) old.replaceWith(row);
    else [...row.cells].forEach((cell, j) => old.cells[j].isEqualNode(cell) || old.cells[j].replaceWith(cell));
  });
  while (body.rows.length > rows.length) body.deleteRow(-1);
}

function renderChains(chains) {
  const body = $("#chains tbody");
  const problems = [];
  const reorgs = [];
  patch(
    body,
    chains.map((c) => {
      const rates = observe(c);
      if (c.problem) problems.push(c.problem);
      for (const r of c.recent_reorgs) reorgs.push({ chain: c.name, ...r });
      const retained = c.retained ? `${fmt.num(c.retained.from_block)} – ${fmt.num(c.retained.to_block)}` : "—";
      let backfill = "caught up";
      if (c.backfill.active) {
        const rate = rates.blocksPerSecond;
        const eta = rate && rate > 0 ? c.backfill.remaining_blocks / rate : null;
        backfill = `${fmt.num(c.backfill.remaining_blocks)} blocks left · ${fmt.rate(rate)} blocks/s · ETA ${fmt.eta(eta)}`;
      }
      const lagClass = c.lag_blocks < 0 || c.lag_blocks > 50 ? "bad" : c.lag_blocks > 5 ? "warn" : "good";
      return el(
        "tr",
        { "data-chain": c.name },
        el("td", { "data-field": "name" }, c.name),
        el("td", { "data-field": "head" }, fmt.num(c.head)),
        el("td", { "data-field": "checkpoint" }, fmt.num(c.checkpoint)),
        el("td", { "data-field": "lag", class: lagClass }, fmt.num(c.lag_blocks)),
        el("td", { "data-field": "safe" }, fmt.num(c.safe_block)),
        el("td", { "data-field": "finalized" }, fmt.num(c.finalized_block)),
        el("td", { "data-field": "retained" }, retained),
        el("td", { "data-field": "backfill" }, backfill),
        el("td", { "data-field": "events-per-second" }, fmt.rate(rates.eventsPerSecond)),
        el("td", {}, sparkline(rates.spark)),
      );
    }),
  );
  const problemText = problems.join(" · ");
  if ($("#problems").textContent !== problemText) $("#problems").textContent = problemText;
  renderReorgs(reorgs);
}

function renderReorgs(reorgs) {
  reorgs.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  const rows = reorgs.slice(0, 10).map((r) =>
    el(
      "tr",
      {},
      el("td", {}, r.chain),
      el("td", { class: r.too_deep || r.depth > 16 ? "bad" : "" }, r.too_deep ? `${r.depth}+ (too deep)` : r.depth),
      el("td", {}, fmt.num(r.ancestor_block)),
      el("td", { title: r.at }, fmt.ago(r.at)),
    ),
  );
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "none since start")));
  patch($("#reorgs tbody"), rows);
}

function raceBar(p) {
  const total = p.delivered_first + p.delivered_late + p.missed;
  const bar = el("span", { class: "race", title: `first ${p.delivered_first} · late ${p.delivered_late} · missed ${p.missed}` });
  for (const [cls, n] of [["first", p.delivered_first], ["late", p.delivered_late], ["missed", p.missed]]) {
    const part = el("span", { class: cls });
    part.style.width = total > 0 ? `${(100 * n) / total}%` : "0";
    bar.append(part);
  }
  return bar;
}

function renderProviders(providers) {
  patch(
    $("#providers tbody"),
    providers.map((p) => {
      const health = p.healthy
        ? el("span", { class: "good" }, "healthy")
        : el("span", { class: "bad" }, `unhealthy (${(p.unhealthy_reason ?? "unknown").replace("_", " ")})`);
      const breakerClass = p.breaker.state === "open" ? "bad" : p.breaker.state === "half_open" ? "warn" : "good";
      const historyText = p.breaker.history
        .slice(-4)
        .map((t) => `${t.from}→${t.to} ${fmt.ago(t.at)}`)
        .join(", ");
      const errors = `${fmt.num(p.errors)} of ${fmt.num(p.requests)} (${(100 * p.error_rate).toFixed(1)} %)`;
      const paused = p.unhealthy_reason === "paused";
      const control = el(
        "button",
        { type: "button", "data-action": paused ? "resume" : "pause" },
        paused ? "resume" : "pause",
      );
      control.addEventListener("click", () => act(`/v1/providers/${p.chain}/${p.id}/${paused ? "resume" : "pause"}`));
      return el(
        "tr",
        { "data-provider": p.id, "data-chain": p.chain },
        el("td", {}, `${p.chain} / ${p.id}`, el("br"), el("span", { class: "muted" }, p.connected ? "stream connected" : "no stream")),
        el("td", { "data-field": "health" }, health),
        el(
          "td",
          { "data-field": "breaker" },
          el("span", { class: breakerClass }, p.breaker.state.replace("_", "-")),
          p.breaker.consecutive_failures ? ` (${p.breaker.consecutive_failures} failures)` : "",
          el("div", { class: "history muted" }, historyText),
        ),
        el("td", { "data-field": "head" }, `${fmt.num(p.head)} / ${fmt.num(p.lag_blocks)}`),
        el("td", { "data-field": "latency" }, `${fmt.ms(p.latency_ms.p50)} / ${fmt.ms(p.latency_ms.p99)}`),
        el("td", { "data-field": "race" }, raceBar(p), `${fmt.num(p.delivered_first)} · ${fmt.num(p.delivered_late)} · ${fmt.num(p.missed)}`),
        el("td", { "data-field": "errors" }, errors, errorKinds(p.errors_by_class)),
        el("td", { "data-field": "control" }, control),
      );
    }),
  );
}

// The kinds of error a provider met, most frequent first (none when it met none).
function errorKinds(byClass) {
  const kinds = Object.entries(byClass ?? {})
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  const list = el("div", { class: "history muted" });
  kinds.forEach(([kind, n], i) => {
    if (i > 0) list.append(" · ");
    list.append(el("span", { "data-kind": kind }, `${kind.replace("_", " ")} ${fmt.num(n)}`));
  });
  return list;
}

function renderProcesses(body) {
  patch(
    $("#processes tbody"),
    body.processes.map((p) =>
      el(
        "tr",
        { "data-process": `${p.kind}/${p.id}` },
        el("td", {}, `${p.kind} ${p.id}`),
        el("td", { class: p.status === "running" ? "good" : p.status === "failed" ? "bad" : "warn" }, p.status),
        el("td", {}, p.restarts),
        el("td", { class: "muted" }, p.last_error ?? ""),
      ),
    ),
  );
}

// An operator's pause or resume; the next poll shows the result.
async function act(path) {
  try {
    const response = await fetch(path, { method: "POST" });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      $("#problems").textContent = body?.error?.message ?? `${path}: ${response.status}`;
    }
  } catch (err) {
    $("#problems").textContent = `${path}: ${err}`;
  }
}

// --- polling -----------------------------------------------------------------------------

async function poll() {
  pollTimer = null;
  pollBusy = true;
  try {
    const [chains, providers, processes] = await Promise.all([
      getJson("/v1/chains"),
      getJson("/v1/providers"),
      getJson("/v1/processes"),
    ]);
    renderChains(chains.chains);
    renderProviders(providers.providers);
    renderProcesses(processes);
    failures = 0;
    setConn("live");
    $("#updated").textContent = `updated ${clock.format(new Date())}`;
  } catch (err) {
    failures += 1;
    setConn("reconnecting");
  }
  const delay = failures === 0 ? POLL_MS : Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** Math.min(failures, 3));
  pollBusy = false;
  if (!document.hidden) pollTimer = setTimeout(poll, delay);
}

let pollTimer = null;
let pollBusy = false;

// --- live tail ---------------------------------------------------------------------------

const tail = {
  socket: null,
  paused: false,
  cursor: null, // the last change shown: a resume starts right after it
  // Blocks by default: a page left open on a busy chain need not carry every log.
  filters: new URLSearchParams({ kind: "block" }),
  retries: 0,
};

// The tail's state line, now (a user's action, a disconnection) or with the next redraw (the
// cursor moving on, which would otherwise rewrite the line for every event).
let tailText = null;
function tailState(text) {
  tailText = null;
  $("#tail-state").textContent = text;
}
function tailStateLater(text) {
  tailText = text;
  scheduleDraw();
}

// The subscription goes in a first message (a URL without filters waits for one).
function subscribeMessage() {
  // Several messages per frame on a busy chain: far less work for the browser per event.
  const message = { type: "subscribe", batch: true };
  for (const [key, value] of tail.filters) {
    message[key] = key === "address" ? value.split(",") : value;
  }
  if (tail.cursor !== null) message.since = tail.cursor;
  return JSON.stringify(message);
}

// Rows wait here and are drawn every TAIL_DRAW_MS (the newest TAIL_ROWS of them), so a fast
// chain costs the page a few redraws a second, not one per event.
let queued = [];
let drawTimer = null;

function addTailRow(message) {
  queued.push(message);
  if (queued.length >= 2 * TAIL_ROWS) queued = queued.slice(-TAIL_ROWS);
  scheduleDraw();
}

function scheduleDraw() {
  if (drawTimer === null) drawTimer = setTimeout(() => requestAnimationFrame(drawTail), TAIL_DRAW_MS);
}

// Draws what waits now (also called directly when the tail pauses, so what it received shows).
function drawTail() {
  clearTimeout(drawTimer);
  drawTimer = null;
  if (tailText !== null) tailState(tailText);
  if (queued.length === 0) return;
  const body = $("#tail tbody");
  const rows = queued.slice(-TAIL_ROWS).map(tailRow).reverse();
  queued = [];
  if (rows.length === TAIL_ROWS) body.replaceChildren(...rows);
  else body.prepend(...rows);
  while (body.rows.length > TAIL_ROWS) body.deleteRow(body.rows.length - 1);
}

function tailRow(message) {
  const e = message.event;
  return el(
    "tr",
    { class: message.type === "removed" ? "removed" : "", "data-cursor": message.cursor },
    el("td", {}, message.cursor),
    el("td", {}, e.chain),
    el("td", {}, e.kind),
    el("td", {}, fmt.num(e.block_number)),
    el("td", {}, e.log_index ?? ""),
    el("td", {}, fmt.short(e.address)),
    el("td", {}, message.type === "removed" ? "removed" : e.finality),
  );
}

// One message of the tail's stream (a frame holds one, or several as an array).
function onTailMessage(message) {
  switch (message.type) {
    case "event":
    case "removed":
      addTailRow(message);
      tail.cursor = message.cursor;
      tailStateLater(`following · cursor ${tail.cursor}`);
      break;
    case "finality":
      tail.cursor = message.cursor;
      break;
    case "heartbeat":
      if (tail.cursor === null || message.cursor > tail.cursor) tail.cursor = message.cursor;
      break;
    case "lagged":
      tail.cursor = message.resume_from;
      break;
    case "error":
      tailState(`error: ${message.error.message}`);
      if (message.error.code === "cursor_expired") tail.cursor = message.error.oldest_cursor ?? 0;
      break;
  }
}

function openTail() {
  if (tail.paused || tail.socket !== null || document.hidden) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/stream`);
  tail.socket = socket;
  socket.onopen = () => socket.send(subscribeMessage());
  tailState(tail.cursor === null ? "following" : `resuming after ${tail.cursor}`);
  socket.onmessage = (frame) => {
    let parsed;
    try {
      parsed = JSON.parse(frame.data);
    } catch {
      return;
    }
    tail.retries = 0;
    for (const message of Array.isArray(parsed) ? parsed : [parsed]) onTailMessage(message);
  };
  socket.onclose = () => {
    if (tail.socket !== socket) return;
    tail.socket = null;
    if (tail.paused || document.hidden) return;
    tail.retries += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(tail.retries, 5));
    tailState(`disconnected; reconnecting in ${Math.round(delay / 100) / 10} s`);
    setTimeout(openTail, delay);
  };
}

function closeTail() {
  const socket = tail.socket;
  tail.socket = null;
  if (socket) socket.close();
}

$("#tail-toggle").addEventListener("click", () => {
  tail.paused = !tail.paused;
  $("#tail-toggle").textContent = tail.paused ? "resume" : "pause";
  if (tail.paused) {
    closeTail();
    drawTail();
    tailState(`paused at cursor ${tail.cursor ?? "—"}`);
  } else {
    openTail();
  }
});

$("#tail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(event.target)) {
    if (String(value).trim() !== "") params.set(key, String(value).trim());
  }
  tail.filters = params;
  tail.cursor = null; // new filters: from now on
  $("#tail tbody").replaceChildren();
  closeTail();
  openTail();
});

// A hidden page stops polling and closes its tail; shown again, it catches up from its cursor.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(pollTimer);
    pollTimer = null;
    closeTail();
    drawTail();
    if (!tail.paused) tailState(`hidden at cursor ${tail.cursor ?? "—"}`);
  } else {
    if (pollTimer === null && !pollBusy) poll();
    openTail();
  }
});

poll();
openTail();
