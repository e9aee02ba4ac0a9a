// Run grouping on the charts page: which args and tags vary among the selected runs, the
// groups they make, and the mean with a band (± std or min–max) of each group's runs at
// every x, runs aligned on the x-axis by value.
import { fmtValue } from "./dom.js";

const NONE = "(none)";
// A `key=value` or `key:value` tag groups by its value; any other tag by present/absent.
const PAIR = /^([^=:\s]+)[=:](.+)$/;

function tagPairs(run) {
  const out = new Map();
  for (const t of run.tags || []) {
    const m = PAIR.exec(String(t));
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

/** The value of grouping key `key` ("arg:NAME", "tag:NAME" or "tags:TAG") for one run
 * ({args, tags}), as text; a run without it reads "(none)". */
export function groupValue(run, key) {
  const at = key.indexOf(":");
  const kind = key.slice(0, at), name = key.slice(at + 1);
  if (kind === "arg") {
    const args = run.args || {};
    return Object.prototype.hasOwnProperty.call(args, name) && args[name] !== null ? fmtValue(args[name]) : NONE;
  }
  if (kind === "tag") return tagPairs(run).get(name) ?? NONE;
  if (kind === "tags") return (run.tags || []).map(String).includes(name) ? "yes" : "no";
  return NONE;
}

/** Grouping keys whose value differs among `runs`: [{key, label}], args first. */
export function groupKeys(runs) {
  const candidates = [];
  const seen = new Set();
  const add = (key, label) => { if (!seen.has(key)) { seen.add(key); candidates.push({ key, label }); } };
  runs.forEach((r) => Object.keys(r.args || {}).sort().forEach((k) => add(`arg:${k}`, k)));
  runs.forEach((r) => tagPairs(r).forEach((_, k) => add(`tag:${k}`, `tag ${k}`)));
  runs.forEach((r) => (r.tags || []).map(String).filter((t) => !PAIR.test(t)).forEach((t) => add(`tags:${t}`, `tagged ${t}`)));
  return candidates.filter((c) => new Set(runs.map((r) => groupValue(r, c.key))).size > 1);
}

function byValue(a, b) {
  const x = Number(a), y = Number(b);
  if (a !== NONE && b !== NONE && Number.isFinite(x) && Number.isFinite(y)) return x - y;
  if (a === NONE || b === NONE) return a === NONE ? 1 : -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The groups `runs` make under `key`: [{label, value, ids}], ordered by value (numbers
 * numerically, "(none)" last). The label (`lr=0.001`) also picks the group's colour. */
export function makeGroups(runs, key) {
  const name = key.slice(key.indexOf(":") + 1);
  const prefix = key.startsWith("tags:") ? `tagged ${name}` : name;
  const byVal = new Map();
  runs.forEach((r) => {
    const v = groupValue(r, key);
    if (!byVal.has(v)) byVal.set(v, []);
    byVal.get(v).push(r.id);
  });
  return [...byVal.keys()].sort(byValue).map((value) => ({ label: `${prefix}=${value}`, value, ids: byVal.get(value) }));
}

const finite = (v) => typeof v === "number" && Number.isFinite(v);

function medianStep(x) {
  const d = [];
  for (let i = 1; i < x.length; i++) if (x[i] > x[i - 1]) d.push(x[i] - x[i - 1]);
  if (!d.length) return 0;
  d.sort((a, b) => a - b);
  return d[d.length >> 1];
}

// One run's value at each of `xs` (sorted): its own point where it has one, else a linear
// interpolation between its neighbours when they are at most 1.5 of its usual spacing apart
// (a hole in its logging stays a hole); null outside its range or beside a NaN.
function onGrid(run, xs) {
  const order = Array.from(run.x, (_, i) => i).filter((i) => finite(run.x[i])).sort((a, b) => run.x[a] - run.x[b]);
  const x = order.map((i) => run.x[i]), y = order.map((i) => run.y[i]);
  const tol = 1.5 * medianStep(x);
  const out = new Array(xs.length).fill(null);
  let j = 0;
  for (let k = 0; k < xs.length; k++) {
    const v = xs[k];
    while (j < x.length && x[j] < v) j++;
    if (j < x.length && x[j] === v) { out[k] = finite(y[j]) ? y[j] : null; continue; }
    if (j === 0 || j >= x.length) continue;
    const x0 = x[j - 1], x1 = x[j], y0 = y[j - 1], y1 = y[j];
    if (x1 - x0 <= tol && finite(y0) && finite(y1)) out[k] = y0 + ((y1 - y0) * (v - x0)) / (x1 - x0);
  }
  return out;
}

function unionX(list) {
  const all = [];
  list.forEach((r) => r.x.forEach((v) => { if (finite(v)) all.push(v); }));
  all.sort((a, b) => a - b);
  return all.filter((v, i) => i === 0 || v !== all[i - 1]);
}

/** Mean and spread over runs [{x, y}] at every x any of them has: {x, mean, std, min, max,
 * n}, each an array over x (null where no run has a value). std is the population standard
 * deviation (numpy's default, ddof=0); NaN and missing values are left out, not zeros. */
export function aggregate(list) {
  const xs = unionX(list);
  const cols = list.map((r) => onGrid(r, xs));
  const mean = [], std = [], min = [], max = [], n = [];
  for (let k = 0; k < xs.length; k++) {
    let s = 0, c = 0, lo = Infinity, hi = -Infinity;
    for (const col of cols) {
      const v = col[k];
      if (v === null) continue;
      s += v; c += 1;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!c) { mean.push(null); std.push(null); min.push(null); max.push(null); n.push(0); continue; }
    const m = s / c;
    let ss = 0;
    for (const col of cols) if (col[k] !== null) ss += (col[k] - m) ** 2;
    mean.push(m); std.push(Math.sqrt(ss / c)); min.push(lo); max.push(hi); n.push(c);
  }
  return { x: xs, mean, std, min, max, n };
}

/** The band's edges for `band` ("std": mean ± std, "minmax": min to max). */
export function bandEdges(agg, band) {
  if (band === "minmax") return { lo: agg.min, hi: agg.max };
  return { lo: agg.mean.map((m, i) => (m === null ? null : m - agg.std[i])),
    hi: agg.mean.map((m, i) => (m === null ? null : m + agg.std[i])) };
}
