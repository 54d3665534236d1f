// The dashboard: draws what /api/... returns (the coordinator's JSON, trm.proto's field names).
// No logic of its own beyond layout; no library; charts are SVG drawn here.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const app = () => $("#app");
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3461c1", "#c2372e", "#1f8a4c", "#b7791f", "#7b3fb5", "#2a9aa8"];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  if (!r.ok) throw new Error(body.error || `${path}: HTTP ${r.status}`);
  return body;
}

const num = (v) => (v === undefined || v === null ? 0 : Number(v));
const stateName = (s) => (s || "JOB_STATE_UNSPECIFIED").replace("JOB_", "").toLowerCase();
const terminal = (s) => ["succeeded", "failed", "cancelled"].includes(stateName(s));
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  v = Number(v);  // proto JSON writes NaN / Infinity as strings
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}
function age(ms) {
  ms = num(ms);
  if (!ms) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}
function badge(state) { return el("span", { class: "state " + stateName(state), text: stateName(state) }); }
function progress(step, total) {
  const bar = el("span", { class: "bar", title: `${step} / ${total}` }, el("span"));
  bar.firstChild.style.width = total > 0 ? `${Math.min(100, (100 * step) / total)}%` : "0";
  return bar;
}
function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return "";
}

// ---------------------------------------------------------------- charts

