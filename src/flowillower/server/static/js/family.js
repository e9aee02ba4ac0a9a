// The run page's "Family" card: the run it was forked from (and that run's ancestors),
// the tree of forks around it (fw.init(fork_from=(run, step))), each a link to its run
// page, and for a resumed run its segments (fw.init(resume=...)). Answered by
// /api/runs/ID/family, or in a static export by data/runs/ID/family.json.
import { api, runPath } from "./api.js";
import { fmtTime, h, statusBadge } from "./dom.js";

const runLink = (n) => (n.missing || n.current
  ? h("span", { class: n.current ? "family-current" : "muted", text: n.name || n.id,
    title: n.missing ? `${n.id} (not in this ${api.readonly ? "site" : "store"})` : n.id })
  : h("a", { href: `#/run/${encodeURIComponent(n.id)}`, text: n.name || n.id, title: n.id }));

// One node of the tree and its forks below it, as nested lists (a tree for screen readers).
function treeItem(n, level) {
  const label = h("span", { class: "family-node" }, runLink(n),
    n.status ? statusBadge(n.status) : null,
    n.step !== null && n.step !== undefined ? h("span", { class: "muted family-step", text: `forked at step ${n.step}` }) : null,
    n.current ? h("span", { class: "muted", text: "(this run)" }) : null);
  const item = h("li", { role: "treeitem", "aria-level": String(level), "aria-expanded": n.children.length ? "true" : null,
    class: n.current ? "current" : "", dataset: { id: n.id } }, label);
  if (n.children.length) item.append(h("ul", { role: "group" }, n.children.map((c) => treeItem(c, level + 1))));
  return item;
}

function code(git) {
  if (!git) return "—";
  const head = git.head ? git.head.slice(0, 10) : (git.snapshot || "").slice(0, 10);
  return `${head || "—"}${git.branch ? ` (${git.branch})` : ""}${git.dirty ? " dirty" : ""}`;
}

function segmentsTable(segs) {
  const steps = (s) => (s.first_step === null ? "—" : `${s.first_step}–${s.last_step}`);
  const left = { textAlign: "left", fontWeight: "normal", paddingRight: "1.2em" };
  const table = h("table", { class: "family-segments", style: { whiteSpace: "nowrap", borderCollapse: "collapse" } },
    h("tr", { class: "muted" }, ["segment", "steps", "rewound to", "code", "host", "started", "ended"]
      .map((t) => h("th", { text: t, scope: "col", style: left }))),
    segs.map((s) => h("tr", { dataset: { segment: String(s.index) } },
      h("td", { text: s.inherited ? `${s.index} (from the parent)` : String(s.index) }),
      h("td", { class: "num", text: steps(s) }),
      h("td", { class: "num", text: s.rewind === null ? "—" : `step ${s.rewind}` }),
      h("td", { class: "mono", text: code(s.git) }),
      h("td", { text: s.host || "—" }),
      h("td", { text: s.started ? fmtTime(s.started) : "—" }),
      h("td", { text: s.status ? `${s.status}${s.ended ? ` ${fmtTime(s.ended)}` : ""}` : "—" }))));
  table.querySelectorAll("td").forEach((td) => { td.style.paddingRight = "1.2em"; });
  return table;
}

/** The card's element for a family document, or null when there is nothing to show. */
export function familyCard(doc) {
  const hasTree = doc.parent || doc.tree.children.length;
  if (!hasTree && !doc.segments.length) return null;
  const card = h("section", { class: "card wide family-card" }, h("h2", { text: "Family" }));
  if (doc.parent) {
    const chain = doc.ancestors.flatMap((a, i) => [i ? " → " : "", runLink(a), h("span", { class: "muted", text: ` @${a.step}` })]);
    card.append(h("p", { class: "family-parent" }, "forked from ", runLink(doc.parent),
      ` at step ${doc.parent.step}`, doc.ancestors.length > 1 ? h("span", { class: "muted" }, " · lineage: ", ...chain) : null));
  }
  if (hasTree) {
    const tree = h("ul", { role: "tree", class: "family-tree", "aria-label": "forks" }, treeItem(doc.tree, 1));
    // Indented lists (app.css is not this module's: styles set on the elements).
    tree.querySelectorAll("ul").forEach((ul) => Object.assign(ul.style, { paddingLeft: "1.4em", borderLeft: "1px solid var(--line, #ccc)" }));
    tree.querySelectorAll(".family-node").forEach((n) => Object.assign(n.style, { display: "inline-flex", gap: "0.5em", alignItems: "baseline", padding: "2px 0" }));
    tree.querySelectorAll(".family-current").forEach((n) => Object.assign(n.style, { fontWeight: "600" }));
    Object.assign(tree.style, { listStyle: "none", paddingLeft: "0", margin: "0.3em 0" });
    tree.querySelectorAll("ul").forEach((ul) => { ul.style.listStyle = "none"; });
    card.append(tree);
    if (doc.cut) card.append(h("p", { class: "muted", text: `showing the first ${doc.nodes} runs of the family` }));
    // Every run of the tree this site has, overlaid on the charts page (forks diverge there).
    const ids = [];
    (function walk(n) { if (!n.missing) ids.push(n.id); n.children.forEach(walk); })(doc.tree);
    const shown = ids.slice(0, 50);
    if (shown.length > 1) {
      card.append(h("p", null, h("a", { class: "family-chart", href: `#/charts?runs=${shown.map(encodeURIComponent).join(",")}`,
        text: `chart the family (${shown.length} runs)` })));
    }
  }
  if (doc.segments.length) {
    card.append(h("h3", { text: `Segments (${doc.segments.length})` }),
      h("div", { style: { overflowX: "auto" } }, segmentsTable(doc.segments)));  // narrow screens scroll it
  }
  return card;
}

// Appends the card to `grid` when the run has a family; an export without family data
// (older site) or an error leaves the page as it is.
export async function familyPanel(grid, id) {
  let doc;
  try { doc = await api.get(runPath(id, "/family")); } catch { return null; }
  const card = doc && doc.tree ? familyCard(doc) : null;
  if (card) grid.append(card);
  return card;
}
