// The API, answered from a static export's data files (see server/export.py). Mirrors
// the server's table logic (store_view.py) and series shapes (series.py).
import { codeDiff, codeFile, codeSearch, codeTree } from "./codelocal.js";
import { FilterError, compileFilter, exampleFilter } from "./filter.js";

const cache = new Map();
async function json(path) {
  if (!cache.has(path)) {
    cache.set(path, fetch(path).then(async (r) => {
      if (!r.ok) throw Object.assign(new Error(`${path}: ${r.status} ${r.statusText}`), { status: r.status });
      return r.json();
    }));
  }
  try { return await cache.get(path); } catch (e) { cache.delete(path); throw e; }
}

const index = () => json("data/index.json");
const fail = (status, message) => { throw Object.assign(new Error(message), { status }); };

const RUN_FIELDS = ["name", "status", "created", "duration", "tags", "notes", "id", "author", "host", "origin", "git_branch", "project"];
const DEFAULT_FIELDS = new Set(["status", "name", "created", "duration", "tags", "notes"]);
// Who made a run and where (as columns.py's `_telling_fields`): shown by default once they
// tell the runs apart (two authors or hosts; any run with an origin, i.e. pulled).
function telling(rows) {
  const out = new Set(["author", "host"].filter((f) => new Set(rows.map((r) => r[f] ?? null)).size > 1));
  if (rows.some((r) => r.origin)) out.add("origin");
  return out;
}
const WATCH = /^(act|grad|param)\//;
const LOWER = /loss|err|ppl|perplex|mse|mae|nll|wer|cer|latency|time|regret|dist|div/i;
const chartable = (s) => s.kind === "float" || s.kind === "int";

function cell(row, key) {
  if (RUN_FIELDS.includes(key) || key === "hidden") return row[key];
  const i = key.indexOf(":");
  const kind = key.slice(0, i), name = key.slice(i + 1);
  if (kind === "arg") return row.args[name];
  const s = row.metrics[name];
  if (!s) return undefined;
  if (kind === "best") return LOWER.test(name) ? s.min : s.max;
  return s[kind];
}

function sortKey(v) {
  if (v === null || v === undefined) return [3, 0, ""];
  if (typeof v === "number" || typeof v === "boolean") return Number.isNaN(Number(v)) ? [2, 0, ""] : [0, Number(v), ""];
  if (typeof v === "string") return [1, 0, v.toLowerCase()];
  return [2, 0, JSON.stringify(v)];
}
function cmpKeys(a, b) {
  for (let i = 0; i < 3; i++) { if (a[i] < b[i]) return -1; if (a[i] > b[i]) return 1; }
  return 0;
}
const hashable = (v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : v);

// Rows matching `q`, and how each of its names resolved (as the server's filter does).
async function matched(q, hidden) {
  const { runs } = await index();
  const rows = hidden ? runs : runs.filter((r) => !r.hidden);
  if (!q) return { rows, names: [] };
  let compiled;
  try { compiled = compileFilter(q, rows); } catch (e) {
    if (e instanceof FilterError) fail(400, `bad filter: ${e.message}`);
    throw e;
  }
  return { rows: rows.filter(compiled.pred), names: compiled.names };
}
async function filtered(q, hidden) { return (await matched(q, hidden)).rows; }