// series: [{name, steps:[], values:[]}]; one chart, shared axes. data-* attributes say what is
// drawn (the browser test reads them).
function chart(id, title, series, { log = false } = {}) {
  const W = 560, H = 220, L = 52, R = 10, T = 10, B = 24;
  const box = svg("svg", { class: "chart", id, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const pts = [];
  for (const s of series)
    for (let i = 0; i < s.steps.length; ++i) {
      const v = s.values[i];
      if (v === null || v === undefined || !Number.isFinite(v) || (log && v <= 0)) continue;
      pts.push([num(s.steps[i]), log ? Math.log10(v) : v]);
    }
  const card = el("div", { class: "card" }, el("h3", { text: title }));
  if (!pts.length) {
    card.append(el("p", { class: "muted", text: "no points yet" }));
    return card;
  }
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  box.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  box.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let k = 0; k <= 4; ++k) {
    const y = y0 + ((y1 - y0) * k) / 4;
    const t = svg("text", { x: L - 4, y: Y(y) + 3, "text-anchor": "end" });
    t.textContent = fmt(log ? 10 ** y : y, 3);
    box.append(t, svg("line", { class: "axis", x1: L, y1: Y(y), x2: W - R, y2: Y(y) }));
    const xs = x0 + ((x1 - x0) * k) / 4;
    const tx = svg("text", { x: X(xs), y: H - 8, "text-anchor": "middle" });
    tx.textContent = Math.round(xs);
    box.append(tx);
  }
  const legend = el("div", { class: "legend" });
  series.forEach((s, n) => {
    let d = "", count = 0;
    for (let i = 0; i < s.steps.length; ++i) {
      const v = s.values[i];
      if (v === null || v === undefined || !Number.isFinite(v) || (log && v <= 0)) continue;
      d += `${count ? "L" : "M"}${X(num(s.steps[i])).toFixed(1)},${Y(log ? Math.log10(v) : v).toFixed(1)}`;
      ++count;
    }
    const color = COLORS[n % COLORS.length];
    box.append(svg("path", { class: "series", d, stroke: color, "data-series": s.name, "data-points": count }));
    const key = el("span", {}, el("i"), s.name);
    key.firstChild.style.background = color;
    legend.append(key);
  });
  card.append(box, legend);
  return card;
}

function sparkline(values) {
  const s = svg("svg", { class: "spark", viewBox: "0 0 110 24", preserveAspectRatio: "none" });
  const v = values.filter((x) => x !== null && Number.isFinite(x));
  if (v.length < 2) return s;
  const lo = Math.min(...v), hi = Math.max(...v) === lo ? lo + 1 : Math.max(...v);
  s.append(svg("path", { d: v.map((y, i) => `${i ? "L" : "M"}${((110 * i) / (v.length - 1)).toFixed(1)},${(22 - (20 * (y - lo)) / (hi - lo)).toFixed(1)}`).join("") }));
  return s;
}

// ---------------------------------------------------------------- pages

// Runs fn now and again `ms` after each run ends (never two at once); a failure shows as a
// banner and the next run tries again.
let timer = null;
function every(ms, fn) {
  clearTimeout(timer);
  const run = async () => {
    try {
      await fn();
      const b = $("#error");
      if (b) b.remove();
    } catch (e) {
      let b = $("#error");
      if (!b) { b = el("p", { id: "error", class: "error" }); app().prepend(b); }
      b.textContent = e.message;
    }
    timer = setTimeout(run, ms);
  };
  run();
}
let me = { name: "local", role: "admin", auth: false };
const whoami = api("/api/whoami").then((w) => (me = w)).catch(() => me);

function jobsPage() {
  const params = new URLSearchParams(location.search);
  const state = el("select", { id: "filter-state" }, ...["", "queued", "running", "succeeded", "failed", "cancelled"].map(
    (s) => el("option", { value: s, text: s || "any state" })));
  state.value = params.get("state") || "";
  const owner = el("input", { id: "filter-owner", placeholder: "owner", value: params.get("owner") || "" });
  const apply = () => {
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    if (owner.value) q.set("owner", owner.value);
    history.replaceState(null, "", "/" + (q.toString() ? "?" + q : ""));
    refresh();
  };
  state.addEventListener("change", apply);
  owner.addEventListener("change", apply);
  const body = el("tbody");
  app().replaceChildren(el("h1", { text: "Jobs" }), el("div", { class: "filters" }, state, owner),
    el("table", { id: "jobs" }, el("thead", {}, el("tr", {}, ...["job", "name", "owner", "state", "priority", "progress",
      "step", "loss", "", "tokens/s", "age"].map((h) => el("th", { text: h })))), body));
  const sparks = new Map();
  let sparkFetches = 0;
  async function refresh() {
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    if (owner.value) q.set("owner", owner.value);
    const { jobs = [] } = await api("/api/jobs?" + q);
    body.replaceChildren(...jobs.map((j) => {
      const s = j.spec || {};
      const spark = el("td");
      const cached = sparks.get(j.id);
      if (cached) spark.append(sparkline(cached.values));
      // Sparklines for the first rows only, a few at a time; a finished job's once.
      const stale = !cached || (!terminal(j.state) && Date.now() - cached.at > 10000);
      if (jobs.indexOf(j) < 50 && sparkFetches < 4 && stale) {
        ++sparkFetches;
        api(`/api/jobs/${j.id}/metrics?points=40`).then((m) => {
          const values = m.train.values.lm_loss || [];
          sparks.set(j.id, { values, at: Date.now() });
          spark.replaceChildren(sparkline(values));
        }).catch(() => {}).finally(() => --sparkFetches);
      }
      return el("tr", { "data-job": j.id },
        el("td", {}, el("a", { href: `/jobs/${j.id}`, text: j.id })), el("td", { text: s.name || "" }),
        el("td", { text: j.owner || "local" }), el("td", {}, badge(j.state)), el("td", { class: "num", text: s.priority || 0 }),
        el("td", {}, progress(num(j.step), num(j.total_steps))),
        el("td", { class: "num", text: `${num(j.step)}/${num(j.total_steps)}` }), el("td", { class: "num", text: j.step ? fmt(j.loss) : "–" }),
        spark, el("td", { class: "num", text: j.tokens_per_s ? fmt(j.tokens_per_s, 3) : "–" }), el("td", { text: age(j.created_unix_ms) }));
    }));
    if (!jobs.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 11, class: "muted", text: "no jobs" })));
  }
  every(3000, refresh);
}

// Appends one metrics event's point to a series as /metrics returns it (columns per key).
function appendPoint(series, step, values) {
  const n = series.steps.length;
  series.steps.push(step);
  for (const k of Object.keys(values)) if (!(k in series.values)) series.values[k] = new Array(n).fill(null);
  for (const [k, col] of Object.entries(series.values)) col.push(values[k] === undefined ? null : Number(values[k]));
}

