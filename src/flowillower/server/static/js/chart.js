// One chart: one metric, several runs overlaid (uPlot). Fetches the server's
// downsampled series, re-fetches at full resolution for a zoomed window, and follows
// running runs by asking only for points after each run's cursor.
import { api } from "./api.js";
import { color, copyButton, fmtDuration, fmtNum, fmtTime, h, loadScript } from "./dom.js";

const LIVE_REFETCH_FACTOR = 3;  // re-downsample once live tails triple the points

// EMA with TensorBoard's debiasing, skipping gaps (null / non-finite).
export function ema(y, alpha) {
  if (!alpha) return y;
  const out = new Array(y.length);
  let acc = 0, n = 0;
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (v === null || v === undefined || !Number.isFinite(v)) { out[i] = null; continue; }
    acc = acc * alpha + (1 - alpha) * v;
    n += 1;
    out[i] = acc / (1 - alpha ** n);
  }
  return out;
}

// Align per-run (x, y) arrays on the union of their x values (uPlot's data layout).
export function join(list) {
  if (!list.length) return [[]];
  const first = list[0].x;
  if (list.every((r) => r.x === first)) return [first, ...list.map((r) => r.y)];
  let total = 0;
  list.forEach((r) => { total += r.x.length; });
  const all = new Float64Array(total);
  let o = 0;
  list.forEach((r) => { all.set(r.x, o); o += r.x.length; });
  all.sort();
  const xs = [];
  for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) xs.push(all[i]);
  const ys = list.map((r) => {
    const col = new Array(xs.length).fill(null);
    for (let i = 0; i < r.x.length; i++) {
      let lo = 0, hi = xs.length - 1;
      const v = r.x[i];
      while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < v) lo = mid + 1; else hi = mid; }
      col[lo] = r.y[i];
    }
    return col;
  });
  return [xs, ...ys];
}

// Fewest significant digits that keep the tick labels distinct (a nearly flat metric
// otherwise reads as four identical labels).
export function tickLabels(vals) {
  let out = vals.map((v) => fmtNum(v, 3));
  for (let d = 4; d <= 8 && new Set(out).size < out.length; d++) out = vals.map((v) => fmtNum(v, d));
  return out;
}

export class Chart {
  // runs: [{id, name}], opts: {x, smooth, log, points, height, onMissing}
  constructor(key, runs, opts = {}) {
    this.key = key;
    this.runs = runs;
    this.opts = { x: "step", smooth: 0, log: false, height: 220, ...opts };
    this.el = h("div", { class: "chart", dataset: { key } });
    this.title = h("h3", { text: key });
    this.plotEl = h("div", { class: "plot" });
    this.legendEl = h("div");
    this.missingEl = h("div", { class: "missing" });
    // Hover read-out: the x value and every shown run's y (CSSOM styles: the CSP allows them).
    this.tipEl = h("div", { class: "chart-tip", hidden: true, style: { position: "absolute", zIndex: 10,
      pointerEvents: "none", background: "var(--panel, #fff)", color: "var(--fg, #1d2330)",
      border: "1px solid var(--line, #c9ced6)", borderRadius: "4px",
      padding: "3px 6px", fontSize: "11px", whiteSpace: "nowrap", boxShadow: "0 1px 4px rgba(0,0,0,.15)" } });
    this.el.append(this.title, this.plotEl, this.legendEl, this.missingEl);
    this.u = null;
    this.data = null;   // per run: {run, x, y, replayed, cursor, last, min, max, missing}
    this.zoom = null;   // [x0, x1] when zoomed
    this.loaded = false;
    this.hiddenSeries = new Set();
  }

  pointsWanted() {
    const w = this.plotEl.clientWidth || this.el.clientWidth || 600;
    return Math.max(200, Math.min(4000, Math.round(w)));
  }

  // `also`: keys of charts about to load; the server decodes them in the same pass.
  async load(also = []) {
    this.loaded = true;
    const params = { run: this.runs.map((r) => r.id), key: this.key, x: this.opts.x,
      points: this.pointsWanted(), also: also.filter((k) => k !== this.key).slice(0, 32) };
    if (this.zoom) { params.x0 = this.zoom[0]; params.x1 = this.zoom[1]; }
    const lib = window.uPlot ? null : loadScript("static/vendor/uPlot.iife.min.js");
    let res;
    try { res = await api.get("series", params); } catch (e) {
      this.plotEl.replaceChildren(h("p", { class: "error", text: e.message }));
      return;
    }
    this.data = res.runs.map((r) => {
      const x = res.x || r.x || [];
      return { ...r, x, y: r.y || [], replayed: r.replayed || [] };
    });
    this.sampled = res.sampled;
    await lib;
    this.draw(true);
  }