function columns(rows) {
  const argVals = new Map(), argCount = new Map(), mLast = new Map(), mCount = new Map(), replayed = new Set();
  for (const r of rows) {
    for (const [k, v] of Object.entries(r.args)) {
      if (!argVals.has(k)) argVals.set(k, new Set());
      const s = argVals.get(k); if (s.size < 2) s.add(hashable(v));
      argCount.set(k, (argCount.get(k) || 0) + 1);
    }
    for (const [k, st] of Object.entries(r.metrics)) {
      if (!chartable(st)) continue;
      if (!mLast.has(k)) mLast.set(k, new Set());
      const s = mLast.get(k); if (s.size < 2) s.add(hashable(st.last));
      mCount.set(k, (mCount.get(k) || 0) + 1);
      if (st.replayed) replayed.add(k);
    }
  }
  const n = rows.length;
  const who = telling(rows);
  const cols = RUN_FIELDS.map((f) => ({ key: f, label: f.replace("git_", ""), group: "run", constant: false, visible: DEFAULT_FIELDS.has(f) || who.has(f) }));
  [...argVals.keys()].sort().forEach((k) => {
    const constant = n > 1 && argVals.get(k).size === 1 && argCount.get(k) === n;
    const col = { key: `arg:${k}`, label: k, group: "args", constant, count: argCount.get(k), visible: true };
    if (constant) col.value = rows.find((r) => k in r.args).args[k];
    cols.push(col);
  });
  let shown = 0;
  [...mCount.keys()].sort((a, b) => (WATCH.test(a) - WATCH.test(b)) || (mCount.get(b) - mCount.get(a)) || (a < b ? -1 : 1)).forEach((k) => {
    const visible = !WATCH.test(k) && shown < 12;
    if (visible) shown += 1;
    const constant = n > 1 && mLast.get(k).size === 1 && mCount.get(k) === n;
    for (const stat of ["last", "best"]) {
      const col = { key: `${stat}:${k}`, label: `${k} (${stat})`, group: "metrics", metric: k, stat,
        constant: constant && stat === "last", visible, count: mCount.get(k), replayed: replayed.has(k),
        goal: LOWER.test(k) ? "min" : "max" };
      if (col.constant) col.value = rows.find((r) => k in r.metrics).metrics[k].last;  // the folded line's value
      cols.push(col);
    }
  });
  return cols;
}

async function table(p) {
  const q = (p.q || "").trim(), hidden = p.hidden === true || p.hidden === "true";
  const { rows, names } = await matched(q, hidden);
  const cols = columns(rows);
  const sort = p.sort || "created", desc = !(p.desc === false || p.desc === "false");
  const group = p.group || null;
  let ordered = rows.slice().sort((a, b) => cmpKeys(sortKey(cell(a, sort)), sortKey(cell(b, sort))));
  if (desc) {
    ordered.reverse();
    ordered = [...ordered.filter((r) => cell(r, sort) != null), ...ordered.filter((r) => cell(r, sort) == null)];
  }
  if (group) ordered = ordered.map((r, i) => [r, i]).sort((a, b) => cmpKeys(sortKey(cell(a[0], group)), sortKey(cell(b[0], group))) || a[1] - b[1]).map(([r]) => r);
  const offset = Number(p.offset || 0), limit = Number(p.limit || 100);
  const wanted = p.col ? [].concat(p.col) : cols.filter((c) => c.visible && !c.constant && c.group !== "run").map((c) => c.key);
  const { runs } = await index();
  const out = ordered.slice(offset, offset + limit).map((r) => ({
    id: r.id, name: r.name, status: r.status, created: r.created, duration: r.duration, tags: r.tags,
    notes: r.notes, hidden: r.hidden, host: r.host, author: r.author, origin: r.origin, git_branch: r.git_branch, project: r.project,
    cells: Object.fromEntries(wanted.map((k) => [k, cell(r, k)])),
    replayed: Object.entries(r.metrics).filter(([, s]) => s.replayed).map(([k]) => k).sort(),
    group: group ? cell(r, group) : undefined,
  }));
  const example = exampleFilter(hidden ? runs : runs.filter((r) => !r.hidden));
  return { generation: 0, total: runs.length, matched: ordered.length, offset, limit, sort, desc, group, columns: cols, rows: out,
           filter: { names, example } };
}

async function resolve(ref) {
  const { runs } = await index();
  const exact = runs.find((r) => r.id === ref);
  if (exact) return exact;
  const matches = runs.filter((r) => r.id.startsWith(ref) || r.id.endsWith(`-${ref}`) || r.name === ref);
  if (matches.length === 1) return matches[0];
  fail(404, matches.length ? `'${ref}' matches ${matches.length} runs; give more of the id` : `no run matches '${ref}'`);
}