const phaseName = (p) => (p || "PHASE_UNSPECIFIED").replace("PHASE_", "").toLowerCase();
const ms = (s) => (s === undefined || s === null ? "–" : `${fmt(Number(s) * 1000, 3)} ms`);

// Each rank as its worker last reported it. In data parallel every rank's step takes the
// slowest one's time (they meet in the all-reduce), so the slow rank is the one that waits least
// there: it is marked.
function rankRows(job) {
  const ranks = (job.ranks || []).map((r) => ({ ...r, rank: num(r.rank), t: r.last_step }));
  const timed = ranks.filter((r) => r.t);
  let slow = null;
  if (timed.length > 1) slow = timed.reduce((a, b) => (num(b.t.allreduce_s) < num(a.t.allreduce_s) ? b : a)).rank;
  const worker = (rank) => ((job.placement || []).find((p) => num(p.rank) === rank) || {}).worker_id || "";
  return ranks.map((r) => el("tr", { "data-rank": r.rank, class: r.rank === slow ? "slow" : null, title: r.rank === slow ? "waits least in the all-reduce: the others wait for it" : null },
    el("td", { class: "num", text: r.rank }), el("td", { text: worker(r.rank) }), el("td", { text: phaseName(r.phase) }),
    el("td", { class: "num", text: r.phase_elapsed_ms === undefined ? "–" : `${(num(r.phase_elapsed_ms) / 1000).toFixed(1)} s` }),
    el("td", { class: "num", text: num(r.step) }), el("td", { class: "num", text: r.t ? num(r.t.step) : "–" }),
    el("td", { class: "num step-time", text: r.t ? ms(num(r.t.total_s)) : "–" }), el("td", { class: "num", text: r.t ? ms(num(r.t.data_s)) : "–" }),
    el("td", { class: "num", text: r.t ? ms(num(r.t.compute_s)) : "–" }), el("td", { class: "num", text: r.t ? ms(num(r.t.allreduce_s)) : "–" }),
    el("td", { class: "num", text: r.rss_bytes ? `${(num(r.rss_bytes) / 1048576).toFixed(0)} MiB` : "–" })));
}

