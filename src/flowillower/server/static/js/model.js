// The model page: the `flowillower.graph/1` document (docs/model.md) drawn as a layered
// graph (dagre), a collapsible module hierarchy, and per-node shapes, parameters and
// activation / gradient statistics over steps (curves and a histogram heat map).
import { api, runPath } from "./api.js";
import { Chart } from "./chart.js";
import { clear, copyButton, h, loadScript, svg } from "./dom.js";
import { heatmap } from "./heatmap.js";
import { fmtCount, otherGraph, otherModelRuns, replayedMark, statsTable, structureDiff, structureNote } from "./modelcmp.js";
import { setParams } from "./state.js";

const MAX_NODES = 800;  // dagre slows down (and overflows its stack) on huge graphs
// Node text is 12 px at zoom 1 (the default: one graph unit per screen pixel); zoomed out
// below DETAIL the second line goes, below LABELS every label (hover titles remain).
const FONT = 12, CHAR = 7.4, ZOOM_MIN = 0.15, ZOOM_MAX = 4, DETAIL = 0.8, LABELS = 0.5;

// The four steps of docs/model.md "Edges, groups and views", plus user overrides:
// `expand` opens module calls, `fold` closes ones that are open by default.
export function collapse(graph, { depth = null, expand = new Set(), fold = new Set(), ops = false } = {}) {
  const nodes = graph.nodes || [];
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const hasChildCall = new Set(nodes.filter((n) => n.kind === "module" && n.group).map((n) => n.group));
  const depthOf = new Map();
  const callDepth = (id) => {
    if (depthOf.has(id)) return depthOf.get(id);
    let d = 0, g = byId.get(id)?.group;
    while (g && byId.has(g)) { d += 1; g = byId.get(g).group; }
    depthOf.set(id, d);
    return d;
  };
  const isCollapsed = (n) => {
    if (ops || n.kind !== "module" || expand.has(n.path)) return false;
    if (fold.has(n.path)) return true;
    if (depth !== null && callDepth(n.id) >= depth) return true;
    return !hasChildCall.has(n.id);
  };
  const repOf = new Map();
  const rep = (id) => {
    if (repOf.has(id)) return repOf.get(id);
    const chain = [];
    let cur = id;
    while (cur && byId.has(cur)) { chain.push(cur); cur = byId.get(cur).group; }
    let r = id;
    for (let i = chain.length - 1; i >= 0; i--) if (isCollapsed(byId.get(chain[i]))) { r = chain[i]; break; }
    repOf.set(id, r);
    return r;
  };
  const visible = [], groups = [];
  for (const n of nodes) {
    if (rep(n.id) !== n.id) continue;
    if (n.kind === "module" && !isCollapsed(n)) groups.push(n); else visible.push(n);
  }
  const edges = [], seen = new Set();
  for (const e of graph.edges || []) {
    const s = rep(e.src), d = rep(e.dst);
    if (s === d) continue;
    const key = `${s}|${d}|${(e.shape || []).join("x")}|${e.dtype}`;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push({ ...e, src: s, dst: d });
  }
  return { nodes: visible, edges, groups };
}

const shapeText = (shapes) => (shapes || []).map((s) => s.join("×")).join(", ");