  async liveTick() {
    if (!this.data || this.zoom) return;
    const res = await api.get("series", { run: this.runs.map((r) => r.id), key: this.key,
      x: this.opts.x, points: this.pointsWanted(), after: this.data.map((d) => d.cursor || 0) });
    let added = 0, total = 0;
    res.runs.forEach((r, i) => {
      const d = this.data[i];
      if (!d || r.missing) return;
      if (r.reset) { this.data[i] = { ...r, replayed: r.replayed || [] }; added += r.x.length; return; }
      if (r.x && r.x.length) {
        const base = d.x.length;
        d.x = Array.from(d.x).concat(r.x);  // unshare the grid before appending
        d.y = Array.from(d.y).concat(r.y);
        d.replayed = d.replayed.concat((r.replayed || []).map((j) => j + base));
        added += r.x.length;
      }
      Object.assign(d, { cursor: r.cursor, count: r.count, last: r.last, min: r.min, max: r.max,
        missing: false, replay: undefined });
      total += d.x.length;
    });
    if (!added) return;
    if (total > LIVE_REFETCH_FACTOR * this.pointsWanted() * Math.max(1, this.runs.length)) {
      await this.load();
      return;
    }
    this.draw(false);
  }

  uplotData() {
    const present = this.data.filter((d) => !d.missing && d.kind !== "object");
    const joined = join(present.map((d) => ({ x: d.x, y: d.y })));
    return { present, joined };
  }

