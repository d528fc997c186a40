// mcpmesh dashboard: polls the mesh's own /v1 API and draws it. Every string that came from a
// server or a client (names, reasons, stderr, event details) reaches the page as a text node only:
// no innerHTML anywhere, so a server printing markup shows markup.
"use strict";

const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(200, Number(params.get("interval")) || 1500); // ?interval= for tests
const RETRY_MAX_MS = 8000; // while the mesh is away, retry with backoff up to this
const REQUEST_TIMEOUT_MS = 5000;
const PAGE = 1000; // the API's largest page
const MAX_EVENTS = 300; // kept for the event log
const MAX_LOG_LINES = 400; // kept for the selected server's stderr
const SERVER_EVENTS = 12; // shown in the detail panel
const SVG = "http://www.w3.org/2000/svg";

const view = {
  instance: null, // the mesh answering; a new one restarts its counters and log numbering
  servers: [],
  registry: null, // /v1/servers' registry: degraded while its writes wait in memory
  stats: {},
  ports: null,
  events: [],
  eventsNext: 0,
  selected: null,
  logs: { server: null, next: 0, lines: [] },
  detail: null,
  cards: new Map(), // name -> {root, fields}
  busy: new Set(), // servers with a control request in flight
};

// -- DOM helpers: text only ---------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function s(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

const $ = (id) => document.getElementById(id);

// -- formatting ---------------------------------------------------------------------------
function fmtLatency(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds === 0) return "0";
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`;
  return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

function fmtRate(rate) {
  if (!rate) return "0";
  if (rate < 0.1) return rate.toFixed(2);
  return rate < 10 ? rate.toFixed(1) : rate.toFixed(0);
}

function fmtPercent(fraction) {
  if (fraction === null || fraction === undefined) return "—";
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0)} %`;
}

function fmtClock(at) {
  return new Date(at * 1000).toLocaleTimeString([], { hour12: false });
}

function fmtAgo(at) {
  const seconds = Math.max(0, Date.now() / 1000 - at);
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d`;
}

function fmtDetail(detail) {
  return Object.entries(detail || {})
    .map(([key, value]) => `${key}=${typeof value === "string" && value && !/\s/.test(value) ? value : JSON.stringify(value)}`)
    .join(" ");
}

function portOf(server) {
  const url = server.urls && server.urls.dedicated_mcp;
  if (!url) return null;
  try {
    return new URL(url).port;
  } catch {
    return null;
  }
}

// -- the API ------------------------------------------------------------------------------
async function api(path, options = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, { cache: "no-store", signal: abort.signal, ...options });
    const body = await response.json().catch(() => null);
    return { status: response.status, body };
  } finally {
    clearTimeout(timer);
  }
}

async function getJson(path) {
  const { status, body } = await api(path);
  if (status !== 200 || body === null) throw new Error(`${path}: HTTP ${status}`);
  return body;
}

async function pages(path, key, after) {
  // Everything after the cursor, a page at a time; returns [items, next].
  const items = [];
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const body = await getJson(`${path}${sep}after=${after}&limit=${PAGE}`);
    items.push(...body[key]);
    after = body.next;
    if (body[key].length < PAGE) return [items, after];
  }
}

// -- polling ------------------------------------------------------------------------------
let retryMs = POLL_MS;
let timer = null;

async function refresh() {
  const health = await getJson("/healthz");
  if (health.mesh !== view.instance) {
    // Another mesh (or this one restarted): its cursors mean nothing here.
    view.instance = health.mesh;
    view.events = [];
    view.eventsNext = 0;
    view.logs = { server: null, next: 0, lines: [] };
  }
  const [servers, stats, ports, [events, next]] = await Promise.all([
    getJson("/v1/servers"),
    getJson("/v1/stats"),
    getJson("/v1/ports"),
    pages("/v1/events", "events", view.eventsNext),
  ]);
  view.servers = servers.servers;
  view.registry = servers.registry || null;
  view.stats = stats.servers;
  view.ports = ports;
  view.events = view.events.concat(events).slice(-MAX_EVENTS);
  view.eventsNext = next;
  if (!view.selected || !view.servers.some((x) => x.name === view.selected)) {
    view.selected = fromHash() || (view.servers[0] && view.servers[0].name) || null;
  }
  await refreshSelected();
  render();
}

async function refreshSelected() {
  const name = view.selected;
  if (!name) return;
  const path = `/v1/servers/${encodeURIComponent(name)}`;
  if (view.logs.server !== name) view.logs = { server: name, next: 0, lines: [] };
  const [detail, [lines, next]] = await Promise.all([getJson(path), pages(`${path}/logs`, "lines", view.logs.next)]);
  if (view.selected !== name) return; // the user picked another server meanwhile
  view.detail = detail;
  view.logs.lines = view.logs.lines.concat(lines).slice(-MAX_LOG_LINES);
  view.logs.next = next;
}

let polling = false; // one refresh at a time: two would both read from the same cursors
let pollAgain = false;

async function loop() {
  if (polling) {
    pollAgain = true; // asked for fresh data (a click) while a refresh runs: one more right after
    return;
  }
  polling = true;
  clearTimeout(timer);
  try {
    await refresh();
    setConnection(true);
    retryMs = POLL_MS;
  } catch (error) {
    setConnection(false, error);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  } finally {
    polling = false;
  }
  timer = setTimeout(loop, pollAgain ? 0 : retryMs);
  pollAgain = false;
}

function setConnection(live, error) {
  const node = $("connection");
  node.dataset.state = live ? "live" : "offline";
  setText(node, live ? "live" : `disconnected — retrying in ${Math.round(Math.min(retryMs * 2, RETRY_MAX_MS) / 1000)} s`);
  node.title = live ? `mesh ${view.instance}, every ${POLL_MS / 1000} s` : String(error);
  document.body.classList.toggle("offline", !live);
}

function fromHash() {
  const match = /^#server=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function select(name) {
  if (view.selected === name) return;
  view.selected = name;
  view.detail = null;
  history.replaceState(null, "", `#server=${encodeURIComponent(name)}`);
  render();
  loop();
}