function label(n) {
  if (n.kind === "input" || n.kind === "output") return [`${n.kind} ${n.name || ""}`, shapeText(n.kind === "input" ? n.out_shapes : n.in_shapes)];
  if (n.kind === "module") return [`${n.path || "(root)"}${n.call ? `#${n.call}` : ""}`, `${n.type}${n.params ? ` · ${fmtCount(n.params)} params` : ""}`];
  return [n.type, shapeText(n.out_shapes)];
}

export async function render(root, { args, params }) {
  const id = args[0];
  const name = params.get("name") || "";
  let graph, run;
  try {
    [graph, run] = await Promise.all([api.get(runPath(id, "/model"), name ? { name } : {}), api.get(runPath(id)),
      window.dagre ? null : loadScript("static/vendor/dagre.min.js")]);
  } catch (e) {
    root.append(h("p", { class: "error", text: e.message }), h("a", { href: `#/run/${encodeURIComponent(id)}`, text: "← run" }));
    return null;
  }
  const runId = run.run.id;
  const present = new Set(Object.keys(run.run.metrics));
  // Statistics `flowillower replay --watch` computed afterwards (the run never watched).
  const replayed = new Set(Object.entries(run.run.metrics).filter(([, s]) => s.role === "watch" && s.replayed).map(([k]) => k));
  const treeEl = h("div", { class: "tree" });
  const canvas = h("div", { class: "canvas" });
  const detail = h("div", { class: "detail" }, h("p", { class: "muted", text: "Click a node to see its shapes, parameters and statistics. Double-click a module to open or close it." }));
  const modules = new Map(((graph.tree || {}).modules || []).map((m) => [m.path, m]));
  const info = h("div", { class: "toolbar" },
    h("a", { href: `#/run/${encodeURIComponent(runId)}`, text: `← ${run.run.name}` }),
    h("b", { text: graph.root || "model" }),
    h("span", { class: "muted", text: `${fmtCount((graph.nodes || []).length)} nodes · ${fmtCount((graph.tree || {}).params)} parameters` }),
    graph.truncated ? h("span", { class: "error", text: "graph truncated at max_nodes" }) : null,
    graph.error ? h("span", { class: "error", text: `probe failed in ${graph.error_path || "?"}: ${graph.error}` }) : null,
    !graph.probed ? h("span", { class: "muted", text: "no probe forward pass: module tree only (pass an example input to fw.log_model)" }) : null,
    replayed.size ? h("span", { class: "replayed watch-replayed", title: "computed afterwards by flowillower replay --watch: the run did not watch its model", text: `${fmtCount(replayed.size)} statistics replayed` }) : null);
  // A second run: its graph against this one, and node statistics side by side.
  const vsPick = h("select", { "aria-label": "compare with run", class: "vs-pick" }, h("option", { value: "", text: "compare with… (loading)" }));
  const stepBox = h("input", { type: "number", class: "step-box", "aria-label": "step", placeholder: "last", min: 0 });
  const note = h("div", { class: "cmp-box" });
  const zoomBar = h("span", { class: "zoom-bar" });
  info.append(h("label", null, "compare with ", vsPick), h("label", null, "step ", stepBox), zoomBar);
  root.append(info, note, h("div", { class: "model" }, treeEl, canvas, detail));

  const state = { expand: new Set(), fold: new Set(), depth: null, selected: null };
  const vs = { id: params.get("vs") || "", run: null, diff: null };
  const stepParam = () => (stepBox.value === "" || !Number.isFinite(Number(stepBox.value)) ? null : Number(stepBox.value));
  stepBox.value = params.get("step") ?? "";
  const onlyA = () => new Set((vs.diff?.onlyA || []).map((n) => n.id));
  // Start at a depth dagre draws quickly.
  for (let d = null, tries = 0; tries < 8; tries++) {
    const v = collapse(graph, { depth: d });
    if (v.nodes.length <= MAX_NODES) { state.depth = d; break; }
    d = d === null ? 4 : d - 1;
    state.depth = d;
  }

  let zoom = 1, svgEl = null, gw = 100, gh = 100;
  function draw() {
    const view = collapse(graph, state);
    const differing = onlyA();
    const g = new window.dagre.graphlib.Graph({ compound: true, multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 18, ranksep: 34, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    const groupIds = new Set(view.groups.map((n) => n.id));
    for (const n of view.groups) g.setNode(n.id, { label: n.path || "(root)", clusterLabelPos: "top", paddingTop: 22 });
    for (const n of view.nodes) {
      const [a, b] = label(n);
      const width = Math.max(60, CHAR * Math.max(a.length, b.length) + 16);
      g.setNode(n.id, { width, height: b ? 42 : 26 });
    }
    const parentOf = (n) => (n.group && groupIds.has(n.group) ? n.group : null);
    const members = new Set();
    for (const n of [...view.nodes, ...view.groups]) {
      const p = parentOf(n);
      if (p && p !== n.id) { g.setParent(n.id, p); members.add(p); }
    }
    // An open call with nothing visible inside is drawn as a plain box.
    for (const n of view.groups) if (!members.has(n.id)) g.setNode(n.id, { width: Math.max(80, CHAR * (n.path || "(root)").length + 16), height: 26 });
    view.edges.forEach((e, i) => g.setEdge(e.src, e.dst, {}, `e${i}`));
    window.dagre.layout(g);
    gw = g.graph().width || 100;
    gh = g.graph().height || 100;
    const s = svg("svg", { viewBox: `0 0 ${gw} ${gh}`, class: "graph", role: "img", "aria-label": "model graph" });
    s.append(svg("defs", null, svg("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#9aa3b2" }))));
    for (const n of view.groups) {
      const b = g.node(n.id);
      if (!b || b.width === undefined) continue;
      const grp = svg("g", { class: "cluster" },
        svg("rect", { x: b.x - b.width / 2, y: b.y - b.height / 2, width: b.width, height: b.height, rx: 6 }),
        svg("text", { x: b.x - b.width / 2 + 6, y: b.y - b.height / 2 + 15, text: `${n.path || "(root)"} · ${n.type}` }),
        svg("title", { text: `${n.path || "(root)"} · ${n.type}` }));
      grp.addEventListener("dblclick", (e) => { e.stopPropagation(); toggle(n.path, true); });
      grp.addEventListener("click", (e) => { e.stopPropagation(); select(n); });
      s.append(grp);
    }
    view.edges.forEach((e, i) => {
      const pts = g.edge({ v: e.src, w: e.dst, name: `e${i}` })?.points || [];
      if (!pts.length) return;
      const d = pts.map((p, k) => `${k ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
      s.append(svg("g", { class: "edge" }, svg("path", { d, "marker-end": "url(#arrow)" }),
        svg("title", { text: `${(e.shape || []).join("×")} ${e.dtype || ""}` })));
    });
    for (const n of view.nodes) {
      const b = g.node(n.id);
      const [a, sub] = label(n);
      const cls = n.kind === "module" ? "module" : n.kind === "op" ? "op" : "io";
      const differs = vs.diff && !vs.diff.same && differing.has(n.id);
      const node = svg("g", { class: `node ${cls}${state.selected === n.id ? " selected" : ""}${differs ? " differs" : ""}`, "data-id": n.id,
        transform: `translate(${b.x - b.width / 2},${b.y - b.height / 2})` },
      svg("rect", { width: b.width, height: b.height, rx: 4 }),
      svg("text", { x: 8, y: 17, text: a }),
      sub ? svg("text", { class: "sub", x: 8, y: 34, text: sub }) : null,
      svg("title", { text: sub ? `${a}\n${sub}` : a }));
      node.addEventListener("click", (e) => { e.stopPropagation(); select(n); });
      if (n.kind === "module") node.addEventListener("dblclick", (e) => { e.stopPropagation(); toggle(n.path, false); });
      s.append(node);
    }
    svgEl = s;
    canvas.replaceChildren(s);
    sizeSvg();
  }

  // Zoom: the SVG is drawn at `zoom` screen pixels per graph unit inside a scrolling
  // canvas (pannable by dragging, scrollbars or touch, at any width).
  const zoomText = h("span", { class: "muted zoom-text" });
  function sizeSvg() {
    if (!svgEl) return;
    // Rounded up: a fraction of a pixel lost to layout would shrink the text below 12 px.
    svgEl.style.width = `${Math.ceil(gw * zoom)}px`;
    svgEl.style.height = `${Math.ceil(gh * zoom)}px`;
    svgEl.classList.toggle("no-detail", zoom < DETAIL);
    svgEl.classList.toggle("no-labels", zoom < LABELS);
    canvas.dataset.zoom = zoom.toFixed(3);
    zoomText.textContent = `${Math.round(zoom * 100)}%`;
  }
  // Change the zoom keeping the graph point under (cx, cy) (canvas pixels) in place.
  function setZoom(z, cx, cy) {
    const r = canvas.getBoundingClientRect();
    if (cx === undefined) { cx = r.width / 2; cy = r.height / 2; }
    const gx = (canvas.scrollLeft + cx) / zoom, gy = (canvas.scrollTop + cy) / zoom;
    zoom = Math.max(ZOOM_MIN, Math.min(ZOOM_MAX, z));
    sizeSvg();
    canvas.scrollLeft = gx * zoom - cx;
    canvas.scrollTop = gy * zoom - cy;
  }
  const zbtn = (text, title, fn) => h("button", { type: "button", text, title, "aria-label": title, onclick: fn });
  zoomBar.append(zbtn("−", "zoom out", () => setZoom(zoom / 1.25)), zoomText, zbtn("+", "zoom in", () => setZoom(zoom * 1.25)),
    zbtn("1:1", "labels at 12 px", () => setZoom(1)),
    zbtn("fit", "whole graph", () => { const r = canvas.getBoundingClientRect(); setZoom(Math.min(r.width / gw, r.height / gh)); }));
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    setZoom(zoom * (e.deltaY > 0 ? 1 / 1.15 : 1.15), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY, canvas.scrollLeft, canvas.scrollTop]; });
  const stopDrag = () => { drag = null; };
  window.addEventListener("mouseup", stopDrag);
  canvas.addEventListener("mousemove", (e) => {
    if (!drag) return;
    canvas.scrollLeft = drag[2] - (e.clientX - drag[0]);
    canvas.scrollTop = drag[3] - (e.clientY - drag[1]);
  });

  // Open a collapsed module call, or close an open one.
  function toggle(path, isOpen) {
    if (isOpen) { state.expand.delete(path); state.fold.add(path); } else { state.fold.delete(path); state.expand.add(path); }
    draw();
    drawTree();
  }

  let charts = [];
  function select(n) {
    state.selected = n.id;
    setParams({ node: n.id });
    canvas.querySelectorAll(".node").forEach((el) => el.classList.toggle("selected", el.dataset.id === n.id));
    charts.forEach((c) => c.destroy());
    charts = [];
    const m = n.kind === "module" ? modules.get(n.path) : null;
    clear(detail).append(
      h("h3", { text: label(n)[0] }),
      h("table", { class: "kv" },
        [["kind", n.kind], ["type", n.type], ["path", n.path ?? n.parent ?? ""], ["call", n.call],
          ["inputs", shapeText(n.in_shapes)], ["outputs", shapeText(n.out_shapes)], ["dtype", n.dtype],
          ["parameters", fmtCount(n.params || 0)], ["extra", m?.extra]]
          .filter(([, v]) => v !== undefined && v !== null && v !== "")
          .map(([k, v]) => h("tr", null, h("td", { text: k }), h("td", { text: String(v) })))));
    if (m && m.parameters?.length) {
      detail.append(h("h4", { text: "Parameters" }), h("table", { class: "kv" }, m.parameters.map((p) =>
        h("tr", null, h("td", { text: p.name }), h("td", { text: `${p.shape.join("×")} = ${fmtCount(p.shape.reduce((a, b) => a * b, 1))} ${p.dtype}${p.trainable ? "" : " (frozen)"}${p.tied ? ` tied to ${p.tied}` : ""}` })))));
    }
    const series = n.series || [];
    if (!series.length) return;
    const runs = [{ id: runId, name: run.run.name }, ...(vs.run ? [{ id: vs.run.id, name: vs.run.name }] : [])];
    if (vs.run) {
      const box = h("div", { class: "cmp-stats-box" });
      const step = stepParam();
      detail.append(h("h4", { text: `${runs[0].name} vs ${runs[1].name}${step === null ? "" : ` at step ${step}`}` }), box);
      statsTable(box, series.filter((k) => !k.endsWith("/hist")), runs, step)
        .catch((e) => { clear(box).append(h("p", { class: "error", text: e.message })); });
    }
    detail.append(h("h4", { text: "Statistics over steps" }));
    const missing = series.filter((k) => !present.has(k));
    for (const key of series.filter((k) => present.has(k))) {
      const mark = replayed.has(key) ? replayedMark() : null;
      if (key.endsWith("/hist")) {
        const box = h("div", null, h("div", { class: "mono" }, key, " ", mark), h("p", { class: "muted", text: "loading…" }));
        detail.append(box);
        api.get(runPath(runId, "/hist"), { key, points: 300 }).then((d) => box.lastChild.replaceWith(heatmap(d, { height: 120 })))
          .catch((e) => { box.lastChild.textContent = e.message; });
        continue;
      }
      const c = new Chart(key, runs, { height: 110 });
      charts.push(c);
      if (mark) detail.append(h("div", { class: "stat-replayed" }, mark));
      detail.append(c.el);
      c.load();
    }
    if (missing.length) {
      const cmd = `flowillower replay --watch model --runs ${runId}`;
      detail.append(h("div", { class: "missing" }, `${missing.length} statistic(s) not recorded in this run (watch the model with fw.watch, or compute them in hindsight; "model": the name the run gave it in fw.checkpointing): `,
        h("code", { text: cmd }), " ", copyButton(cmd)));
    }
  }

  function drawTree() {
    const hier = graph.hierarchy || {};
    const openNow = new Set(collapse(graph, state).groups.map((g) => g.path));
    const item = (path) => {
      const kids = hier[path] || [];
      const mod = modules.get(path);
      const isOpen = openNow.has(path);
      const tog = h("span", { class: "tog", text: kids.length || isOpen ? (isOpen ? "▾" : "▸") : "·" });
      const li = h("li", null, h("span", { title: "click: open / close in the graph", onclick: () => {
        const node = (graph.nodes || []).find((n) => n.kind === "module" && n.path === path);
        toggle(path, isOpen);
        if (node) select(node);
      } }, tog, `${path === "" ? "(root)" : path.split(".").pop()} `, h("span", { class: "muted", text: mod?.type || "" })));
      if (kids.length && isOpen) li.append(h("ul", null, kids.map(item)));
      return li;
    };
    treeEl.replaceChildren(h("ul", { style: { paddingLeft: 0 } }, item("")));
  }

  // The second run: the picker lists runs with a model graph; the choice and the step
  // go into the URL (vs=, step=), so a link shows the same comparison.
  async function setVs(id) {
    vs.id = id;
    vs.run = null;
    vs.diff = null;
    clear(note);
    setParams({ vs: id || null });
    if (id) {
      try {
        const [other, info2] = await Promise.all([otherGraph(id, name), api.get(runPath(id))]);
        vs.run = { id: info2.run.id, name: info2.run.name };
        vs.diff = structureDiff(graph, other);
        note.append(structureNote(vs.diff, run.run.name, vs.run.name));
      } catch (e) { note.append(h("p", { class: "error", text: e.message })); }
    }
    stepBox.disabled = !vs.run;  // the step picks the values compared: one run needs none
    draw();
    const sel = (graph.nodes || []).find((n) => n.id === state.selected);
    if (sel) select(sel);
  }
  vsPick.addEventListener("change", () => setVs(vsPick.value));
  stepBox.addEventListener("change", () => {
    setParams({ step: stepParam() });
    const sel = (graph.nodes || []).find((n) => n.id === state.selected);
    if (sel) select(sel);
  });
  otherModelRuns(runId).then((others) => {
    if (vs.id && !others.some((r) => r.id === vs.id)) others.unshift({ id: vs.id, name: vs.id });
    clear(vsPick).append(h("option", { value: "", text: others.length ? `compare with… (${others.length})` : "no other run has a model graph" }),
      ...others.map((r) => h("option", { value: r.id, text: `${r.name} · ${r.id}`, selected: r.id === vs.id })));
  }).catch((e) => { clear(vsPick).append(h("option", { value: "", text: e.message })); });

  draw();
  drawTree();
  const first = (graph.nodes || []).find((n) => n.id === params.get("node"));
  if (first) state.selected = first.id;
  stepBox.disabled = !vs.id;
  if (vs.id) await setVs(vs.id); else if (first) select(first);
  return () => { charts.forEach((c) => c.destroy()); window.removeEventListener("mouseup", stopDrag); };
}
