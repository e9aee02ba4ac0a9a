// Charts of the selected runs: one chart per metric, all runs overlaid. Charts are
// created when scrolled into view, so 300 watch statistics cost nothing until looked at.
import { api } from "./api.js";
import { Chart } from "./chart.js";
import { color, debounce, h } from "./dom.js";
import { prefs, selection, setParams, setPrefs } from "./state.js";

export async function render(root, { params }) {
  const fromUrl = params.get("runs");
  const ids = fromUrl ? fromUrl.split(",").filter(Boolean) : selection.ids();
  if (!ids.length) {
    root.append(h("p", null, "No runs selected. Tick runs in the ", h("a", { href: "#/", text: "runs table" }),
      " to compare their curves."));
    return null;
  }
  const opts = {
    x: params.get("x") || prefs("chart.x", "step"),
    smooth: Number(params.get("smooth") ?? prefs("chart.smooth", 0)),
    log: (params.get("log") ?? String(prefs("chart.log", false))) === "true",
    live: prefs("chart.live", true),
    filter: params.get("m") ?? prefs("chart.filter", ""),
    watch: params.has("watch") ? params.get("watch") === "true" : prefs("chart.watch", false),
  };
  let info;
  try { info = await api.get("keys", { run: ids }); } catch (e) {
    root.append(h("p", { class: "error", text: e.message }));
    return null;
  }
  const runs = info.runs;
  const xSel = h("select", { "aria-label": "x axis" },
    [["step", "step"], ...info.loops.map((l) => [l, l]), ["time", "wall time"], ["rel", "relative time"]]
      .map(([v, t]) => h("option", { value: v, text: t, selected: v === opts.x })),
    h("optgroup", { label: "another metric" }, info.metrics.filter((m) => !m.watch).map((m) =>
      h("option", { value: `metric:${m.name}`, text: m.name, selected: opts.x === `metric:${m.name}` }))));
  const smooth = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: opts.smooth, "aria-label": "smoothing" });
  const smoothVal = h("span", { class: "mono", text: opts.smooth.toFixed(2) });
  const logBox = h("input", { type: "checkbox", checked: opts.log });
  const liveBox = h("input", { type: "checkbox", checked: opts.live && !api.readonly, disabled: api.readonly });
  const watchBox = h("input", { type: "checkbox", checked: opts.watch });
  const filter = h("input", { type: "search", placeholder: "metric filter", value: opts.filter });
  const chip = (r) => h("span", { class: "chip" }, h("span", { class: "swatch", style: { background: color(r.id) } }),
    h("a", { href: `#/run/${encodeURIComponent(r.id)}`, text: r.name }), ` ${r.status}`);
  const chips = h("div", { class: "folded" }, `${runs.length} runs: `, runs.slice(0, 20).map(chip),
    runs.length > 20 ? h("details", { style: { display: "inline" } }, h("summary", { text: `${runs.length - 20} more`, style: { display: "inline", cursor: "pointer" } }),
      runs.slice(20).map(chip)) : null);
  const grid = h("div", { class: "charts" });
  root.append(h("div", { class: "toolbar" },
    h("label", null, "x ", xSel), h("label", { title: "EMA smoothing" }, "smooth ", smooth, " ", smoothVal),
    h("label", null, logBox, " log y"), h("label", { title: "follow running runs" }, liveBox, " live"),
    h("label", { title: "per-module statistics from fw.watch" }, watchBox, " watch stats"), filter,
    h("a", { href: `#/compare`, text: "args vs results →" })), chips, grid);

  let charts = [];
  let observer = null;

  function build() {
    charts.forEach((c) => c.destroy());
    charts = [];
    if (observer) observer.disconnect();
    grid.replaceChildren();
    const text = opts.filter.trim().toLowerCase();
    const metrics = info.metrics.filter((m) => (opts.watch || !m.watch) && (!text || m.name.toLowerCase().includes(text)));
    if (!metrics.length) grid.append(h("p", { class: "muted", text: "No metric matches." }));
    observer = new IntersectionObserver((entries) => {
      const due = entries.filter((e) => e.isIntersecting)
        .map((e) => charts.find((c) => c.el === e.target)).filter((c) => c && !c.loaded);
      const keys = due.map((c) => c.key);  // decoded together: one pass per run file
      due.forEach((c) => c.load(keys));
    }, { rootMargin: "300px" });
    for (const m of metrics.slice(0, 400)) {
      const chart = new Chart(m.name, runs, { x: opts.x, smooth: opts.smooth, log: opts.log });
      charts.push(chart);
      grid.append(chart.el);
      observer.observe(chart.el);
    }
  }

  function redrawAll(refetch) {
    charts.forEach((c) => {
      Object.assign(c.opts, { x: opts.x, smooth: opts.smooth, log: opts.log });
      if (!c.loaded) return;
      if (refetch) { c.zoom = null; c.load(charts.filter((o) => o.loaded).map((o) => o.key)); } else if (c.data) c.draw(true);
    });
  }

  xSel.addEventListener("change", () => { opts.x = xSel.value; setPrefs("chart.x", opts.x); redrawAll(true); });
  smooth.addEventListener("input", debounce(() => {
    opts.smooth = Number(smooth.value); smoothVal.textContent = opts.smooth.toFixed(2);
    setPrefs("chart.smooth", opts.smooth); redrawAll(false);
  }, 60));
  logBox.addEventListener("change", () => { opts.log = logBox.checked; setPrefs("chart.log", opts.log); redrawAll(false); });
  liveBox.addEventListener("change", () => { opts.live = liveBox.checked; setPrefs("chart.live", opts.live); });
  watchBox.addEventListener("change", () => { opts.watch = watchBox.checked; setPrefs("chart.watch", opts.watch); build(); });
  filter.addEventListener("input", debounce(() => { opts.filter = filter.value; setPrefs("chart.filter", opts.filter); build(); }, 250));
  // Settings go to the URL as they change (a copied link reproduces this view).
  const toUrl = () => setParams({ x: xSel.value, smooth: smooth.value, log: String(logBox.checked),
    m: filter.value, watch: String(watchBox.checked) });
  [xSel, smooth, logBox, watchBox, filter].forEach((el) => ["input", "change"].forEach((t) => el.addEventListener(t, toUrl)));
  toUrl();
  const onResize = debounce(() => charts.forEach((c) => c.resize()), 150);
  window.addEventListener("resize", onResize);

  build();

  // Live: only points after each run's cursor travel; statuses refreshed now and then.
  let ticks = 0, busy = false;
  const timer = setInterval(async () => {
    if (!opts.live || api.readonly || document.hidden || busy) return;
    if (!runs.some((r) => r.status === "running")) return;
    busy = true;
    try {
      ticks += 1;
      for (const c of charts) if (c.loaded) await c.liveTick();
      if (ticks % 5 === 0) {
        const fresh = await api.get("keys", { run: ids });
        fresh.runs.forEach((r) => { const old = runs.find((x) => x.id === r.id); if (old) old.status = r.status; });
        if (fresh.metrics.length !== info.metrics.length) { info.metrics = fresh.metrics; build(); }
      }
    } catch (e) { console.warn("live update failed", e); } finally { busy = false; }
  }, 2000);

  return () => { clearInterval(timer); window.removeEventListener("resize", onResize); charts.forEach((c) => c.destroy()); if (observer) observer.disconnect(); };
}