// -- control ------------------------------------------------------------------------------
async function control(name, action) {
  view.busy.add(name);
  render();
  try {
    const { status, body } = await api(`/v1/servers/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    if (status >= 400 || body === null) {
      toast(`${action} ${name}: ${(body && body.message) || `HTTP ${status}`}`, true);
    } else {
      const done = body.changed ? "done" : `nothing to do (already ${body.server.state})`;
      toast(`${action} ${name}: ${done}; now ${body.server.state} (${body.server.reason})`);
    }
  } catch (error) {
    toast(`${action} ${name}: the mesh did not answer (${error})`, true);
  } finally {
    view.busy.delete(name);
    loop();
  }
}

let toastTimer = null;
function toast(message, isError = false) {
  const node = $("toast");
  setText(node, message);
  node.classList.toggle("error", isError);
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 6000);
}

function actionButtons(name, state) {
  const busy = view.busy.has(name);
  const spec = [
    ["restart", "Restart", "↻", false],
    ["stop", "Stop", "■", state === "stopped"],
    ["start", "Start", "▶", !(state === "stopped" || state === "failed")],
  ];
  return spec.map(([action, label, icon, off]) =>
    h(
      "button",
      {
        type: "button",
        class: `action ${action}`,
        "data-action": action,
        "aria-label": `${label} ${name}`,
        title: `${label} ${name}`,
        disabled: busy || off,
        onclick: (event) => {
          event.stopPropagation();
          control(name, action);
        },
      },
      `${icon} ${label}`,
    ),
  );
}

// -- rendering ----------------------------------------------------------------------------
function render() {
  renderSummary();
  renderCards();
  renderDetail();
  renderEvents();
  renderPorts();
}

function renderSummary() {
  const counts = {};
  let sessions = 0;
  let rate = 0;
  for (const server of view.servers) {
    counts[server.state] = (counts[server.state] || 0) + 1;
    sessions += server.sessions;
    rate += (view.stats[server.name] && view.stats[server.name].rate) || 0;
  }
  const parts = [h("span", {}, h("span", { class: "figure", text: view.servers.length }), " servers")];
  for (const state of ["healthy", "starting", "degraded", "restarting", "unhealthy", "failed", "stopped"]) {
    if (counts[state]) parts.push(h("span", { class: "pill", "data-state": state, text: `${counts[state]} ${state}` }));
  }
  parts.push(h("span", { class: "sep", text: "|" }));
  parts.push(h("span", {}, h("span", { class: "figure", text: sessions }), " sessions"));
  parts.push(h("span", {}, h("span", { class: "figure", text: fmtRate(rate) }), " req/s"));
  if (view.registry && view.registry.state === "degraded") {
    // The mesh serves from memory meanwhile: said, not hidden (the reason names the file and the backlog).
    parts.push(h("span", { id: "registry", class: "pill", "data-state": "degraded", text: view.registry.reason }));
  }
  $("summary").replaceChildren(...parts);
}

function figure(label) {
  const number = h("span", { text: "—" });
  const unit = h("span", { class: "unit" });
  const value = h("span", { class: "value" }, number, unit);
  return { box: h("div", { class: "figure-box" }, value, h("span", { class: "label", text: label })), value, number, unit };
}

function setFigure(fig, text) {
  // "326 µs" -> a big 326 and a small " µs", so a figure never wraps in its box.
  const cut = text.lastIndexOf(" ");
  setText(fig.number, cut < 0 ? text : text.slice(0, cut));
  setText(fig.unit, cut < 0 ? "" : text.slice(cut));
}

function fact(label) {
  const value = h("dd");
  return { box: h("div", {}, h("dt", { text: label }), value), value };
}

function makeCard(name) {
  const title = h("button", { type: "button", class: "card-title", text: name, "aria-label": `Show details of ${name}` });
  const pill = h("span", { class: "pill", "data-role": "state" });
  const reason = h("p", { class: "reason", "data-role": "reason" });
  const figures = { rate: figure("req/s"), p50: figure("p50"), p99: figure("p99"), errors: figure("errors") };
  const spark = s("svg", { class: "spark", "aria-hidden": "true", preserveAspectRatio: "none" });
  const facts = { sharing: fact("sharing"), pid: fact("pid"), port: fact("port"), restarts: fact("restarts") };
  const clients = h("div", { class: "clients", "data-role": "clients" });
  const lastError = h("p", { class: "last-error", "data-role": "last-error", hidden: true });
  const actions = h("div", { class: "actions" });
  const root = h(
    "article",
    { class: "card", "data-server": name, "aria-label": name, onclick: () => select(name) },
    h("div", { class: "card-head" }, title, pill),
    reason,
    h("div", { class: "figures" }, ...Object.values(figures).map((f) => f.box)),
    spark,
    h("dl", { class: "facts" }, ...Object.values(facts).map((f) => f.box)),
    clients,
    lastError,
    actions,
  );
  for (const [key, f] of Object.entries(figures)) f.value.dataset.role = key;
  for (const [key, f] of Object.entries(facts)) f.value.dataset.role = key;
  return { root, pill, reason, figures, facts, clients, lastError, actions, spark, actionsKey: "" };
}

function renderCards() {
  const container = $("cards");
  const names = new Set(view.servers.map((x) => x.name));
  for (const [name, card] of view.cards) {
    if (!names.has(name)) {
      card.root.remove();
      view.cards.delete(name);
    }
  }
  view.servers.forEach((server, index) => {
    let card = view.cards.get(server.name);
    if (!card) {
      card = makeCard(server.name);
      view.cards.set(server.name, card);
    }
    if (container.children[index] !== card.root) container.insertBefore(card.root, container.children[index] || null);
    updateCard(card, server, view.stats[server.name]);
  });
}

function updateCard(card, server, stats) {
  card.root.dataset.state = server.state;
  card.root.classList.toggle("selected", server.name === view.selected);
  card.pill.dataset.state = server.state;
  setText(card.pill, server.state);
  setText(card.reason, server.reason);
  card.reason.title = server.reason;
  setFigure(card.figures.rate, stats ? fmtRate(stats.rate) : "—");
  setFigure(card.figures.p50, fmtLatency(stats && stats.p50));
  setFigure(card.figures.p99, fmtLatency(stats && stats.p99));
  setFigure(card.figures.errors, fmtPercent(stats && stats.error_rate));
  card.figures.errors.box.classList.toggle("alarm", Boolean(stats && stats.error_rate > 0.05));
  setText(card.facts.sharing.value, server.sharing);
  setText(card.facts.pid.value, server.pid ?? "—");
  setText(card.facts.port.value, portOf(server) ?? "—");
  card.facts.port.box.title = "its own port (dedicated_port); every server is also on the main port";
  setText(card.facts.restarts.value, server.restarts);
  card.clients.replaceChildren(
    h("b", { text: `${server.sessions} ${server.sessions === 1 ? "session" : "sessions"}` }),
    server.clients.length ? ` · ${server.clients.join(", ")}` : "",
  );
  card.clients.title = server.clients.join(", ");
  card.lastError.hidden = !server.last_error;
  setText(card.lastError, server.last_error ? `last error: ${server.last_error}` : "");
  card.lastError.title = server.last_error || "";
  const key = `${server.state}|${view.busy.has(server.name)}`;
  if (card.actionsKey !== key) {
    card.actionsKey = key;
    card.actions.replaceChildren(...actionButtons(server.name, server.state));
  }
  drawSpark(card.spark, stats ? stats.series : []);
}

function drawSpark(svg, series) {
  const width = 300;
  const height = 26;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...series.map((p) => p.requests));
  const step = width / Math.max(1, series.length);
  const bars = [s("line", { class: "base", x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5 })];
  series.forEach((point, i) => {
    if (!point.requests) return;
    const total = Math.max(1.5, (point.requests / max) * height);
    const errors = (point.errors / max) * height;
    bars.push(s("rect", { x: i * step + 0.5, y: height - total, width: Math.max(1, step - 1), height: total - errors }));
    if (errors > 0) bars.push(s("rect", { class: "err", x: i * step + 0.5, y: height - errors, width: Math.max(1, step - 1), height: errors }));
  });
  svg.replaceChildren(...bars);
}

function renderDetail() {
  const server = view.servers.find((x) => x.name === view.selected);
  const panel = $("detail");
  panel.hidden = !server;
  if (!server) return;
  panel.dataset.server = server.name;
  setText($("detail-title"), server.name);
  const pill = $("detail-state");
  pill.dataset.state = server.state;
  setText(pill, server.state);
  const since = server.state === "healthy" && server.uptime !== null ? `up ${fmtAgo(server.since)}` : `for ${fmtAgo(server.since)}`;
  setText($("detail-reason"), `${server.reason} · ${since}${server.era ? ` · ${server.era} era` : ""}`);
  const actions = $("detail-actions");
  const key = `${server.name}|${server.state}|${view.busy.has(server.name)}`;
  if (actions.dataset.key !== key) {
    actions.dataset.key = key;
    actions.replaceChildren(...actionButtons(server.name, server.state));
  }
  const urls = [];
  for (const [label, url] of Object.entries(server.urls || {})) urls.push(h("dt", { text: label }), h("dd", { text: url }));
  if (server.circuit && server.circuit.state !== "closed") {
    urls.push(h("dt", { text: "circuit" }), h("dd", { text: `${server.circuit.state} (${server.circuit.failures} time-outs)` }));
  }
  $("detail-urls").replaceChildren(...urls);
  drawChart($("chart"), view.stats[server.name]);
  renderTools(server);
  renderStderr(server.name);
  const mine = view.events.filter((e) => e.server === server.name && e.kind !== "tool_call").slice(-SERVER_EVENTS).reverse();
  $("server-events").replaceChildren(
    ...(mine.length
      ? mine.map((e) =>
          h("li", {}, h("span", { class: "time", text: fmtClock(e.at) }), kindLabel(e), h("span", { class: "detail-text", text: fmtDetail(e.detail), title: fmtDetail(e.detail) })),
        )
      : [h("li", { class: "hint", text: "no events yet" })]),
  );
}

function renderTools(server) {
  const detail = view.detail && view.detail.name === server.name ? view.detail : null;
  const tools = detail && detail.catalog && detail.catalog.tools ? detail.catalog.tools.names : null;
  const extra = [];
  if (server.prompts) extra.push(`${server.prompts} prompts`);
  if (server.resources) extra.push(`${server.resources} resources`);
  setText($("tools-title"), `Tools${tools ? ` (${tools.length})` : ""}${extra.length ? ` · ${extra.join(" · ")}` : ""}`);
  const items = tools && tools.length ? tools.map((name) => h("li", { text: name })) : [h("li", { class: "none", text: tools ? "none" : "not read yet" })];
  $("tools").replaceChildren(...items);
}

function renderStderr(name) {
  const box = $("stderr");
  const lines = view.logs.server === name ? view.logs.lines : [];
  const key = `${name}|${lines.length ? lines[lines.length - 1].n : 0}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const nodes = [];
  for (const line of lines) {
    nodes.push(h("span", { class: "pid", text: `${fmtClock(line.at)} [${line.pid ?? "-"}] ` }), `${line.text}\n`);
  }
  if (!nodes.length) nodes.push(h("span", { class: "pid", text: "(nothing on stderr yet)" }));
  box.replaceChildren(...nodes);
  if (atBottom) box.scrollTop = box.scrollHeight; // follow the tail unless the reader scrolled up
}

function kindLabel(event) {
  const label = h("span", { class: "kind", "data-kind": event.kind, text: event.kind.replace(/_/g, " ") });
  if (event.kind === "state_changed" && event.detail && typeof event.detail.state === "string") {
    label.dataset.state = event.detail.state;
    label.textContent = `→ ${event.detail.state}`;
  }
  return label;
}

function renderEvents() {
  const showCalls = $("show-tool-calls").checked;
  const shown = view.events.filter((e) => showCalls || e.kind !== "tool_call").slice(-150).reverse();
  const body = $("events");
  const key = `${showCalls}|${view.events.length ? view.events[view.events.length - 1].id : 0}|${view.events.length}`;
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren(
    ...shown.map((e) =>
      h(
        "tr",
        { "data-event": e.id },
        h("td", { text: fmtClock(e.at), title: new Date(e.at * 1000).toISOString() }),
        h("td", { text: e.server ?? "—" }),
        h("td", {}, kindLabel(e)),
        h("td", { title: fmtDetail(e.detail) }, h("div", { class: "clamp", text: fmtDetail(e.detail) })),
      ),
    ),
  );
  if (!shown.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "hint", text: "no events yet" })));
}

