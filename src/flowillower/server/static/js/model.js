// The model page: the `flowillower.graph/1` document (docs/model.md) drawn as a layered
// graph (dagre), a collapsible module hierarchy, and per-node shapes, parameters and
// activation / gradient statistics over steps (curves and a histogram heat map).
import { api, runPath } from "./api.js";
import { Chart } from "./chart.js";
import { clear, copyButton, fmtNum, h, loadScript, svg } from "./dom.js";
import { heatmap } from "./heatmap.js";

const MAX_NODES = 800;  // dagre slows down (and overflows its stack) on huge graphs

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
  if (n.kind === "module") return [`${n.path || "(root)"}${n.call ? `#${n.call}` : ""}`, `${n.type}${n.params ? ` · ${fmtNum(n.params)} p` : ""}`];
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
  const treeEl = h("div", { class: "tree" });
  const canvas = h("div", { class: "canvas" });
  const detail = h("div", { class: "detail" }, h("p", { class: "muted", text: "Click a node to see its shapes, parameters and statistics. Double-click a module to open or close it." }));
  const modules = new Map(((graph.tree || {}).modules || []).map((m) => [m.path, m]));
  const info = h("div", { class: "toolbar" },
    h("a", { href: `#/run/${encodeURIComponent(runId)}`, text: `← ${run.run.name}` }),
    h("b", { text: graph.root || "model" }),
    h("span", { class: "muted", text: `${(graph.nodes || []).length} nodes · ${fmtNum((graph.tree || {}).params)} parameters` }),
    graph.truncated ? h("span", { class: "error", text: "graph truncated at max_nodes" }) : null,
    graph.error ? h("span", { class: "error", text: `probe failed in ${graph.error_path || "?"}: ${graph.error}` }) : null,
    !graph.probed ? h("span", { class: "muted", text: "no probe forward pass: module tree only (pass an example input to fw.log_model)" }) : null);
  root.append(info, h("div", { class: "model" }, treeEl, canvas, detail));

  const state = { expand: new Set(), fold: new Set(), depth: null, selected: null };
  // Start at a depth dagre draws quickly.
  for (let d = null, tries = 0; tries < 8; tries++) {
    const v = collapse(graph, { depth: d });
    if (v.nodes.length <= MAX_NODES) { state.depth = d; break; }
    d = d === null ? 4 : d - 1;
    state.depth = d;
  }

  let viewBox = null;
  function draw() {
    const view = collapse(graph, state);
    const g = new window.dagre.graphlib.Graph({ compound: true, multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 18, ranksep: 34, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    const groupIds = new Set(view.groups.map((n) => n.id));
    for (const n of view.groups) g.setNode(n.id, { label: n.path || "(root)", clusterLabelPos: "top", paddingTop: 18 });
    for (const n of view.nodes) {
      const [a, b] = label(n);
      const width = Math.max(60, 7 * Math.max(a.length, b.length) + 16);
      g.setNode(n.id, { width, height: b ? 34 : 22 });
    }
    const parentOf = (n) => (n.group && groupIds.has(n.group) ? n.group : null);
    const members = new Set();
    for (const n of [...view.nodes, ...view.groups]) {
      const p = parentOf(n);
      if (p && p !== n.id) { g.setParent(n.id, p); members.add(p); }
    }
    // An open call with nothing visible inside is drawn as a plain box.
    for (const n of view.groups) if (!members.has(n.id)) g.setNode(n.id, { width: 80, height: 22 });
    view.edges.forEach((e, i) => g.setEdge(e.src, e.dst, {}, `e${i}`));
    window.dagre.layout(g);
    const gw = g.graph().width || 100, gh = g.graph().height || 100;
    const s = svg("svg", { viewBox: `0 0 ${gw} ${gh}`, role: "img", "aria-label": "model graph" });
    s.append(svg("defs", null, svg("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#9aa3b2" }))));
    for (const n of view.groups) {
      const b = g.node(n.id);
      if (!b || b.width === undefined) continue;
      const grp = svg("g", { class: "cluster" },
        svg("rect", { x: b.x - b.width / 2, y: b.y - b.height / 2, width: b.width, height: b.height, rx: 6 }),
        svg("text", { x: b.x - b.width / 2 + 6, y: b.y - b.height / 2 + 12, text: `${n.path || "(root)"} · ${n.type}` }));
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
      const node = svg("g", { class: `node ${cls}${state.selected === n.id ? " selected" : ""}`, "data-id": n.id,
        transform: `translate(${b.x - b.width / 2},${b.y - b.height / 2})` },
      svg("rect", { width: b.width, height: b.height, rx: 4 }),
      svg("text", { x: 8, y: 14, text: a }),
      sub ? svg("text", { class: "sub", x: 8, y: 28, text: sub }) : null);
      node.addEventListener("click", (e) => { e.stopPropagation(); select(n); });
      if (n.kind === "module") node.addEventListener("dblclick", (e) => { e.stopPropagation(); toggle(n.path, false); });
      s.append(node);
    }
    viewBox = [0, 0, gw, gh];
    panZoom(s);
    canvas.replaceChildren(s);
  }

  function panZoom(s) {
    const apply = () => s.setAttribute("viewBox", viewBox.map((v) => v.toFixed(1)).join(" "));
    s.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = s.getBoundingClientRect();
      const f = e.deltaY > 0 ? 1.15 : 1 / 1.15;
      const px = viewBox[0] + ((e.clientX - r.left) / r.width) * viewBox[2];
      const py = viewBox[1] + ((e.clientY - r.top) / r.height) * viewBox[3];
      viewBox = [px - (px - viewBox[0]) * f, py - (py - viewBox[1]) * f, viewBox[2] * f, viewBox[3] * f];
      apply();
    }, { passive: false });
    let drag = null;
    s.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY, viewBox[0], viewBox[1]]; });
    window.addEventListener("mouseup", () => { drag = null; });
    s.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const r = s.getBoundingClientRect();
      const k = Math.max(viewBox[2] / r.width, viewBox[3] / r.height);
      viewBox[0] = drag[2] - (e.clientX - drag[0]) * k;
      viewBox[1] = drag[3] - (e.clientY - drag[1]) * k;
      apply();
    });
  }

  // Open a collapsed module call, or close an open one.
  function toggle(path, isOpen) {
    if (isOpen) { state.expand.delete(path); state.fold.add(path); } else { state.fold.delete(path); state.expand.add(path); }
    draw();
    drawTree();
  }

  let charts = [];
  function select(n) {
    state.selected = n.id;
    canvas.querySelectorAll(".node").forEach((el) => el.classList.toggle("selected", el.dataset.id === n.id));
    charts.forEach((c) => c.destroy());
    charts = [];
    const m = n.kind === "module" ? modules.get(n.path) : null;
    clear(detail).append(
      h("h3", { text: label(n)[0] }),
      h("table", { class: "kv" },
        [["kind", n.kind], ["type", n.type], ["path", n.path ?? n.parent ?? ""], ["call", n.call],
          ["inputs", shapeText(n.in_shapes)], ["outputs", shapeText(n.out_shapes)], ["dtype", n.dtype],
          ["parameters", n.params ? fmtNum(n.params) : "0"], ["extra", m?.extra]]
          .filter(([, v]) => v !== undefined && v !== null && v !== "")
          .map(([k, v]) => h("tr", null, h("td", { text: k }), h("td", { text: String(v) })))));
    if (m && m.parameters?.length) {
      detail.append(h("h4", { text: "Parameters" }), h("table", { class: "kv" }, m.parameters.map((p) =>
        h("tr", null, h("td", { text: p.name }), h("td", { text: `${p.shape.join("×")} ${p.dtype}${p.trainable ? "" : " (frozen)"}${p.tied ? ` tied to ${p.tied}` : ""}` })))));
    }
    const series = n.series || [];
    if (!series.length) return;
    detail.append(h("h4", { text: "Statistics over steps" }));
    const missing = series.filter((k) => !present.has(k));
    for (const key of series.filter((k) => present.has(k))) {
      if (key.endsWith("/hist")) {
        const box = h("div", null, h("div", { class: "mono", text: key }), h("p", { class: "muted", text: "loading…" }));
        detail.append(box);
        api.get(runPath(runId, "/hist"), { key, points: 300 }).then((d) => box.lastChild.replaceWith(heatmap(d, { height: 120 })))
          .catch((e) => { box.lastChild.textContent = e.message; });
        continue;
      }
      const c = new Chart(key, [{ id: runId, name: run.run.name }], { height: 110 });
      charts.push(c);
      detail.append(c.el);
      c.load();
    }
    if (missing.length) {
      const cmd = `flowillower replay ${missing[0]} --runs ${runId}`;
      detail.append(h("div", { class: "missing" }, `${missing.length} statistic(s) not recorded in this run (watch the model with fw.watch, or fill them in hindsight): `,
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

  draw();
  drawTree();
  return () => charts.forEach((c) => c.destroy());
}
