// The live page: polls /ui/state every second, draws each replica's lag and
// the routing decisions, runs the "try it" panel against the real API, and,
// under devstack, drives the lab. Vanilla JavaScript, no build step.
"use strict";

const KEEP_MS = 5 * 60 * 1000;
const page = {
  info: null,
  samples: [],
  lastT: 0,
  runs: 0,
  lab: null, // the lab's last state
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- state polling -------------------------------------------------------

async function poll() {
  if (polling) return; // one poll at a time
  polling = true;
  try {
    const r = await fetch(`/ui/state?since=${page.lastT}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`/ui/state answered ${r.status}`);
    const st = await r.json();
    const first = page.info === null;
    if (!first && st.instance !== page.info.instance) {
      // Another instance answered (a load balancer), or this one restarted:
      // its counters are not comparable with what we have.
      page.samples = [];
    }
    page.info = st;
    for (const s of st.samples) {
      if (s.t <= page.lastT && page.samples.length) continue; // a poll that overlapped another
      if (countersWentDown(s)) page.samples = [];
      page.samples.push(s);
      page.lastT = Math.max(page.lastT, s.t);
    }
    const cutoff = page.lastT - KEEP_MS;
    while (page.samples.length && page.samples[0].t < cutoff) page.samples.shift();
    if (first) setUp();
    renderModes();
    renderReplicas();
    renderDecisions();
  } catch (err) {
    $("modes").textContent = `cannot reach the service: ${err.message}`;
  } finally {
    polling = false;
  }
}

// countersWentDown says whether s counts fewer decisions than the last
// sample: the instance restarted.
function countersWentDown(s) {
  const prev = page.samples[page.samples.length - 1];
  if (!prev) return false;
  for (const [reason, byNode] of Object.entries(prev.decisions || {})) {
    for (const [node, n] of Object.entries(byNode)) {
      if ((((s.decisions || {})[reason] || {})[node] || 0) < n) return true;
    }
  }
  return false;
}

let polling = false;

function setUp() {
  const info = page.info;
  $("on-mode").textContent = `RYW_MODE=${info.mode}`;
  if (info.auth === "jwt") {
    $("try-token-label").hidden = false;
    $("off-disabled").hidden = false;
  }
  if (info.labUrl) {
    $("lab").hidden = false;
    $("try-lab-hint").hidden = false;
    pollLab();
    setInterval(pollLab, 2000);
  }
}

function renderModes() {
  const i = page.info;
  const badges = [`RYW_MODE=${i.mode}`, `RYW_WINDOW=${i.window}`, `AUTH_MODE=${i.auth}`];
  $("modes").replaceChildren(...badges.map((b) => el("span", { class: "badge" }, b)));
}

// ---- replicas ------------------------------------------------------------

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function renderReplicas() {
  const latest = page.samples[page.samples.length - 1];
  if (!latest) return;
  const box = $("replicas");
  for (const r of latest.replicas || []) {
    let card = box.querySelector(`.replica[data-name="${CSS.escape(r.name)}"]`);
    if (!card) {
      card = el("div", { class: "card replica", "data-name": r.name },
        el("h3", {}, r.name, " ", el("span", { class: "health" })),
        el("p", { class: "lag" }, "lag ", el("b", { class: "lag-seconds" }), " · ", el("span", { class: "lag-bytes" })),
        el("canvas", { class: "spark", width: 320, height: 60 }));
      box.append(card);
    }
    card.dataset.lagSeconds = String(r.lagSeconds);
    card.dataset.healthy = String(r.healthy);
    card.querySelector(".health").textContent = r.healthy ? "healthy" : "out of rotation";
    card.querySelector(".health").className = `health ${r.healthy ? "ok" : "bad"}`;
    card.querySelector(".lag-seconds").textContent = `${r.lagSeconds.toFixed(1)} s`;
    card.querySelector(".lag-bytes").textContent = fmtBytes(r.lagBytes);
    drawSpark(card.querySelector("canvas"), r.name);
  }
}

function drawSpark(canvas, name) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const pts = [];
  for (const s of page.samples) {
    const r = (s.replicas || []).find((x) => x.name === name);
    if (r) pts.push([s.t, r.lagSeconds]);
  }
  if (pts.length < 2) return;
  const t1 = pts[pts.length - 1][0], t0 = t1 - KEEP_MS;
  const max = Math.max(1, ...pts.map((p) => p[1]));
  ctx.strokeStyle = "#c0c4cc";
  ctx.beginPath(); ctx.moveTo(0, h - 1); ctx.lineTo(w, h - 1); ctx.stroke();
  ctx.strokeStyle = "#d9480f";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach(([t, v], i) => {
    const x = ((t - t0) / KEEP_MS) * w;
    const y = h - 2 - (v / max) * (h - 14);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#555";
  ctx.font = "10px sans-serif";
  ctx.fillText(`max ${max.toFixed(1)} s`, 4, 10);
}

// ---- routing decisions ---------------------------------------------------

function countsAt(tMin) {
  // The first sample at or after tMin (the oldest we have, if none older).
  for (const s of page.samples) if (s.t >= tMin) return s.decisions || {};
  return {};
}

function renderDecisions() {
  const latest = page.samples[page.samples.length - 1];
  if (!latest) return;
  const now = latest.decisions || {};
  const min1 = countsAt(latest.t - 60 * 1000), min5 = page.samples[0].decisions || {};
  const rows = [];
  for (const [reason, byNode] of Object.entries(now)) {
    for (const [node, n] of Object.entries(byNode)) {
      const d1 = n - ((min1[reason] || {})[node] || 0);
      const d5 = n - ((min5[reason] || {})[node] || 0);
      if (d5 > 0) rows.push({ reason, node, d1, d5 });
    }
  }
  rows.sort((a, b) => b.d5 - a.d5 || a.reason.localeCompare(b.reason));
  $("decisions").querySelector("tbody").replaceChildren(...rows.map((r) =>
    el("tr", { "data-reason": r.reason, "data-node": r.node },
      el("td", {}, r.reason), el("td", {}, r.node), el("td", { class: "num" }, String(r.d1)), el("td", { class: "num" }, String(r.d5)))));
  $("decisions-empty").hidden = rows.length > 0;
}

// ---- try it --------------------------------------------------------------

// uuid4 works outside secure contexts too (a page opened by a LAN address),
// where crypto.randomUUID does not exist.
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function demoUser(key) {
  let id = null;
  try { id = localStorage.getItem(key); } catch (_) { /* storage disabled */ }
  if (!id) {
    id = uuid4();
    try { localStorage.setItem(key, id); } catch (_) { /* a new user per visit, then */ }
  }
  return id;
}

function identity(column) {
  if (page.info.auth === "jwt") {
    const tok = $("try-token").value.trim();
    return { Authorization: `Bearer ${tok}` };
  }
  return { "X-Demo-UserId": demoUser(`ryw-try-${column}`) };
}

async function call(method, path, headers, body) {
  const r = await fetch(path, {
    method, headers: { ...headers, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    credentials: "omit", // the causal token travels through Redis here, so the two columns cannot mix cookies
    cache: "no-store",
  });
  let json = null;
  try { json = await r.json(); } catch (_) { /* not JSON */ }
  return { status: r.status, json, servedBy: r.headers.get("X-Served-By") || "?", reason: r.headers.get("X-Routing-Reason") || "?" };
}

function readLine(i, res, want) {
  let verdict, cls, shown;
  if (res.status === 200) {
    shown = res.json && res.json.name;
    const fresh = shown === want;
    verdict = fresh ? "fresh" : "stale";
    cls = verdict;
  } else if (res.status === 404) {
    shown = "no profile yet";
    verdict = "stale"; cls = "stale";
  } else {
    shown = (res.json && res.json.error && res.json.error.message) || `HTTP ${res.status}`;
    verdict = "error"; cls = "error";
  }
  return el("li", { class: cls, "data-verdict": verdict, "data-served-by": res.servedBy, "data-reason": res.reason },
    el("span", { class: "n" }, `read ${i}`), " ", el("b", {}, res.servedBy), " ",
    el("span", { class: "reason" }, res.reason), " ", el("span", { class: "verdict" }, verdict), " ",
    el("span", { class: "shown" }, shown === undefined ? "" : `"${shown}"`));
}

async function runColumn(column, name, reads, extra) {
  const list = $(`reads-${column}`), summary = $(`summary-${column}`);
  list.replaceChildren();
  summary.textContent = "saving...";
  const headers = { ...identity(column), ...extra };
  const w = await call("POST", "/api/me/profile", identity(column), { email: "demo@example.com", name, avatarUrl: null });
  if (w.status !== 200) {
    const msg = (w.json && w.json.error && w.json.error.message) || `HTTP ${w.status}`;
    summary.textContent = `the save failed: ${msg}`;
    return;
  }
  list.append(el("li", { class: "write", "data-verdict": "write" },
    el("span", { class: "n" }, "save"), " ", el("b", {}, w.servedBy), " ", el("span", { class: "reason" }, w.reason), " ", `"${name}"`));
  let fresh = 0, stale = 0, errors = 0;
  for (let i = 1; i <= reads; i++) {
    const r = await call("GET", "/api/me", headers);
    const li = readLine(i, r, name);
    list.append(li);
    if (li.dataset.verdict === "fresh") fresh++; else if (li.dataset.verdict === "stale") stale++; else errors++;
  }
  summary.textContent = `${reads} reads: ${fresh} fresh, ${stale} stale${errors ? `, ${errors} errors` : ""}`;
  summary.dataset.fresh = String(fresh);
  summary.dataset.stale = String(stale);
}

async function runTry(ev) {
  ev.preventDefault();
  const err = $("try-error");
  err.hidden = true;
  if (!page.info) {
    err.textContent = "The page has not reached the service yet; try again in a second.";
    err.hidden = false;
    return;
  }
  if (page.info.auth === "jwt" && !$("try-token").value.trim()) {
    err.textContent = "Paste a bearer token first (bin/devstack token <uuid> prints one).";
    err.hidden = false;
    return;
  }
  const button = $("try-run");
  button.disabled = true;
  try {
    page.runs++;
    const name = `${$("try-name").value.trim() || "Ada"} #${page.runs}`;
    const reads = Math.min(20, Math.max(1, Number($("try-reads").value) || 6));
    const cols = [runColumn("on", name, reads, {})];
    if (page.info.modeOverride) cols.push(runColumn("off", name, reads, { "X-RYW-Mode": "off" }));
    await Promise.all(cols);
  } catch (e) {
    err.textContent = `The try failed: ${e.message}`;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// ---- lab (devstack only) -------------------------------------------------

async function lab(method, path) {
  const r = await fetch(page.info.labUrl + path, { method, headers: { "X-RYW-Lab": "1" }, cache: "no-store" });
  const json = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(json.error || `lab answered ${r.status}`);
  return json;
}

async function pollLab() {
  try {
    page.lab = await lab("GET", "/lab/state");
    if ($("lab-error").dataset.from === "poll") $("lab-error").hidden = true;
    renderLab();
  } catch (e) {
    showLabError(e, "poll");
  }
}

// showLabError shows a failure of the lab; from says whether a poll (which
// the next good poll clears) or a button (which stays until the next click).
function showLabError(e, from) {
  $("lab-error").textContent = `lab: ${e.message}`;
  $("lab-error").dataset.from = from;
  $("lab-error").hidden = false;
}

function labButton(id, label, path) {
  const b = el("button", { id, type: "button" }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    $("lab-error").hidden = true;
    try {
      await lab("POST", path);
      await pollLab();
    } catch (e) {
      showLabError(e, "button");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

function renderLab() {
  const st = page.lab;
  const buttons = [];
  for (const r of st.replicas) {
    buttons.push(r.paused
      ? labButton(`lab-resume-${r.name}`, `Resume ${r.name}'s replay`, `/lab/replicas/${encodeURIComponent(r.name)}/resume`)
      : labButton(`lab-pause-${r.name}`, `Pause ${r.name}'s replay`, `/lab/replicas/${encodeURIComponent(r.name)}/pause`));
  }
  buttons.push(st.redisRunning
    ? labButton("lab-redis-stop", "Stop Redis", "/lab/redis/stop")
    : labButton("lab-redis-start", "Start Redis (empty)", "/lab/redis/start"));
  if (st.replicas.length > 0) {
    buttons.push(labButton("lab-failover", `Fail over: kill ${st.primary}, promote ${st.replicas[0].name}`, "/lab/failover"));
  }
  const box = $("lab-buttons");
  // Rebuild only when something changed, so that a click is never lost.
  const key = JSON.stringify(st);
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...buttons);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("try-form").addEventListener("submit", runTry);
  poll();
  setInterval(poll, 1000);
});
