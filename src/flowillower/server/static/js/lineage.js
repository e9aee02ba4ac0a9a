// The run page's lineage card: the runs whose artifacts this run used (inputs) and the
// runs that used its artifacts (consumers), drawn as a small left-to-right DAG. Each
// node links to its run page; an edge is labelled with the artifact it carried.
import { api, runPath } from "./api.js";
import { h, svg } from "./dom.js";

const NODE_W = 190, NODE_H = 40, GAP_X = 180, GAP_Y = 22, PAD = 12;

// Column of each node: the longest path from a source (so every edge points right).
function layers(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let moved = false;
    for (const e of edges) {
      const want = (depth.get(e.from) ?? 0) + 1;
      if (depth.has(e.to) && want > depth.get(e.to) && want < nodes.length) {
        depth.set(e.to, want);
        moved = true;
      }
    }
    if (!moved) break;
  }
  return depth;
}

function layout(nodes, edges) {
  const depth = layers(nodes, edges);
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] ||= []).push(n);
  const at = new Map();
  columns.forEach((col, x) => col.forEach((n, y) => at.set(n.id, {
    x: PAD + x * (NODE_W + GAP_X), y: PAD + y * (NODE_H + GAP_Y) })));
  const rows = Math.max(...columns.map((c) => (c ? c.length : 0)));
  return { at, width: PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X,
    height: PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y };
}

// Colours through the page's theme variables, set on the elements' style objects (the
// CSP allows that; app.css is not this module's).
function paint(el, styles) { Object.assign(el.style, styles); return el; }

function short(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

export function drawLineage(data) {
  const { at, width, height } = layout(data.nodes, data.edges);
  const root = svg("svg", { class: "lineage-dag", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `lineage of ${data.run}` });
  root.append(svg("defs", null, svg("marker", { id: "lineage-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto" }, paint(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "lineage-head" }), { fill: "var(--edge)" }))));
  for (const e of data.edges) {
    const a = at.get(e.from), b = at.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    root.append(svg("g", { class: "lineage-edge", "data-from": e.from, "data-to": e.to },
      paint(svg("path", { d: `M${x1},${y1} C${x1 + GAP_X / 2},${y1} ${x2 - GAP_X / 2},${y2} ${x2},${y2}`,
        fill: "none", "marker-end": "url(#lineage-arrow)" }), { stroke: "var(--edge)" }),
      paint(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, "text-anchor": "middle",
        text: short(e.via ? `${e.artifact} (${e.via.replace(/^registry:/, "")})` : e.artifact, 27) }),
      { fill: "var(--edge-fg)", fontSize: "11px" })));
  }
  for (const n of data.nodes) {
    const p = at.get(n.id);
    const label = short(n.name || n.id, 24);
    const node = svg("g", { class: `lineage-node${n.id === data.run ? " current" : ""}${n.missing ? " missing" : ""}`,
      "data-id": n.id, transform: `translate(${p.x},${p.y})` },
    svg("title", { text: `${n.id}${n.missing ? " (not in this store)" : ` (${n.status || "?"})`}` }),
    paint(svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }), {
      fill: n.id === data.run ? "var(--sel)" : "var(--node)", stroke: n.id === data.run ? "var(--accent)" : "var(--node-line)",
      strokeDasharray: n.missing ? "4 3" : "" }),
    paint(svg("text", { x: 10, y: 17, text: label }), { fill: "var(--fg)", fontSize: "12px" }),
    paint(svg("text", { x: 10, y: 32, class: "lineage-id", text: short(n.id, 28) }),
      { fill: "var(--muted)", fontSize: "10px", fontFamily: "var(--mono)" }));
    // a run not in this store (not pulled) has no page to open
    root.append(n.missing || n.id === data.run ? node : svg("a", { href: `#/run/${encodeURIComponent(n.id)}` }, node));
  }
  return root;
}

// Appends the card to `grid` once the lineage is known; runs with none get no card, and
// a static export (no lineage data) or an error leaves the page as it is.
export async function lineageCard(grid, id) {
  let data;
  try { data = await api.get(runPath(id, "/lineage")); } catch { return null; }
  if (!data || !data.edges || !data.edges.length) return null;
  const card = h("section", { class: "card wide lineage-card" },
    h("h2", { text: `Lineage (${data.inputs.length} input${data.inputs.length === 1 ? "" : "s"}, `
      + `${data.consumers.length} consumer${data.consumers.length === 1 ? "" : "s"})` }),
    h("div", { class: "lineage-scroll", style: { overflowX: "auto" } }, drawLineage(data)));
  grid.append(card);
  return card;
}