function renderPorts() {
  const ports = view.ports;
  if (!ports) return;
  setText($("ports-range"), ports.range ? `${ports.range} · ${ports.used} of ${ports.size} held` : "no range configured");
  const fill = $("ports-meter");
  const share = ports.size ? ports.used / ports.size : 0;
  fill.style.width = `${Math.round(share * 100)}%`; // CSSOM, which a strict style-src allows
  fill.classList.toggle("high", share > 0.9);
  const rows = ports.ports.map((p) =>
    h(
      "tr",
      {},
      h("td", { text: p.port }),
      h("td", { text: p.holder }),
      h("td", {}, h("span", { class: "pill", "data-state": p.state, text: p.state })),
      h("td", { text: p.since ? `${fmtAgo(p.since)} ago` : "—" }),
    ),
  );
  $("ports").replaceChildren(...(rows.length ? rows : [h("tr", { class: "none" }, h("td", { colspan: 4, text: "no dedicated ports in use" }))]));
}

// -- the latency chart --------------------------------------------------------------------
function niceCeiling(value) {
  if (value <= 0) return 0.001;
  const exponent = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (value <= m * exponent) return m * exponent;
  return 10 * exponent;
}

function drawChart(container, stats) {
  const series = stats ? stats.series : [];
  const width = Math.max(280, container.clientWidth || 400);
  const height = 150;
  const pad = { left: 46, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" });
  const maxLatency = niceCeiling(Math.max(0, ...series.map((p) => p.p99 || 0)));
  const maxRequests = Math.max(1, ...series.map((p) => p.requests));
  const step = plotW / Math.max(1, series.length);
  const x = (i) => pad.left + i * step + step / 2;
  const y = (v) => pad.top + plotH - (v / maxLatency) * plotH;

  for (const f of [0, 0.5, 1]) {
    const yy = y(maxLatency * f);
    svg.append(s("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: yy, y2: yy }));
    const label = s("text", { class: "axis", x: pad.left - 6, y: yy + 3, "text-anchor": "end" });
    label.textContent = fmtLatency(maxLatency * f);
    svg.append(label);
  }
  [
    [0, "−10 min"],
    [series.length / 2, "−5 min"],
    [series.length - 1, "now"],
  ].forEach(([i, text], k) => {
    const label = s("text", { class: "axis", x: k === 0 ? pad.left : k === 2 ? width - pad.right : x(i), y: height - 4, "text-anchor": ["start", "middle", "end"][k] });
    label.textContent = text;
    svg.append(label);
  });

  // Request volume as faint bars in the lower third, errors in red on top of them.
  series.forEach((p, i) => {
    if (!p.requests) return;
    const barH = Math.max(1.5, (p.requests / maxRequests) * plotH * 0.35);
    const errH = (p.errors / maxRequests) * plotH * 0.35;
    svg.append(s("rect", { class: "bar", x: x(i) - step / 2 + 0.5, y: pad.top + plotH - barH, width: Math.max(1, step - 1), height: barH }));
    if (errH > 0) svg.append(s("rect", { class: "bar err", x: x(i) - step / 2 + 0.5, y: pad.top + plotH - errH, width: Math.max(1, step - 1), height: errH }));
  });

  for (const key of ["p99", "p50"]) {
    let d = "";
    let pen = "M";
    series.forEach((p, i) => {
      if (p[key] === null || p[key] === undefined) {
        pen = "M"; // a gap where no call ended, rather than a line through it
        return;
      }
      d += `${pen}${x(i).toFixed(1)},${y(p[key]).toFixed(1)} `;
      pen = "L";
    });
    if (d) svg.append(s("path", { class: `line ${key}`, d }));
  }
  // Points alone in a run would not draw as a line: mark every point with a dot as well.
  for (const key of ["p99", "p50"]) {
    series.forEach((p, i) => {
      if (p[key] !== null && p[key] !== undefined) svg.append(s("circle", { class: `line ${key}`, cx: x(i), cy: y(p[key]), r: 1.5 }));
    });
  }
  series.forEach((p, i) => {
    const hit = s("rect", { class: "hit", x: x(i) - step / 2, y: pad.top, width: step, height: plotH });
    const title = s("title");
    title.textContent = `${fmtClock(p.at)}: ${p.requests} requests, ${p.errors} errors, p50 ${fmtLatency(p.p50)}, p99 ${fmtLatency(p.p99)}`;
    hit.append(title);
    svg.append(hit);
  });
  if (!series.some((p) => p.requests)) {
    const empty = s("text", { class: "empty", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" });
    empty.textContent = "no calls in the last 10 minutes";
    svg.append(empty);
  }
  const total = series.reduce((sum, p) => sum + p.requests, 0);
  container.setAttribute("aria-label", `latency chart: ${total} requests in the last 10 minutes, p50 ${fmtLatency(stats && stats.p50)}, p99 ${fmtLatency(stats && stats.p99)} over the last minute`);
  container.replaceChildren(svg);
}

// -- start --------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("show-tool-calls").addEventListener("change", () => {
    $("events").dataset.key = "";
    renderEvents();
  });
  window.addEventListener("hashchange", () => {
    const name = fromHash();
    if (name) select(name);
  });
  loop();
});
