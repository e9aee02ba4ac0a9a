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

// A run's points in x order (non-finite x left out), copied only when out of order.
function sortedRun(run) {
  let sorted = true;
  for (let i = 0; i < run.x.length && sorted; i++) sorted = finite(run.x[i]) && (i === 0 || run.x[i] >= run.x[i - 1]);
  if (sorted) return { x: run.x, y: run.y };  // the usual case: no copy
  const order = Array.from(run.x, (_, i) => i).filter((i) => finite(run.x[i])).sort((a, b) => run.x[a] - run.x[b]);
  return { x: order.map((i) => run.x[i]), y: order.map((i) => run.y[i]) };
}

// One run's (sorted) value at each of `xs` (sorted), NaN where it has none: its own point where it
// has one, else a linear interpolation between its neighbours when they are at most 1.5 of
// its usual spacing apart (a hole in its logging stays a hole); none outside its range or
// beside a NaN. Typed arrays: the per-x loops below stay on unboxed doubles.
function onGrid({ x, y }, xs) {
  const tol = 1.5 * medianStep(x);
  const out = new Float64Array(xs.length).fill(NaN);
  let j = 0;
  for (let k = 0; k < xs.length; k++) {
    const v = xs[k];
    while (j < x.length && x[j] < v) j++;
    if (j < x.length && x[j] === v) { if (finite(y[j])) out[k] = y[j]; continue; }
    if (j === 0 || j >= x.length) continue;
    const x0 = x[j - 1], x1 = x[j], y0 = y[j - 1], y1 = y[j];
    if (x1 - x0 <= tol && finite(y0) && finite(y1)) out[k] = y0 + ((y1 - y0) * (v - x0)) / (x1 - x0);
  }
  return out;
}

// Two sorted arrays merged, each value once.
function mergeSorted(a, b) {
  const out = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    const v = j >= b.length || (i < a.length && a[i] <= b[j]) ? a[i++] : b[j++];
    if (!out.length || out[out.length - 1] !== v) out.push(v);
  }
  return out;
}

// The union of the runs' x values, sorted: pairwise merges of the runs' own sorted x (runs
// mostly share their grid, so this is near-linear; sorting all values is several times slower).
function unionX(runs) {
  let level = runs.map((r) => r.x);
  if (!level.length) return [];
  if (level.length === 1) return mergeSorted(level[0], []);
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? mergeSorted(level[i], level[i + 1]) : level[i]);
    level = next;
  }
  return level[0];
}

/** Mean and spread over runs [{x, y}] at every x any of them has: {x, mean, std, min, max,
 * n}, each an array over x (null where no run has a value). std is the population standard
 * deviation (numpy's default, ddof=0); NaN and missing values are left out, not zeros. */
export function aggregate(list) {
  const runs = list.map(sortedRun);
  const xs = unionX(runs);
  const len = xs.length;
  const cols = runs.map((r) => onGrid(r, xs));
  const sum = new Float64Array(len), cnt = new Float64Array(len), ss = new Float64Array(len);
  const lo = new Float64Array(len).fill(Infinity), hi = new Float64Array(len).fill(-Infinity);
  for (const col of cols) {
    for (let k = 0; k < len; k++) {
      const v = col[k];
      if (v !== v) continue;  // NaN: no value here
      sum[k] += v; cnt[k] += 1;
      if (v < lo[k]) lo[k] = v;
      if (v > hi[k]) hi[k] = v;
    }
  }
  const m = new Float64Array(len);
  for (let k = 0; k < len; k++) m[k] = cnt[k] ? sum[k] / cnt[k] : NaN;
  for (const col of cols) {
    for (let k = 0; k < len; k++) { const v = col[k]; if (v === v) ss[k] += (v - m[k]) ** 2; }
  }
  const out = (f) => Array.from({ length: len }, (_, k) => (cnt[k] ? f(k) : null));
  return { x: xs, mean: out((k) => m[k]), std: out((k) => Math.sqrt(ss[k] / cnt[k])),
    min: out((k) => lo[k]), max: out((k) => hi[k]), n: Array.from(cnt) };
}

/** The band's edges for `band` ("std": mean ± std, "minmax": min to max). */
export function bandEdges(agg, band) {
  if (band === "minmax") return { lo: agg.min, hi: agg.max };
  return { lo: agg.mean.map((m, i) => (m === null ? null : m - agg.std[i])),
    hi: agg.mean.map((m, i) => (m === null ? null : m + agg.std[i])) };
}
