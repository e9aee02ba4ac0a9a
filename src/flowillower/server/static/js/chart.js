// One chart: one metric, several runs overlaid (uPlot). Fetches the server's
// downsampled series, re-fetches at full resolution for a zoomed window, and follows
// running runs by asking only for points after each run's cursor.
import { ema, join } from "./align.js";
import { api } from "./api.js";
import { groupCard, groupData, groupPlot } from "./chartgroups.js";
import { attachCursorKeys, showTip, tipElement } from "./charttip.js";
import { copyButton, fmtDuration, fmtNum, fmtTime, h, loadScript } from "./dom.js";
import { axisColors, chartTheme, onTheme, themeColor } from "./palette.js";

const LIVE_REFETCH_FACTOR = 3;  // re-downsample once live tails triple the points

// Fewest significant digits that keep the tick labels distinct (a nearly flat metric
// otherwise reads as four identical labels).
export function tickLabels(vals) {
  let out = vals.map((v) => fmtNum(v, 3));
  for (let d = 4; d <= 8 && new Set(out).size < out.length; d++) out = vals.map((v) => fmtNum(v, d));
  return out;
}

export class Chart {
  // runs: [{id, name}], opts: {x, smooth, log, points, height, onMissing, group}; group, when
  // set, is {groups: [{label, ids}], band: "std"|"minmax", members: bool} (see chartgroups.js).
  constructor(key, runs, opts = {}) {
    this.key = key;
    this.runs = runs;
    this.opts = { x: "step", smooth: 0, log: false, height: 220, ...opts };
    this.el = h("div", { class: "chart", dataset: { key } });
    this.title = h("h3", { text: key });
    this.plotEl = h("div", { class: "plot" });
    this.legendEl = h("div");
    this.missingEl = h("div", { class: "missing" });
    this.tipEl = tipElement();
    this.el.append(this.title, this.plotEl, this.legendEl, this.missingEl);
    this.u = null;
    this.data = null;   // per run: {run, x, y, replayed, cursor, last, min, max, missing}
    this.zoom = null;   // [x0, x1] when zoomed
    this.loaded = false;
    this.hidden = new Set();  // legend entries (run ids, group labels) switched off
    // Colours come from the theme's CSS variables: a theme change redraws in the new ones.
    this.offTheme = onTheme(() => { if (this.data) this.draw(true); });
    // A debug hook for tests and the console: what is drawn, in numbers.
    this.el.fwData = () => this.drawnData();
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

  presentRuns() {
    return this.data.filter((d) => !d.missing && d.kind !== "object");
  }

  // One line per run (and its raw curve under a smoothed one); `entries` feed the legend.
  runSeries(present) {
    const joined = join(present.map((d) => ({ x: d.x, y: d.y })));
    const alpha = this.opts.smooth;
    const showRaw = alpha > 0 && present.length <= 20;
    const data = [joined[0]];
    const series = [{ label: this.axisLabel() }];
    const entries = [];
    const names = new Map(this.runs.map((r) => [r.id, r.name]));
    this.allReplayed = new Set();
    const fix = (y) => (this.opts.log ? y.map((v) => (v > 0 ? v : null)) : y);
    present.forEach((d, k) => {
      const y = fix(joined[k + 1]);
      const c = themeColor(d.run);
      const name = names.get(d.run) || d.run;
      const idx = this.replayedIndices(d, joined[0]);
      // Every point replayed: dash the line itself rather than burying it under markers.
      const all = idx.length > 0 && idx.length >= d.x.length;
      if (all) this.allReplayed.add(d.run);
      const own = [];
      if (showRaw) {
        data.push(y);
        series.push({ label: `${name} (raw)`, stroke: c, alpha: 0.25, width: 1, spanGaps: true,
          points: { show: false }, role: "raw", runId: d.run });
        own.push(series.length - 1);
      }
      data.push(alpha ? ema(y, alpha) : y);
      series.push({ label: name, stroke: c, width: 1.5, spanGaps: true, runId: d.run, role: "run", fwColor: c,
        dash: all ? [6, 4] : undefined,
        // A run with a single point among longer runs would be invisible as a line.
        points: { show: d.x.length === 1, size: d.x.length === 1 ? 6 : 4, width: 1, fill: c, stroke: c,
          filter: () => (idx.length && !all ? idx : null) } });
      own.push(series.length - 1);
      entries.push({ key: d.run, name, href: `#/run/${encodeURIComponent(d.run)}`, color: c, series: own,
        cursor: series.length - 1, last: d.last, min: d.min, max: d.max, note: this.replayNote(d) });
    });
    return { data, series, bands: [], entries };
  }

  // One mean line and band per group, its runs thinly underneath when asked (chartgroups.js).
  groupSeries(present, theme) {
    const p = groupPlot(present, this.opts.group, { smooth: this.opts.smooth, log: this.opts.log, theme });
    p.series.forEach((s) => { if (s.role === "mean") s.fwBand = this.opts.group.band; });
    this.groups = p.groups;
    return { data: groupData(p), series: [{ label: this.axisLabel() }, ...p.series], bands: p.bands, entries: p.entries };
  }

  draw(resetScales) {
    const present = this.presentRuns();
    if (present.length && present.every((d) => d.x.length <= 1)) { this.drawCard(present); return; }
    const theme = chartTheme();
    const grouped = Boolean(this.opts.group?.groups?.length);
    this.groups = null;
    const { data, series, bands, entries } = grouped ? this.groupSeries(present, theme) : this.runSeries(present);
    this.entries = entries;
    this.bands = bands;
    const width = this.plotEl.clientWidth || 600;
    const axis = axisColors();
    const opts = {
      width, height: this.opts.height, series, bands, legend: { show: false },
      scales: { x: { time: this.opts.x === "time" }, y: this.opts.log ? { distr: 3 } : {} },
      axes: [{ ...axis, label: this.axisLabel(), labelSize: 18,
        values: this.opts.x === "rel" ? (u, vals) => vals.map((v) => fmtDuration(v)) : undefined },
      { ...axis, label: this.key, labelSize: 18, size: 60, values: (u, vals) => tickLabels(vals) }],
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
      attachCursorKeys(this.plotEl, this.u, () => { this.tipEl.hidden = true; });
      entries.forEach((e) => this.hidden.has(e.key) && e.series.forEach((i) => this.u.setSeries(i, { show: false })));
      if (this.zoom) this.u.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    }
    this.drawLegend(entries, grouped);
    this.drawMissing();
    this.el.dataset.shape = "line";
    // How many runs are drawn (and groups, when grouped): tests and the benchmark wait on it.
    this.el.dataset.drawn = String(present.length);
    this.el.dataset.groups = grouped ? String(entries.length) : "";
    performance.mark("fw:chart-drawn");
  }

  /** What is drawn, in numbers (the element's fwData() debug hook): x, every series'
   * values and role, the bands, and per group its runs with mean, std, min, max. */
  drawnData() {
    if (!this.u) return null;
    const u = this.u;
    const plain = (a) => Array.from(a || [], (v) => (v === undefined ? null : v));
    return { x: plain(u.data[0]), bands: (this.bands || []).map((b) => ({ series: b.series, fill: b.fill })),
      series: u.series.slice(1).map((s, i) => ({ label: s.label, role: s.role, run: s.runId ?? null,
        group: s.group ?? null, show: s.show, color: s.fwColor ?? null, values: plain(u.data[i + 1]) })),
      groups: (this.groups || []).map((g) => ({ label: g.label, name: g.name, runs: g.runs, color: g.color,
        x: g.agg.x, mean: g.agg.mean, std: g.agg.std, min: g.agg.min, max: g.agg.max, n: g.agg.n, lo: g.lo, hi: g.hi })) };
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
    const grouped = Boolean(this.opts.group?.groups?.length);
    // Grouped: one row per group, its mean with the band's spread over its runs' values.
    const items = grouped ? groupCard(present, this.opts.group) : present.map((d) => {
      const v = typeof d.y[0] === "number" ? d.y[0] : null;
      return { key: d.run, name: names.get(d.run) || d.run, href: `#/run/${encodeURIComponent(d.run)}`,
        color: themeColor(d.run), value: v, text: fmtNum(d.y[0]),
        note: d.x.length ? `at ${this.axisLabel()} ${this.fmtX(d.x[0])}` : "" };
    });
    const top = Math.max(...items.map((it) => (it.value === null ? 0 : Math.abs(it.value))), 0) || 1;
    const rows = items.map((it) => {
      const bar = h("div", { class: "bar", style: { background: it.color, height: "8px", minWidth: "1px",
        width: `${it.value === null ? 0 : (100 * Math.abs(it.value)) / top}%` } });
      return h("tr", { dataset: grouped ? { group: it.key } : { run: it.key } },
        h("td", null, h("span", { class: "swatch", style: { background: it.color } }),
          it.href ? h("a", { href: it.href, text: it.name }) : h("span", { class: "group-name", text: it.name })),
        h("td", { style: { width: "50%" } }, bar),
        h("td", { class: "num value", text: it.text }),
        h("td", { class: "muted", text: it.note }));
    });
    const head = h("tr", { class: "muted" }, h("td", { text: grouped ? "group" : "run" }),
      h("td", { text: `${this.key} (logged once)` }),
      h("td", { class: "num", text: grouped ? (this.opts.group.band === "minmax" ? "mean [min, max]" : "mean ± std") : "value" }), h("td"));
    this.plotEl.replaceChildren(h("table", { class: "legend value-card" }, head, rows));
    this.legendEl.replaceChildren();
    this.drawMissing();
    this.el.dataset.shape = "card";
    this.el.dataset.drawn = String(present.length);
    this.el.dataset.groups = grouped ? String(items.length) : "";
    performance.mark("fw:chart-drawn");
  }

  // Legend rows are entries (a run, or a group): a click hides or shows all their series.
  drawLegend(entries, grouped) {
    this.cursorCells = new Map();
    const names = new Map(this.runs.map((r) => [r.id, r.name]));
    const rows = entries.map((e) => {
      // A group's row names its runs on hover.
      const title = e.runs ? `${e.runs.map((id) => names.get(id) || id).join(", ")}\nclick to hide / show` : "click to hide / show";
      const cur = h("td", { class: "num" });
      this.cursorCells.set(e.cursor, cur);
      const name = e.href ? h("a", { href: e.href, text: e.name }) : h("span", { class: "group-name", text: e.name });
      const tr = h("tr", { class: this.hidden.has(e.key) ? "off" : "", title,
        dataset: grouped ? { group: e.key } : { run: e.key } },
        h("td", null, h("span", { class: "swatch", style: { background: e.color } }), name),
        cur, h("td", { class: "num", text: fmtNum(e.last) }), h("td", { class: "num", text: fmtNum(e.min) }),
        h("td", { class: "num", text: fmtNum(e.max) }), h("td", null, e.note || ""));
      tr.addEventListener("click", (ev) => {
        if (ev.target.tagName === "A") return;
        const show = this.hidden.has(e.key);
        if (show) this.hidden.delete(e.key); else this.hidden.add(e.key);
        e.series.forEach((i) => this.u.setSeries(i, { show }));
        tr.classList.toggle("off", !show);
      });
      return tr;
    });
    const what = grouped ? `group (mean, ${this.opts.group.band === "minmax" ? "min–max" : "± std"} band)` : "run";
    const head = h("tr", { class: "muted" }, h("td", { text: this.sampled ? `${what} (downsampled; drag to zoom)` : what }),
      h("td", { class: "num", text: "cursor" }), h("td", { class: "num", text: "last" }),
      h("td", { class: "num", text: "min" }), h("td", { class: "num", text: "max" }), h("td"));
    const table = h("table", { class: "legend" }, head, rows.slice(0, 12));
    const parts = [table];
    if (rows.length > 12) {
      parts.push(h("details", { class: "legend-more" }, h("summary", { text: `${rows.length - 12} more` }),
        h("table", { class: "legend" }, rows.slice(12))));
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
      const v = idx === null || idx === undefined || si < 1 ? null : u.data[si]?.[idx];
      td.textContent = v === null || v === undefined ? "" : fmtNum(v);
    }
    showTip(this.tipEl, u, idx, (x) => `${this.axisLabel()} ${this.fmtX(x)}`);
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

  destroy() { if (this.u) this.u.destroy(); this.u = null; this.offTheme(); }
}
