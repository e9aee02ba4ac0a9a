// The model page with a second run: do the two graphs have the same structure (which
// nodes differ), and a node's statistics in both runs at one step, with the difference.
import { api, runPath } from "./api.js";
import { clear, fmtNum, h } from "./dom.js";

const INT = new Intl.NumberFormat("en-US");
/** An integer count with thousands separators (1,234,567); other values as fmtNum. */
export function fmtCount(v) {
  return typeof v === "number" && Number.isInteger(v) ? INT.format(v) : fmtNum(v);
}

// A node's identity across runs: what it is and where it ran, not its id (ids are
// assigned in trace order and may shift when one module is added).
export function signature(n) {
  return [n.kind, n.path ?? n.parent ?? "", n.type, n.call ?? "", n.name ?? ""].join("|");
}

/** Compare two graph documents: nodes only in `a` / only in `b`, and edges that differ. */
export function structureDiff(a, b) {
  const sig = (g) => {
    // The k-th node of a signature (trace order): a second `add` in one module is a
    // node the other graph lacks, not the same node twice.
    const seen = new Map(), keyOf = new Map(), nodes = new Map();
    for (const n of g.nodes || []) {
      const s = signature(n), k = seen.get(s) || 0;
      seen.set(s, k + 1);
      keyOf.set(n.id, `${s}#${k}`);
      nodes.set(`${s}#${k}`, n);
    }
    const edges = new Set((g.edges || []).map((e) => `${keyOf.get(e.src)}>${keyOf.get(e.dst)}>${(e.shape || []).join("x")}`));
    return { nodes, edges };
  };
  const A = sig(a), B = sig(b);
  const onlyA = [...A.nodes].filter(([k]) => !B.nodes.has(k)).map(([, n]) => n);
  const onlyB = [...B.nodes].filter(([k]) => !A.nodes.has(k)).map(([, n]) => n);
  const edges = [...A.edges].filter((e) => !B.edges.has(e)).length + [...B.edges].filter((e) => !A.edges.has(e)).length;
  return { same: !onlyA.length && !onlyB.length && !edges, onlyA, onlyB, edges };
}

const nodeText = (n) => `${n.kind === "module" ? n.path || "(root)" : n.type}${n.call ? `#${n.call}` : ""} (${n.kind === "module" ? n.type : n.path ?? n.parent ?? ""})`;

/** The banner saying whether the structures match, listing the nodes that differ. */
export function structureNote(diff, nameA, nameB) {
  if (diff.same) return h("p", { class: "cmp-note same", text: `Same structure in ${nameA} and ${nameB}: the graph is drawn once.` });
  const list = (nodes, who) => (nodes.length ? h("li", null, `only in ${who} (${nodes.length}): `,
    h("span", { class: "mono", text: nodes.slice(0, 40).map(nodeText).join(", ") + (nodes.length > 40 ? ", …" : "") })) : null);
  return h("details", { class: "cmp-note differ", open: true },
    h("summary", { text: `The structures differ: ${diff.onlyA.length} node(s) only in ${nameA}, ${diff.onlyB.length} only in ${nameB}` +
      `${diff.edges ? `, ${diff.edges} edge(s) differ` : ""}. The graph shown is ${nameA}'s (differing nodes marked).` }),
    h("ul", null, list(diff.onlyA, nameA), list(diff.onlyB, nameB)));
}

// One value of `key` in `run` at `step` (null: the last one); a run without that exact
// step gives its nearest. Answers {step, value} or null when the run lacks the key.
async function valueAt(run, key, step) {
  const pick = (r, target) => {
    if (!r || r.missing || !r.x || !r.x.length) return null;
    let best = 0;
    if (target === null) best = r.x.length - 1;
    else r.x.forEach((x, i) => { if (Math.abs(x - target) < Math.abs(r.x[best] - target)) best = i; });
    return { step: r.x[best], value: r.y[best], replayed: (r.replayed || []).includes(best) };
  };
  if (step !== null) {  // a window at full resolution (it keeps a neighbour on each side)
    const near = pick((await api.get("series", { run, key, x: "step", x0: step, x1: step, points: 64 })).runs[0], step);
    if (near) return near;
  }
  return pick((await api.get("series", { run, key, x: "step", points: 4000 })).runs[0], step);
}

/** The mark of statistics computed afterwards by `flowillower replay --watch`. */
export const replayedMark = () => h("span", { class: "replayed-mark", title: "replayed: computed afterwards by flowillower replay --watch", text: "replayed" });

const diffText = (a, b) => (typeof a === "number" && typeof b === "number" ? fmtNum(b - a) : "");

/**
 * Fill `box` with the statistics of `keys` in both `runs` ([{id, name}]) at `step`
 * (null: each run's last), one row per key: value in each run and the difference.
 */
export async function statsTable(box, keys, runs, step) {
  clear(box).append(h("p", { class: "muted", text: "loading…" }));
  const rows = await Promise.all(keys.map(async (key) => [key, await Promise.all(runs.map((r) =>
    valueAt(r.id, key, step).catch(() => null)))]));
  const cell = (got) => {
    if (!got) return h("td", { class: "num muted", text: "—" });
    const off = step !== null && got.step !== step;
    return h("td", { class: "num", title: `step ${got.step}${got.replayed ? " (replayed)" : ""}` }, fmtNum(got.value),
      off ? h("span", { class: "muted off-step", text: ` @${got.step}` }) : null, got.replayed ? replayedMark() : null);
  };
  clear(box).append(h("div", { class: "cmp-scroll" }, h("table", { class: "kv cmp-stats" },
    h("tr", { class: "muted" }, h("td", { text: "statistic" }), ...runs.map((r) => h("td", { class: "num run-head", title: r.name, text: r.name })),
      h("td", { class: "num", title: `${runs[1].name} − ${runs[0].name}`, text: "Δ" })),
    rows.map(([key, got]) => h("tr", { "data-key": key }, h("td", { class: "mono", text: key.replace(/^(act|grad|param)\//, "$1 ") }),
      ...got.map(cell), h("td", { class: "num diff", text: got[0] && got[1] ? diffText(got[0].value, got[1].value) : "" }))))),
  h("p", { class: "muted", text: step === null ? "each run's last recorded step" : `step ${step} (@N: the nearest step a run has)` }));
}

/** The runs with a model graph other than `id`, for the "compare with" picker. */
export async function otherModelRuns(id) {
  const { runs } = await api.get("models");
  return runs.filter((r) => r.id !== id);
}

/** The other run's graph document (same model name, else its main model). */
export async function otherGraph(id, name) {
  const { models } = await api.get(runPath(id, "/models"));
  const use = models.includes(name) ? name : models[0];
  if (use === undefined) throw new Error(`run ${id} has no model graph`);
  return api.get(runPath(id, "/model"), use ? { name: use } : {});
}
