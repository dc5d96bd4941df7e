// SeqVault store explorer: draws the /ui/api JSON as SVG and tables. Plain browser JavaScript,
// no dependencies and no build step (docs/design/ui.md says why). Every cell value arrives
// from the server as a string, so int64 ids above 2^53 are shown exactly.
"use strict";
(() => {
  const cfg = JSON.parse(document.getElementById("sv-config").textContent);
  const $ = (id) => document.getElementById(id);
  const SVGNS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fdf", "#e8710a", "#1a7f37", "#c5221f", "#8430ce", "#0b8a8a",
                   "#b0891a", "#d01884", "#7f8c99"];
  const UPM = { s: 0.001, ms: 1, us: 1e3, ns: 1e6 }[cfg.time_unit]; // store units per ms
  const ORIGIN = location.origin;
  const st = { user: null, since: null, before: null, color: cfg.default_color, cols: null,
               limit: 50, cursors: [null], page: 0, zooms: [], gen: 0 };

  // ------------------------------------------------------------------ small helpers
  let busy = 0; // in-flight data requests; tests wait for data-busy="0"
  const setBusy = (d) => { busy += d; document.body.dataset.busy = String(busy); };
  const enc = encodeURIComponent;

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") u.set(k, String(v));
    }
    const s = u.toString();
    return s ? "?" + s : "";
  }

  async function getJSON(url) {
    setBusy(1);
    try {
      const r = await fetch(url, { headers: { Accept: "application/json" } });
      const body = await r.json().catch(() => null);
      if (!r.ok) throw new Error(body && body.detail ? body.detail : `HTTP ${r.status}`);
      return body;
    } finally {
      setBusy(-1);
    }
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function iso(ms, span) {
    const s = new Date(ms).toISOString().replace("T", " ").replace("Z", "");
    if (span === undefined) return s;
    if (span > 3 * 864e5) return s.slice(0, 10);
    if (span > 6 * 36e5) return s.slice(5, 16);
    if (span > 120e3) return s.slice(11, 16);
    return s.slice(11, 23);
  }

  function age(ms) {
    const a = Math.abs(ms);
    if (a >= 864e5) return (ms / 864e5).toFixed(1) + " d";
    if (a >= 36e5) return (ms / 36e5).toFixed(1) + " h";
    if (a >= 6e4) return (ms / 6e4).toFixed(1) + " min";
    if (a >= 1e3) return (ms / 1e3).toFixed(1) + " s";
    return ms + " ms";
  }

  function copy(text, btn) {
    const done = () => { btn.textContent = "copied"; setTimeout(() => { btn.textContent = "copy as curl"; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => prompt("copy:", text));
    } else {
      prompt("copy:", text);
    }
  }

  function setCurl(name, path, note) {
    const box = document.querySelector(`.curl[data-for="${name}"]`);
    box.textContent = "";
    const cmd = `curl '${ORIGIN}${path}'`;
    const code = el("code", {}, cmd);
    const btn = el("button", { type: "button" }, "copy as curl");
    btn.onclick = () => copy(cmd, btn);
    box.append(btn, code);
    if (note) box.append(el("span", { class: "note" }, note));
  }

  function status(text, isError) {
    const p = $("user-status");
    p.textContent = text;
    p.className = isError ? "hint error" : "hint";
  }

  function syncUrl() {
    const q = qs({ user: st.user, since: st.since, before: st.before, color: st.color });
    history.replaceState(null, "", location.pathname + q + location.hash);
  }

  // ------------------------------------------------------------------ timeline chart
  function drawTimeline(doc) {
    const svg = $("chart");
    svg.textContent = "";
    const W = Math.max(480, svg.parentNode.clientWidth || 960);
    const L = doc.lanes.length, laneH = 18, left = 120, right = 12, top = 4, axisH = 22;
    const H = top + L * laneH + axisH;
    const pw = W - left - right;
    const [lo, hi] = doc.range_ms;
    const x = (t) => left + ((t - lo) / (hi - lo)) * pw;
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    Object.assign(svg.dataset, { lo, hi, left, pw, mode: doc.mode });
    const laneCounts = new Array(L).fill(0);
    doc.lanes.forEach((name, i) => {
      svg.append(sv("line", { class: "axis", x1: left, x2: W - right, y1: top + (i + 1) * laneH,
                              y2: top + (i + 1) * laneH }));
      svg.append(sv("text", { x: left - 6, y: top + i * laneH + 13, "text-anchor": "end" },
                    name.length > 16 ? name.slice(0, 15) + "…" : name));
    });
    const g = sv("g", { class: "marks" });
    if (doc.mode === "points") {
      const { t_ms, lane } = doc.points;
      for (let i = 0; i < t_ms.length; i++) {
        laneCounts[lane[i]]++;
        g.append(sv("rect", { x: (x(t_ms[i]) - 0.75).toFixed(2), y: top + lane[i] * laneH + 3,
                               width: 1.5, height: laneH - 6, fill: PALETTE[lane[i] % 9] }));
      }
    } else {
      const { n, counts } = doc.bins;
      let max = 1;
      counts.forEach((row) => row.forEach((c) => { if (c > max) max = c; }));
      const bw = pw / n;
      counts.forEach((row, l) => row.forEach((c, b) => {
        laneCounts[l] += c;
        if (!c) return;
        const r = sv("rect", { x: (left + b * bw).toFixed(2), y: top + l * laneH + 2,
                               width: Math.max(bw - 0.3, 1).toFixed(2), height: laneH - 4,
                               fill: PALETTE[l % 9],
                               "fill-opacity": (0.2 + 0.8 * Math.log1p(c) / Math.log1p(max)).toFixed(3) });
        r.append(sv("title", {}, `${c} events`));
        g.append(r);
      }));
    }
    svg.append(g);
    const ticks = 6, span = hi - lo;
    for (let i = 0; i <= ticks; i++) {
      const t = lo + (span * i) / ticks;
      svg.append(sv("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" },
                    iso(t, span)));
    }
    // Drag across the plot to zoom: the selection becomes a since/before read.
    const hit = sv("rect", { x: left, y: 0, width: pw, height: H - axisH, fill: "transparent",
                             style: "cursor: crosshair", id: "chart-hit" });
    const brush = sv("rect", { class: "brush", y: 0, height: H - axisH, width: 0, visibility: "hidden" });
    svg.append(hit, brush);
    let x0 = null;
    const px = (ev) => Math.min(Math.max(ev.clientX - svg.getBoundingClientRect().left, left), left + pw);
    hit.addEventListener("mousedown", (ev) => { x0 = px(ev); brush.setAttribute("visibility", "visible"); ev.preventDefault(); });
    svg.addEventListener("mousemove", (ev) => {
      if (x0 === null) return;
      const x1 = px(ev);
      brush.setAttribute("x", Math.min(x0, x1));
      brush.setAttribute("width", Math.abs(x1 - x0));
    });
    const finish = (ev) => {
      if (x0 === null) return;
      const x1 = px(ev), a = Math.min(x0, x1), b = Math.max(x0, x1);
      x0 = null;
      brush.setAttribute("visibility", "hidden");
      if (b - a < 3) return;
      zoomTo(lo + ((a - left) / pw) * span, lo + ((b - left) / pw) * span);
    };
    svg.addEventListener("mouseup", finish);
    svg.addEventListener("mouseleave", finish);

    const legend = $("legend");
    legend.textContent = "";
    doc.lanes.forEach((name, i) => {
      const s = el("span", { "data-lane": name });
      s.append(el("i", { style: `background:${PALETTE[i % 9]}` }), `${name} ${laneCounts[i].toLocaleString()}`);
      legend.append(s);
    });
    if (doc.mode === "bins") {
      legend.append(el("span", { class: "note" },
        `${doc.count.toLocaleString()} events in ${doc.bins.n} bins of ${age(doc.bins.width_ms)} (downsampled on the server)`));
    }
  }

  function drawBars(svg, counts, { height = 90, onClick, label } = {}) {
    svg.textContent = "";
    const W = Math.max(200, svg.parentNode.clientWidth || 600);
    svg.setAttribute("width", W);
    svg.setAttribute("height", height);
    const max = Math.max(1, ...counts), bw = W / counts.length, h = height - 14;
    counts.forEach((c, i) => {
      const r = sv("rect", { x: (i * bw).toFixed(2), y: (h - (c / max) * h).toFixed(2),
                             width: Math.max(bw - 1, 0.5).toFixed(2), height: ((c / max) * h).toFixed(2),
                             fill: "#2f6fdf" });
      r.append(sv("title", {}, label ? label(i, c) : `${c}`));
      if (onClick && c) { r.style.cursor = "zoom-in"; r.addEventListener("click", () => onClick(i)); }
      svg.append(r);
    });
    svg.append(sv("text", { x: 0, y: height - 2 }, `max ${max.toLocaleString()}`));
  }

  function drawActivity(doc) {
    const a = doc.activity;
    const name = a.bucket_ms === 36e5 ? "hour" : a.bucket_ms === 864e5 ? "day" : age(a.bucket_ms);
    $("activity-title").textContent = `events per ${name}`;
    drawBars($("activity"), a.counts, {
      label: (i, c) => `${iso(a.start_ms + i * a.bucket_ms)}: ${c} events`,
      onClick: (i) => zoomTo(a.start_ms + i * a.bucket_ms, a.start_ms + (i + 1) * a.bucket_ms),
    });
    drawBars($("hours"), a.hour_of_day_utc, { label: (i, c) => `${i}:00–${i + 1}:00 UTC: ${c} events` });
  }

  async function loadTimeline(gen) {
    const p = { since: st.since, before: st.before, color: st.color };
    const path = `/ui/api/users/${enc(st.user)}/timeline${qs(p)}`;
    const doc = await getJSON(path);
    if (gen !== st.gen) return null;
    drawTimeline(doc);
    drawActivity(doc);
    performance.mark("sv:timeline-drawn"); // read by bench/ui_bench.py
    const lbl = doc.count
      ? `${iso(doc.range_ms[0])} → ${iso(doc.range_ms[1])} · ${doc.count.toLocaleString()} events`
      : "no events in this range";
    $("range-label").textContent = lbl;
    $("range-label").dataset.since = st.since === null ? "" : String(st.since);
    $("range-label").dataset.before = st.before === null ? "" : String(st.before);
    $("range-label").dataset.count = String(doc.count);
    $("zoom-out").disabled = st.zooms.length === 0;
    $("zoom-reset").disabled = st.since === null && st.before === null;
    $("events-summary").textContent = `${doc.count.toLocaleString()} in range, newest first` +
      (doc.truncated ? " (timeline shows the newest 1,000,000)" : "");
    if (!$("pit-before").value && doc.last !== null) {
      $("pit-before").value = String(BigInt(doc.last) + 1n);
    }
    setCurl("timeline", path, "(the page's downsampled view; the events themselves: below)");
    return doc;
  }

  function zoomTo(ms0, ms1) {
    st.zooms.push([st.since, st.before]);
    st.since = Math.floor(ms0 * UPM);
    st.before = Math.max(Math.ceil(ms1 * UPM), st.since + 1);
    reload();
  }

  // ------------------------------------------------------------------ events table
  function colPicker() {
    const box = $("colpick");
    box.textContent = "";
    box.append("columns:");
    for (const c of cfg.columns) {
      if (c === cfg.time_column) continue;
      const lab = el("label");
      const cb = el("input", { type: "checkbox", value: c, "data-col": c });
      cb.checked = st.cols === null || st.cols.includes(c);
      cb.addEventListener("change", () => {
        const on = [...box.querySelectorAll("input:checked")].map((i) => i.value);
        st.cols = on.length === cfg.columns.length - 1 ? null : [cfg.time_column, ...on];
        st.page = 0; st.cursors = [null];
        loadEvents(st.gen).catch((e) => status(e.message, true));
      });
      lab.append(cb, " " + c);
      box.append(lab);
    }
  }

  async function loadEvents(gen) {
    const p = { since: st.since, before: st.before, limit: st.limit,
                cursor: st.cursors[st.page], columns: st.cols ? st.cols.join(",") : null };
    const doc = await getJSON(`/ui/api/users/${enc(st.user)}/events${qs(p)}`);
    if (gen !== st.gen) return null;
    const table = $("events");
    const head = el("tr");
    for (const c of doc.columns) {
      head.append(el("th", {}, c));
      if (c === cfg.time_column) head.append(el("th", {}, "time (UTC)"));
    }
    table.tHead.replaceChildren(head);
    const body = document.createDocumentFragment();
    doc.rows.forEach((row, r) => {
      const tr = el("tr");
      row.forEach((v, i) => {
        const c = doc.columns[i];
        const td = el("td", { "data-col": c });
        if (c === cfg.time_column) {
          td.className = "t";
          const a = el("a", { title: "see what a model gets with before= this event" }, v);
          a.addEventListener("click", () => { $("pit-before").value = v; loadPit(); });
          td.append(a);
          tr.append(td, el("td", { class: "t" }, doc.iso[r]));
        } else {
          if (/^-?\d+(\.\d+)?(e[-+]?\d+)?$/.test(v)) td.className = "num";
          td.textContent = v;
          tr.append(td);
        }
      });
      body.append(tr);
    });
    table.tBodies[0].replaceChildren(body);
    performance.mark("sv:events-drawn");
    st.cursors[st.page + 1] = doc.next_cursor;
    $("older").disabled = !doc.next_cursor;
    $("newer").disabled = st.page === 0;
    const first = st.page * st.limit + 1;
    $("page-label").textContent = doc.rows.length
      ? `page ${st.page + 1} · rows ${first.toLocaleString()}–${(first + doc.rows.length - 1).toLocaleString()}`
      : "no events";
    $("page-label").dataset.page = String(st.page);
    const skip = doc.api_skip_newest;
    setCurl("events", `/users/${enc(st.user)}/sequence${qs(doc.api_params)}`,
      skip ? `(ascending; this page is those events newest first, less the ${skip} newest, shown on the page before)`
           : "(the same events, ascending by time; the table shows them newest first)");
    return doc;
  }

  // ------------------------------------------------------------------ point in time
  async function loadPit() {
    if (!st.user) return;
    const before = $("pit-before").value.trim();
    const p = { before, max_len: $("pit-len").value.trim(), columns: st.cols ? st.cols.join(",") : null };
    const out = $("pit-result");
    let doc;
    try {
      doc = await getJSON(`/ui/api/users/${enc(st.user)}/pit${qs(p)}`);
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, e.message));
      return;
    }
    const frag = document.createDocumentFragment();
    frag.append(el("p", { id: "pit-summary", "data-length": doc.length, "data-padding": doc.padding },
      `LaserReader(max_len=${doc.max_len}).read_batch([${doc.user}], before=${doc.before}) ` +
      `(${doc.before_iso} UTC): ${doc.length.toLocaleString()} real events, ` +
      `${doc.padding.toLocaleString()} padding positions on the ${doc.padding_side}; ` +
      `mask = ${doc.padding} × False then ${doc.length} × True (True = real event). ` +
      (doc.string_columns.length ? `String columns as the store's codes + 1 (0 = padding): ${doc.string_columns.join(", ")}.` : "")));
    const bar = el("div", { class: "padbar" });
    const pad = el("div", { class: "pad", title: `${doc.padding} padding` });
    pad.style.flex = String(doc.padding);
    const ev = el("div", { class: "ev", title: `${doc.length} events` });
    ev.style.flex = String(doc.length);
    bar.append(pad, ev);
    frag.append(bar);
    const table = el("table", { class: "grid", id: "pit-table" });
    const head = el("tr");
    ["position", "age", "age bucket", ...doc.columns].forEach((c) => head.append(el("th", {}, c)));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    for (const row of doc.rows) {
      const tr = el("tr", { "data-position": row.position });
      tr.append(el("td", { class: "num" }, String(row.position)),
                el("td", { class: "num" }, age(row.age_ms)),
                el("td", { class: "num" }, String(row.age_bucket)));
      doc.columns.forEach((c, i) => {
        const text = doc.string_columns.includes(c) ? `${row.values[i]} (${row.model[i]})` : row.values[i];
        tr.append(el("td", { "data-col": c }, text));
      });
      table.tBodies[0].append(tr);
    }
    const wrap = el("div", { class: "table-wrap scroll" });
    wrap.append(table);
    frag.append(wrap);
    if (doc.rows_omitted) {
      frag.append(el("p", { class: "note" }, `… and ${doc.rows_omitted.toLocaleString()} older events (positions ${doc.padding}–${doc.padding + doc.rows_omitted - 1}).`));
    }
    out.replaceChildren(frag);
    setCurl("pit", `/users/${enc(st.user)}/sequence${qs(doc.api_params)}`,
      "(the same events unpadded, ascending; the model's tensors add the left padding)");
  }

  // ------------------------------------------------------------------ orchestration
  async function reload() {
    const gen = ++st.gen;
    st.page = 0; st.cursors = [null];
    syncUrl();
    status("loading…");
    try {
      const [tl] = await Promise.all([loadTimeline(gen), loadEvents(gen)]);
      if (tl && gen === st.gen) {
        status(tl.count ? "Drag across the chart, or click a bar of the activity histogram, to zoom; " +
                          "click an event's time for what a model sees before it."
                        : `user ${tl.user}: no events in this range`);
      }
    } catch (e) {
      if (gen === st.gen) status(e.message, true);
    }
  }

  function init() {
    setCurl("overview", "/stats");
    const sel = $("color");
    sel.append(el("option", { value: "" }, "(none)"));
    // Low-cardinality columns only (strings, bools, small ints): an id column makes no lanes.
    for (const c of cfg.categorical) sel.append(el("option", { value: c }, c));
    document.querySelectorAll(".unit").forEach((e) => { e.textContent = cfg.time_unit; });
    const q = new URLSearchParams(location.search);
    st.color = q.has("color") ? q.get("color") || null : cfg.default_color;
    sel.value = st.color || "";
    colPicker();
    $("lookup").addEventListener("submit", (ev) => {
      ev.preventDefault();
      st.user = $("user").value.trim();
      st.since = st.before = null; st.zooms = [];
      $("pit-before").value = "";
      $("pit-result").textContent = "";
      if (st.user) reload();
    });
    sel.addEventListener("change", () => { st.color = sel.value || null; if (st.user) reload(); });
    $("zoom-out").addEventListener("click", () => { [st.since, st.before] = st.zooms.pop() || [null, null]; reload(); });
    $("zoom-reset").addEventListener("click", () => { st.since = st.before = null; st.zooms = []; reload(); });
    $("older").addEventListener("click", () => { st.page++; loadEvents(st.gen).catch((e) => status(e.message, true)); });
    $("newer").addEventListener("click", () => { st.page = Math.max(0, st.page - 1); loadEvents(st.gen).catch((e) => status(e.message, true)); });
    $("limit").addEventListener("change", () => { st.limit = Number($("limit").value); st.page = 0; st.cursors = [null]; loadEvents(st.gen).catch((e) => status(e.message, true)); });
    $("pit-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadPit(); });
    if (q.get("user")) {
      $("user").value = q.get("user");
      st.user = q.get("user");
      st.since = q.get("since") || null; // kept as text: exact for any time unit
      st.before = q.get("before") || null;
      reload();
    }
    // Live overview: the same server-rendered fragment, every 5 s while the tab is visible.
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const r = await fetch("/ui/api/overview?format=html");
        if (!r.ok) throw new Error(String(r.status));
        $("overview-body").innerHTML = await r.text(); // server-escaped HTML (render.py)
        $("live").className = "live";
        $("live").textContent = "live";
      } catch (e) {
        $("live").className = "live stale";
        $("live").textContent = "stale: " + e.message;
      }
    }, 5000);
  }

  init();
})();