// x positions for a static series document (see export.py `_series_doc`).
function xFor(doc, s, axis, other) {
  if (axis === "step") return s.step;
  if (axis === "time") return s.t.map((t) => (t === null ? null : t + (doc.created || 0)));
  if (axis === "rel") return s.t;
  if (axis.startsWith("metric:")) {
    if (!other) return s.step.map(() => null);
    const at = new Map(other.step.map((st, i) => [st, other.y[i]]));
    return s.step.map((st) => (at.has(st) ? at.get(st) : null));
  }
  const changes = doc.loops?.[axis];
  if (!changes) fail(400, `unknown x axis '${axis}'`);
  return s.step.map((st) => {
    let lo = 0, hi = changes.length - 1;
    if (st < changes[0][0]) return null;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (changes[mid][0] <= st) lo = mid; else hi = mid - 1; }
    const [s0, c] = changes[lo];
    const s1 = lo + 1 < changes.length ? changes[lo + 1][0] : Math.max(st + 1, s0 + 1);
    return c + (st - s0) / Math.max(1, s1 - s0);
  });
}

async function series(p) {
  const ids = [].concat(p.run || []);
  const key = p.key, axis = p.x || "step";
  const x0 = p.x0 !== undefined ? Number(p.x0) : null, x1 = p.x1 !== undefined ? Number(p.x1) : null;
  const runs = [];
  for (const id of ids) {
    const row = await resolve(id);
    const doc = await json(`data/runs/${encodeURIComponent(row.id)}/series.json`);
    const s = doc.series[key];
    if (!s) { runs.push({ run: row.id, missing: true, count: 0, cursor: 0, replay: `flowillower replay ${key} --runs ${row.id}` }); continue; }
    const other = axis.startsWith("metric:") ? doc.series[axis.slice(7)] : null;
    const xs = xFor(doc, s, axis, other);
    const keep = [];
    xs.forEach((x, i) => { if (x !== null && (x0 === null || x >= x0) && (x1 === null || x <= x1)) keep.push(i); });
    const order = axis.startsWith("metric:") ? keep.slice().sort((a, b) => xs[a] - xs[b]) : keep;
    const rep = new Set(s.replayed || []);
    runs.push({ run: row.id, count: s.count, cursor: s.count, last: s.last, min: s.min, max: s.max,
      x: order.map((i) => xs[i]), y: order.map((i) => s.y[i]),
      replayed: order.map((i, j) => (rep.has(i) ? j : -1)).filter((j) => j >= 0) });
  }
  return { key, x_axis: axis, points: Number(p.points || 0), x: null, sampled: true, runs };
}

async function keys(p) {
  const ids = [].concat(p.run || []);
  const counts = new Map(), loops = new Set(), runs = [];
  for (const id of ids) {
    let row;
    try { row = await resolve(id); } catch { continue; }
    runs.push({ id: row.id, name: row.name, status: row.status, created: row.created, loops: row.loops, args: row.args || {}, tags: row.tags || [] });
    (row.loops || []).forEach((l) => loops.add(l));
    for (const [k, s] of Object.entries(row.metrics)) if (chartable(s)) counts.set(k, (counts.get(k) || 0) + 1);
  }
  const metrics = [...counts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([name, n]) => ({ name, runs: n, watch: WATCH.test(name) }));
  return { runs, metrics, loops: [...loops] };
}

async function points(p) {
  const dims = [].concat(p.dim || []);
  const rows = (await filtered((p.q || "").trim(), p.hidden === true || p.hidden === "true")).slice(0, Number(p.limit || 10000));
  return { generation: 0, matched: rows.length, ids: rows.map((r) => r.id), names: rows.map((r) => r.name),
    status: rows.map((r) => r.status), dims: Object.fromEntries(dims.map((k) => [k, rows.map((r) => cell(r, k) ?? null)])) };
}