function jobPage(id) {
  let log = false, redraw = true;
  // The curves: /metrics once (downsampled), then only the metrics events after its last_seq,
  // appended; read whole again when a resumed run logs steps again or the series grows long.
  let m = null;
  const head = el("div"), charts = el("div", { class: "grid", id: "charts" }), states = el("tbody"), ckpts = el("tbody");
  const ranks = el("tbody"), logBox = el("pre", { id: "log" }), config = el("pre", { id: "config" });
  const toggle = el("label", {}, el("input", { type: "checkbox", id: "log-scale", onchange: (e) => { log = e.target.checked; redraw = true; } }), " log scale");
  app().replaceChildren(head, el("h2", { text: "Ranks" }),
    el("table", { id: "ranks" }, el("thead", {}, el("tr", {}, ...["rank", "worker", "phase", "in phase", "step", "last step", "step time", "data",
      "compute", "all-reduce", "memory"].map((h) => el("th", { text: h })))), ranks),
    el("h2", {}, "Curves ", toggle), charts,
    el("h2", { text: "Attempts" }),
    el("table", { id: "attempts" }, el("thead", {}, el("tr", {}, ...["time", "attempt", "state", "message"].map((h) => el("th", { text: h })))), states),
    el("h2", { text: "Checkpoints" }),
    el("table", { id: "checkpoints" }, el("thead", {}, el("tr", {}, ...["name", "step", "metrics", "evaluations", "size", "download"].map((h) => el("th", { text: h })))), ckpts),
    el("h2", { text: "Log (latest lines)" }), logBox, el("h2", { text: "Resolved config" }), config);

  async function curves(done) {
    if (m && done && m.caught_up) {
      // A finished job's series is complete: only the log-scale toggle redraws it.
    } else if (!m) {
      m = await api(`/api/jobs/${id}/metrics`);
      redraw = true;
    } else {
      const { events = [], last_seq } = await api(`/api/jobs/${id}/events?after=${m.last_seq}&limit=5000`);
      for (const ev of events) {
        if (!ev.metrics) continue;
        const p = ev.metrics, dst = p.eval ? m.eval : m.train, step = num(p.step);
        if (dst.steps.length && step <= num(dst.steps[dst.steps.length - 1])) { m = null; return curves(done); }
        appendPoint(dst, step, p.values || {});
        if (!p.eval) m.train_points = num(m.train_points) + 1;
        redraw = true;
      }
      m.last_seq = num(last_seq);
      // A finished job's series ends once the events after it are read.
      m.caught_up = done && events.length < 5000;
      if (m.train.steps.length > 4000) { m = null; return curves(done); }
    }
    if (!redraw) return;
    redraw = false;
    const t = m.train, e = m.eval, series = (src, name) => ({ name, steps: src.steps, values: src.values[name] || [] });
    const evalLoss = Object.keys(e.values).filter((k) => k.endsWith("lm_loss"));
    charts.replaceChildren(
      chart("chart-loss", `loss (${m.train_points} steps logged${t.steps.length < m.train_points ? `, ${t.steps.length} drawn` : ""})`,
        [series(t, "lm_loss"), ...evalLoss.map((k) => series(e, k))], { log }),
      chart("chart-lr", "learning rate", [series(t, "lr")]),
      chart("chart-tokens", "tokens/s", [series(t, "tokens_per_s")]),
      // 0 means no row halted at that step (nothing to average): not drawn.
      chart("chart-act", "ACT steps", [{ ...series(t, "act_steps"), values: (t.values.act_steps || []).map((v) => (v > 0 ? v : null)) }]),
      chart("chart-step-time", "step time (s)", [series(t, "step_s")]));
  }

  async function load() {
    const { job, checkpoints = [], states: st = [] } = await api(`/api/jobs/${id}`);
    const s = job.spec || {};
    await whoami;
    const mayCancel = me.role === "admin" || (me.role === "submit" && (job.owner || "local") === me.name);
    const cancel = terminal(job.state) || !mayCancel ? null : el("button", { class: "danger", id: "cancel", text: "Cancel", onclick: async () => {
      if (!confirm(`Cancel ${id}?`)) return;
      try {
        await api(`/api/jobs/${id}/cancel`, { method: "POST", headers: { "X-TRM-CSRF": cookie("trm_csrf") } });
        load();
      } catch (e) { alert(e.message); }
    } });
    const facts = [["state", badge(job.state)], ["owner", job.owner || "local"], ["step", `${num(job.step)} / ${num(job.total_steps)}`],
      ["loss", job.step ? fmt(job.loss) : "–"], ["tokens/s", job.tokens_per_s ? fmt(job.tokens_per_s, 3) : "–"],
      ["world size", job.world_size ? `${job.world_size} of ${s.world_size}` : `${s.world_size || 1}`], ["priority", s.priority || 0],
      ["attempt", job.attempt || 0], ["restarts", `${job.restarts || 0} of ${s.max_restarts || 0}`], ["preempted", job.preemptions || 0],
      ["dataset", job.dataset_ref || s.dataset || s.data_path || ""], ["message", job.message || ""]];
    if (job.warning) facts.push(["warning", job.warning]);
    if (job.queue_reason) facts.push(["waiting", job.queue_reason]);
    head.replaceChildren(el("h1", {}, el("span", { id: "job-id", text: id }), " ", el("span", { class: "muted", text: s.name || "" }), " ", cancel),
      el("dl", { class: "facts", id: "facts", "data-state": stateName(job.state) }, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])));
    const rr = rankRows(job);
    ranks.replaceChildren(...(rr.length ? rr : [el("tr", {}, el("td", { colspan: 11, class: "muted", text: "no ranks running" }))]));
    states.replaceChildren(...st.map((e) => el("tr", {}, el("td", { text: new Date(num(e.time_unix_ms)).toLocaleString() }),
      el("td", { text: e.state.attempt || 0 }), el("td", {}, badge(e.state.state)), el("td", { text: e.state.message || "" }))));
    const base = `/api/jobs/${encodeURIComponent(id)}/checkpoints`;
    ckpts.replaceChildren(...checkpoints.map((c) => el("tr", {}, el("td", { text: c.name }), el("td", { class: "num", text: num(c.step) }),
      el("td", { text: Object.entries(c.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") }),
      el("td", { text: (c.evals || []).map((r) => `${r.dataset || ""}: ` + Object.entries(r.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")).join("; ") }),
      el("td", { class: "num", text: `${(num(c.size_bytes) / 1048576).toFixed(1)} MiB` }),
      el("td", {}, el("a", { class: "download", href: `${base}/${encodeURIComponent(c.name)}/download`, download: "", text: "tar" }), " · ",
        el("a", { href: `${base}/${encodeURIComponent(c.name)}/download?weights_only=1`, download: "", text: "weights only" }), " · ",
        el("code", { text: `trmctl pull ${id} --select ${c.name} -o DIR` })))));
    if (job.resolved_config_json && !config.textContent) config.textContent = JSON.stringify(JSON.parse(job.resolved_config_json), null, 2);
    await curves(terminal(job.state));
    // The log's tail: the newest lines (an index walk on the server, however long the job).
    const { events = [] } = await api(`/api/jobs/${id}/logs?lines=300`);
    logBox.textContent = events.map((ev) => `[rank ${ev.log.rank || 0}] ${ev.log.text}`).join("\n") || "(no log lines)";
  }
  every(2000, load);
}

function tablePage(title, path, key, columns) {
  const body = el("tbody");
  app().replaceChildren(el("h1", { text: title }), el("table", { id: key }, el("thead", {}, el("tr", {}, ...columns.map(([h]) => el("th", { text: h })))), body));
  every(5000, async () => {
    const rows = (await api(path))[key] || [];
    body.replaceChildren(...rows.map((r) => el("tr", {}, ...columns.map(([, f]) => el("td", {}, f(r))))));
    if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colspan: columns.length, class: "muted", text: "none" })));
  });
}

async function main() {
  whoami.then((w) => {
    const who = $("#who");
    who.textContent = w.auth ? `${w.name} (${w.role}) ` : "no auth (loopback) ";
    if (w.auth) who.append(el("form", { method: "post", action: "/logout", class: "inline" }, el("button", { type: "submit", text: "Sign out" })));
  }).catch(() => {});
  const p = location.pathname.split("/").filter(Boolean);
  try {
    if (p.length === 0) jobsPage();
    else if (p[0] === "jobs" && p.length === 2) jobPage(decodeURIComponent(p[1]));
    else if (p[0] === "workers")
      tablePage("Workers", "/api/workers", "workers", [["worker", (w) => w.id], ["host", (w) => w.host || ""],
        ["alive", (w) => (w.alive ? "yes" : "no")], ["slots", (w) => `${w.free_slots || 0} free of ${w.slots || 0}`],
        ["device", (w) => w.device_kind || ""], ["jobs", (w) => (w.jobs || []).join(", ")], ["last heartbeat", (w) => age(w.last_heartbeat_unix_ms)]]);
    else if (p[0] === "datasets")
      tablePage("Datasets", "/api/datasets", "datasets", [["name", (d) => `${d.owner || "local"}/${d.name}`],
        ["content", (d) => (d.content_sha256 || "").slice(0, 12)], ["files", (d) => d.files || 0],
        ["size", (d) => `${(num(d.size_bytes) / 1048576).toFixed(2)} MiB`], ["pushed", (d) => age(d.created_unix_ms)]]);
    else if (p[0] === "queue")
      tablePage("Queue", "/api/queue", "entries", [["#", (e) => e.position], ["job", (e) => el("a", { href: `/jobs/${e.job_id}`, text: e.job_id })],
        ["owner", (e) => e.owner || ""], ["kind", (e) => e.kind || ""], ["priority", (e) => e.priority || 0],
        ["slots", (e) => (e.min_slots && e.min_slots < e.slots ? `${e.min_slots}-${e.slots}` : `${e.slots || 0}`)],
        ["waiting", (e) => age(e.waiting_since_unix_ms)], ["why", (e) => e.reason || ""]]);
    else app().replaceChildren(el("p", { text: "No such page." }));
  } catch (e) {
    app().replaceChildren(el("p", { class: "muted", text: e.message }));
  }
}

main();