  draw(resetScales) {
    const { present, joined } = this.uplotData();
    if (present.length && present.every((d) => d.x.length <= 1)) { this.drawCard(present); return; }
    const alpha = this.opts.smooth;
    const showRaw = alpha > 0 && present.length <= 20;
    const data = [joined[0]];
    const series = [{ label: this.axisLabel() }];
    const runIndex = new Map(this.runs.map((r, i) => [r.id, i]));
    this.allReplayed = new Set();
    const fix = (y) => (this.opts.log ? y.map((v) => (v > 0 ? v : null)) : y);
    present.forEach((d, k) => {
      const y = fix(joined[k + 1]);
      const c = color(d.run);
      const name = this.runs[runIndex.get(d.run)]?.name || d.run;
      const idx = this.replayedIndices(d, joined[0]);
      // Every point replayed: dash the line itself rather than burying it under markers.
      const all = idx.length > 0 && idx.length >= d.x.length;
      if (all) this.allReplayed.add(d.run);
      if (showRaw) {
        data.push(y);
        series.push({ label: `${name} (raw)`, stroke: c, alpha: 0.25, width: 1, spanGaps: true,
          points: { show: false } });
      }
      data.push(alpha ? ema(y, alpha) : y);
      series.push({ label: name, stroke: c, width: 1.5, spanGaps: true, runId: d.run,
        dash: all ? [6, 4] : undefined,
        // A run with a single point among longer runs would be invisible as a line.
        points: { show: d.x.length === 1, size: d.x.length === 1 ? 6 : 4, width: 1, fill: c, stroke: c,
          filter: () => (idx.length && !all ? idx : null) } });
    });
    this.seriesRuns = series.map((s) => s.runId);
    const width = this.plotEl.clientWidth || 600;
    const opts = {
      width, height: this.opts.height, series, legend: { show: false },
      scales: { x: { time: this.opts.x === "time" }, y: this.opts.log ? { distr: 3 } : {} },
      axes: [{ label: this.axisLabel(), labelSize: 18,
        values: this.opts.x === "rel" ? (u, vals) => vals.map((v) => fmtDuration(v)) : undefined },
      { label: this.key, labelSize: 18, size: 60, values: (u, vals) => tickLabels(vals) }],
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 4) return;
          const x0 = u.posToVal(u.select.left, "x");
          const x1 = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          this.zoom = [x0, x1];
          this.load().then(() => this.u?.setScale("x", { min: x0, max: x1 }));
        }],
        setCursor: [(u) => this.showCursor(u)],
      },
    };
    if (this.u && this.u.series.length === series.length && !resetScales) {
      this.u.setData(data, !this.zoom);
    } else {
      if (this.u) this.u.destroy();
      this.plotEl.replaceChildren();
      // uPlot is a global from vendor/uPlot.iife.min.js (no bundler, no CDN).
      this.u = new window.uPlot(opts, data, this.plotEl);
      this.u.over.append(this.tipEl);
      this.u.over.addEventListener("mouseleave", () => { this.tipEl.hidden = true; });
      this.u.over.addEventListener("dblclick", () => { if (this.zoom) { this.zoom = null; this.load(); } });
      this.hiddenSeries.forEach((i) => i < this.u.series.length && this.u.setSeries(i, { show: false }));
      if (this.zoom) this.u.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    }
    this.drawLegend(present);
    this.drawMissing();
    this.el.dataset.shape = "line";
    // How many runs are drawn: tests and the benchmark wait on it.
    this.el.dataset.drawn = String(present.length);
    performance.mark("fw:chart-drawn");
  }

  replayedIndices(d, xs) {
    if (!d.replayed || !d.replayed.length) return [];
    if (xs === d.x) return d.replayed;
    // Map the run's own indices onto the joined x array.
    const pos = new Map();
    xs.forEach((v, i) => pos.set(v, i));
    return d.replayed.map((j) => pos.get(d.x[j])).filter((i) => i !== undefined);
  }

  axisLabel() {
    const x = this.opts.x;
    if (x.startsWith("metric:")) return x.slice("metric:".length);
    return { step: "step", time: "wall time", rel: "elapsed time" }[x] || x;
  }

  fmtX(v) {
    if (this.opts.x === "time") return fmtTime(v);
    if (this.opts.x === "rel") return fmtDuration(v);
    return fmtNum(v);
  }

  // A metric logged once per run (`final_*`): a plot of single points says nothing, so
  // show each run's value as a number with a bar scaled to the largest magnitude.
  drawCard(present) {
    if (this.u) { this.u.destroy(); this.u = null; }
    const names = new Map(this.runs.map((r) => [r.id, r.name]));
    const vals = present.map((d) => (typeof d.y[0] === "number" ? d.y[0] : null));
    const top = Math.max(...vals.map((v) => (v === null ? 0 : Math.abs(v))), 0) || 1;
    const rows = present.map((d, k) => {
      const v = vals[k];
      const bar = h("div", { class: "bar", style: { background: color(d.run), height: "8px", minWidth: "1px",
        width: `${v === null ? 0 : (100 * Math.abs(v)) / top}%` } });
      return h("tr", { dataset: { run: d.run } },
        h("td", null, h("span", { class: "swatch", style: { background: color(d.run) } }),
          h("a", { href: `#/run/${encodeURIComponent(d.run)}`, text: names.get(d.run) || d.run })),
        h("td", { style: { width: "50%" } }, bar),
        h("td", { class: "num value", text: fmtNum(d.y[0]) }),
        h("td", { class: "muted", text: d.x.length ? `at ${this.axisLabel()} ${this.fmtX(d.x[0])}` : "" }));
    });
    const head = h("tr", { class: "muted" }, h("td", { text: "run" }), h("td", { text: `${this.key} (logged once)` }),
      h("td", { class: "num", text: "value" }), h("td"));
    this.plotEl.replaceChildren(h("table", { class: "legend value-card" }, head, rows));
    this.legendEl.replaceChildren();
    this.drawMissing();
    this.el.dataset.shape = "card";
    this.el.dataset.drawn = String(present.length);
    performance.mark("fw:chart-drawn");
  }

  drawLegend(present) {
    const rows = [];
    const byRun = new Map(this.runs.map((r, i) => [r.id, i]));
    this.cursorCells = new Map();
    present.forEach((d, k) => {
      const i = byRun.get(d.run) ?? k;
      const run = this.runs[i] || { id: d.run, name: d.run };
      const seriesIdx = this.seriesRuns.indexOf(d.run);
      const cur = h("td", { class: "num" });
      this.cursorCells.set(seriesIdx, cur);
      const tr = h("tr", { class: this.hiddenSeries.has(seriesIdx) ? "off" : "", title: "click to hide / show" },
        h("td", null, h("span", { class: "swatch", style: { background: color(run.id) } }),
          h("a", { href: `#/run/${encodeURIComponent(run.id)}`, text: run.name })),
        cur, h("td", { class: "num", text: fmtNum(d.last) }), h("td", { class: "num", text: fmtNum(d.min) }),
        h("td", { class: "num", text: fmtNum(d.max) }),
        h("td", null, this.replayNote(d)));
      tr.addEventListener("click", (e) => {
        if (e.target.tagName === "A") return;
        const show = this.hiddenSeries.has(seriesIdx);
        if (show) this.hiddenSeries.delete(seriesIdx); else this.hiddenSeries.add(seriesIdx);
        this.u.setSeries(seriesIdx, { show });
        tr.classList.toggle("off", !show);
      });
      rows.push(tr);
    });
    const head = h("tr", { class: "muted" }, h("td", { text: this.sampled ? "run (downsampled; drag to zoom)" : "run" }),
      h("td", { class: "num", text: "cursor" }), h("td", { class: "num", text: "last" }),
      h("td", { class: "num", text: "min" }), h("td", { class: "num", text: "max" }), h("td"));
    const shown = rows.slice(0, 12);
    const table = h("table", { class: "legend" }, head, shown);
    const parts = [table];
    if (rows.length > 12) {
      const more = h("details", { class: "legend-more" }, h("summary", { text: `${rows.length - 12} more runs` }),
        h("table", { class: "legend" }, rows.slice(12)));
      parts.push(more);
    }
    this.legendEl.replaceChildren(...parts);
  }

  replayNote(d) {
    if (!d.replayed || !d.replayed.length) return "";
    const all = this.allReplayed?.has(d.run);
    return h("span", { class: "replayed", text: all ? "↺ all replayed (dashed)" : `↺ ${d.replayed.length} replayed (dots)`,
      title: all ? "every point comes from a hindsight replay" : "dotted points come from a hindsight replay" });
  }

  showCursor(u) {
    const idx = u.cursor.idx;
    if (!this.cursorCells) return;
    for (const [si, td] of this.cursorCells) {
      const v = idx === null || idx === undefined || si < 0 ? null : u.data[si]?.[idx];
      td.textContent = v === null || v === undefined ? "" : fmtNum(v);
    }
    this.showTip(u, idx);
  }

  showTip(u, idx) {
    if (idx === null || idx === undefined || u.cursor.left < 0) { this.tipEl.hidden = true; return; }
    const lines = [h("div", { class: "tip-x", text: `${this.axisLabel()} ${this.fmtX(u.data[0][idx])}` })];
    u.series.forEach((s, si) => {
      if (!s.runId || !s.show) return;
      const v = u.data[si]?.[idx];
      lines.push(h("div", { class: "tip-run", dataset: { run: s.runId } },
        h("span", { class: "swatch", style: { background: color(s.runId) } }), `${s.label} `,
        h("b", { class: "mono", text: v === null || v === undefined ? "—" : fmtNum(v) })));
    });
    this.tipEl.replaceChildren(...lines);
    this.tipEl.hidden = false;
    // Beside the cursor, flipped to the left half near the right edge.
    const flip = u.cursor.left > u.over.clientWidth / 2;
    Object.assign(this.tipEl.style, { top: `${Math.max(0, u.cursor.top - 10)}px`,
      left: flip ? "" : `${u.cursor.left + 14}px`, right: flip ? `${u.over.clientWidth - u.cursor.left + 14}px` : "" });
  }

  drawMissing() {
    const missing = this.data.filter((d) => d.missing);
    if (!missing.length) { this.missingEl.replaceChildren(); return; }
    const names = new Map(this.runs.map((r) => [r.id, r.name]));
    const items = missing.slice(0, 5).map((d) => h("div", null,
      `not logged by ${names.get(d.run) || d.run} — fill it in hindsight: `,
      h("code", { text: d.replay }), " ", copyButton(d.replay)));
    if (missing.length > 5) items.push(h("div", { text: `… and ${missing.length - 5} more runs` }));
    this.missingEl.replaceChildren(...items);
  }

  resize() {
    if (this.u) this.u.setSize({ width: this.plotEl.clientWidth || 600, height: this.opts.height });
  }

  destroy() { if (this.u) this.u.destroy(); this.u = null; }
}