// The best value of metric columns among the matched runs, one pass (as /api/best).
async function best(p) {
  const rows = await filtered((p.q || "").trim(), p.hidden === true || p.hidden === "true");
  const cols = [...new Set([].concat(p.col || []))], goals = [].concat(p.goal || []);
  const out = {};
  cols.forEach((key, i) => {
    const goal = goals[i] === "min" || goals[i] === "max" ? goals[i] : (LOWER.test(key.slice(key.indexOf(":") + 1)) ? "min" : "max");
    let value = null, run = null, ties = 0;
    for (const r of rows) {
      const v = cell(r, key);
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      if (value === null || (goal === "min" ? v < value : v > value)) { value = v; run = r.id; ties = 1; } else if (v === value) ties += 1;
    }
    out[key] = { value, goal, run, ties };
  });
  return { generation: 0, matched: rows.length, best: out };
}

// Arg differences come from the exported index, as `/api/diff` computes them; the code
// diff from the exported snapshots (codelocal.js).
async function diff(p) {
  const [a, b] = [await resolve(p.a || ""), await resolve(p.b || "")];
  const A = a.args || {}, B = b.args || {};
  const args = [...new Set([...Object.keys(A), ...Object.keys(B)])].sort().flatMap((key) => {
    if (!(key in A)) return [{ key, change: "added", b: B[key] }];
    if (!(key in B)) return [{ key, change: "removed", a: A[key] }];
    return JSON.stringify(A[key]) === JSON.stringify(B[key]) ? [] : [{ key, change: "changed", a: A[key], b: B[key] }];
  });
  return { a: a.id, b: b.id, args, ...(await codeDiff(json, a.id, b.id)) };
}

// Runs with a model graph (the model page's "compare with" list): an index row may say
// (models); otherwise each run's run.json is read, the newest 300 at most.
async function modelRuns() {
  const { runs } = await index();
  const newest = runs.slice().sort((a, b) => (b.created || 0) - (a.created || 0)).slice(0, 300);
  const found = await Promise.all(newest.map(async (r) => {
    const models = r.models || (await json(`data/runs/${encodeURIComponent(r.id)}/run.json`).catch(() => ({}))).models || [];
    return models.length ? { id: r.id, name: r.name, created: r.created, models } : null;
  }));
  return { runs: found.filter(Boolean) };
}

export async function get(path, params) {
  const parts = path.split("/").map(decodeURIComponent);
  if (path === "info") { const { runs, version } = await index(); return { version, runs: runs.length, static: true, auth: "none" }; }
  if (path === "runs") return table(params);
  if (path === "series") return series(params);
  if (path === "keys") return keys(params);
  if (path === "points") return points(params);
  if (path === "best") return best(params);
  if (path === "diff") return diff(params);
  if (path === "views") return json("data/views.json").catch(() => ({ views: [] }));
  if (path === "models") return modelRuns();
  if (parts[0] === "runs" && parts[1]) {
    const row = await resolve(parts[1]);
    const base = `data/runs/${encodeURIComponent(row.id)}`;
    const what = parts[2] || "";
    if (!what) return json(`${base}/run.json`);
    if (what === "media") {
      const m = await json(`${base}/media.json`).catch(() => ({}));
      if (!m[params.key]) fail(404, `run ${row.id} has no media '${params.key}'`);
      return { run: row.id, key: params.key, items: m[params.key] };
    }
    if (what === "hist") {
      const hs = await json(`${base}/hist.json`).catch(() => ({}));
      if (!hs[params.key]) fail(404, `run ${row.id} has no series '${params.key}'`);
      return hs[params.key];
    }
    // The run page's lineage and family cards (server/export_panels.py): only runs with one.
    if (what === "lineage" || what === "family") return json(`${base}/${what}.json`);
    if (what === "model") return json(`${base}/model/${params.name ? `${encodeURIComponent(params.name)}/` : ""}graph.json`);
    if (what === "models") return { run: row.id, models: (await json(`${base}/run.json`)).models };
    if (what === "code" && !parts[3]) return codeTree(json, row.id);
    if (what === "code" && parts[3] === "file") return codeFile(json, row.id, params.path || "");
    if (what === "code" && parts[3] === "search") return codeSearch(json, row.id, params.text || "");
  }
  fail(404, `no data for ${path} in this export`);
}
