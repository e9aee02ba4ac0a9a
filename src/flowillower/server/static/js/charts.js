// Charts of the selected runs: one chart per metric, all runs overlaid. Charts are
// created when scrolled into view, so 300 watch statistics cost nothing until looked at.
import { api, runPath } from "./api.js";
import { Chart } from "./chart.js";
import { debounce, h } from "./dom.js";
import { groupKeys, makeGroups } from "./groups.js";
import { onTheme, themeColor } from "./palette.js";
import { prefs, selection, setParams, setPrefs } from "./state.js";

// Each run's args and tags (what grouping reads): from the keys answer when it carries
// them, else one run document per run, a few at a time.
async function runDetails(runs) {
  if (runs.every((r) => r.args)) return runs;
  const out = new Array(runs.length);
  let next = 0;
  const worker = async () => {
    while (next < runs.length) {
      const i = next++;
      try {
        const doc = await api.get(runPath(runs[i].id));
        out[i] = { ...runs[i], args: doc.run?.args || {}, tags: doc.run?.tags || [] };
      } catch { out[i] = { ...runs[i], args: {}, tags: [] }; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(6, runs.length) }, worker));
  return out;
}

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
    // Grouping lives in the link only: a group view is reproduced by its URL, not by habit.
    groupBy: params.get("group") || "", band: params.get("band") === "minmax" ? "minmax" : "std",
    members: params.get("members") === "true",
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
  const groupSel = h("select", { "aria-label": "group by", disabled: true },
    h("option", { value: "", text: "none" }));
  const bandSel = h("select", { "aria-label": "band" },
    [["std", "mean ± std"], ["minmax", "min – max"]].map(([v, t]) => h("option", { value: v, text: t, selected: v === opts.band })));
  const membersBox = h("input", { type: "checkbox", checked: opts.members, "aria-label": "show runs" });
  const groupInfo = h("span", { class: "muted group-info" });
  const groupBar = h("span", { class: "group-controls" }, h("label", { title: "one line per group: the mean over its runs" },
    "group by ", groupSel), h("label", { title: "the band around each group's mean" }, "band ", bandSel),
  h("label", { title: "draw each group's runs thinly under its band" }, membersBox, " show runs"), groupInfo);
  const chip = (r) => h("span", { class: "chip" }, h("span", { class: "swatch", style: { background: themeColor(r.id) } }),
    h("a", { href: `#/run/${encodeURIComponent(r.id)}`, text: r.name }), ` ${r.status}`);
  const chips = h("div", { class: "folded" }, `${runs.length} runs: `, runs.slice(0, 20).map(chip),
    runs.length > 20 ? h("details", { style: { display: "inline" } }, h("summary", { text: `${runs.length - 20} more`, style: { display: "inline", cursor: "pointer" } }),
      runs.slice(20).map(chip)) : null);
  const grid = h("div", { class: "charts" });
  root.append(h("div", { class: "toolbar" },
    h("label", null, "x ", xSel), h("label", { title: "EMA smoothing" }, "smooth ", smooth, " ", smoothVal),
    h("label", null, logBox, " log y"), h("label", { title: "follow running runs" }, liveBox, " live"),
    h("label", { title: "per-module statistics from fw.watch" }, watchBox, " watch stats"), filter,
    h("a", { href: `#/compare`, text: "args vs results →" })), h("div", { class: "toolbar groups-bar" }, groupBar), chips, grid);

  // Grouping: the keys that vary among these runs; the groups go to every chart's options.
  let details = null;
  let grouping = null;
  function regroup() {
    grouping = null;
    if (details && opts.groupBy) {
      const groups = makeGroups(details, opts.groupBy);
      grouping = { groups, band: opts.band, members: opts.members };
      groupInfo.textContent = `${groups.length} groups`;
    } else groupInfo.textContent = "";
    bandSel.disabled = membersBox.disabled = !grouping;
  }
  const fetchDetails = () => runDetails(runs).then((list) => {
    details = list;
    const keys = groupKeys(list);
    // A link may name a key these runs no longer vary in: keep it selectable, it still groups.
    if (opts.groupBy && !keys.some((k) => k.key === opts.groupBy)) keys.push({ key: opts.groupBy, label: opts.groupBy });
    groupSel.append(...keys.map((k) => h("option", { value: k.key, text: k.label, selected: k.key === opts.groupBy })));
    groupSel.disabled = !keys.length;
    groupSel.title = keys.length ? "" : "no arg or tag differs among these runs";
    regroup();
  });
  // A group view draws grouped from the start; otherwise the run documents are fetched
  // once the first charts are drawn, not competing with their series.
  let firstDrawn = null, gone = false;
  const firstDraw = new Promise((resolve) => { firstDrawn = resolve; });
  if (opts.groupBy) await fetchDetails();
  else {
    regroup();
    Promise.race([firstDraw, new Promise((resolve) => { setTimeout(resolve, 3000); })])
      .then(() => (gone ? null : fetchDetails()));
  }

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
      Promise.allSettled(due.map((c) => c.load(keys))).then(() => firstDrawn());
    }, { rootMargin: "300px" });
    for (const m of metrics.slice(0, 400)) {
      const chart = new Chart(m.name, runs, { x: opts.x, smooth: opts.smooth, log: opts.log, group: grouping });
      charts.push(chart);
      grid.append(chart.el);
      observer.observe(chart.el);
    }
  }

  function redrawAll(refetch) {
    charts.forEach((c) => {
      Object.assign(c.opts, { x: opts.x, smooth: opts.smooth, log: opts.log, group: grouping });
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
  const onGroup = () => {
    opts.groupBy = groupSel.value; opts.band = bandSel.value; opts.members = membersBox.checked;
    regroup(); redrawAll(false);
  };
  [groupSel, bandSel, membersBox].forEach((el) => el.addEventListener("change", onGroup));
  // Settings go to the URL as they change (a copied link reproduces this view).
  const toUrl = () => setParams({ x: xSel.value, smooth: smooth.value, log: String(logBox.checked),
    m: filter.value, watch: String(watchBox.checked), group: opts.groupBy,
    band: opts.groupBy ? opts.band : "", members: opts.groupBy && opts.members ? "true" : "" });
  [xSel, smooth, logBox, watchBox, filter, groupSel, bandSel, membersBox].forEach((el) =>
    ["input", "change"].forEach((t) => el.addEventListener(t, toUrl)));
  toUrl();
  const onResize = debounce(() => charts.forEach((c) => c.resize()), 150);
  // The chips' swatches follow the theme (the charts redraw themselves).
  const offTheme = onTheme(() => chips.querySelectorAll(".chip").forEach((el) => {
    const id = decodeURIComponent(el.querySelector("a")?.getAttribute("href")?.replace("#/run/", "") || "");
    const sw = el.querySelector(".swatch");
    if (id && sw) sw.style.background = themeColor(id);
  }));
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

  return () => { gone = true; clearInterval(timer); offTheme(); window.removeEventListener("resize", onResize); charts.forEach((c) => c.destroy()); if (observer) observer.disconnect(); };
}
