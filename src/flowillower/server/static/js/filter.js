// The filter engine of flowillower.queries.filters, ported for static exports (no
// server to ask). Same three forms and the same name lookup rules:
//   fitlog:      ${'hyper-lr':'<0.3', 'hyper-lr':[0.1,0.3], 'x':'0.1<&&<0.3', 'and_filters':0}$
//   expression:  lr < 0.3 and status == "finished"
//   plain text:  every word appears in the run's id, name, tags, notes or args
// `created` / `ended` also compare with dates written as text (when.js: local time unless
// a zone is given), as the Python engine's do.
import { When, asTime, parseTime } from "./when.js";

const MISSING = Symbol("missing");
const FIELDS = new Set(["id", "name", "project", "status", "created", "ended", "duration", "tags",
  "notes", "host", "author", "origin", "hidden", "git_branch", "git_head", "snapshot"]);
const ALIASES = { branch: "git_branch", head: "git_head", run: "id", run_id: "id" };
const STATUS = { finished: "success", done: "success", crashed: "failed" };
const STATS = new Set(["min", "max", "last", "count"]);
const TIME_FIELDS = new Set(["created", "ended"]);

export class FilterError extends Error {}

export function lookup(row, name) {
  name = ALIASES[name] || name;
  if (FIELDS.has(name) && name in row) return TIME_FIELDS.has(name) ? asTime(row[name]) : row[name];
  const args = row.args || {}, metrics = row.metrics || {};
  for (const p of ["hyper-", "hyper.", "args.", "arg.", "config."]) {
    if (name.startsWith(p)) { const k = name.slice(p.length); return k in args ? args[k] : MISSING; }
  }
  for (const p of ["metric-", "metric.", "metrics.", "loss-"]) {
    if (name.startsWith(p)) {
      const rest = name.slice(p.length);
      for (const c of [rest, rest.replaceAll("-", "/"), rest.replaceAll("-", ".")]) if (c in metrics) return metrics[c].last;
      return MISSING;
    }
  }
  if (name in args) return args[name];
  if (name in metrics) return metrics[name].last;
  const dot = name.lastIndexOf(".");
  if (dot > 0) {
    const base = name.slice(0, dot), stat = name.slice(dot + 1);
    if (STATS.has(stat) && base in metrics) return stat in metrics[base] ? metrics[base][stat] : MISSING;
  }
  return MISSING;
}

const isNum = (v) => typeof v === "number" || typeof v === "boolean";
const OPS = {
  "<": (a, b) => a < b, "<=": (a, b) => a <= b, ">": (a, b) => a > b, ">=": (a, b) => a >= b,
  "==": (a, b) => a === b, "=": (a, b) => a === b, "!=": (a, b) => a !== b,
};

function coerce(a, b) {
  // A run's time against text: a date (else no number reading of the text, as in Python).
  if (a instanceof When) return typeof b === "string" ? [a.t, parseTime(b) ?? b] : coerce(a.t, b);
  if (b instanceof When) return typeof a === "string" ? [parseTime(a) ?? a, b.t] : coerce(a, b.t);
  if (typeof a === "string" && typeof b === "number" && a.trim() !== "" && !Number.isNaN(Number(a))) return [Number(a), b];
  if (typeof b === "string" && typeof a === "number" && b.trim() !== "" && !Number.isNaN(Number(b))) return [a, Number(b)];
  return [a, b];
}

export function compare(op, a, b) {
  if (a === MISSING || b === MISSING) return op === "!=";
  [a, b] = coerce(a, b);
  if (typeof a === "string" && typeof b === "string" && (op === "==" || op === "=" || op === "!=")) {
    a = STATUS[a] || a; b = STATUS[b] || b;
  }
  if (isNum(a) && isNum(b)) return OPS[op](Number(a), Number(b));
  if (typeof a === "string" && typeof b === "string") return OPS[op](a, b);
  if (op === "==" || op === "=") return JSON.stringify(a) === JSON.stringify(b);
  if (op === "!=") return JSON.stringify(a) !== JSON.stringify(b);
  return false;  // ordering across types: Python raises TypeError -> no match
}

// -- a tokenizer for Python-ish literals and expressions ------------------------------
function tokenize(src) {
  const out = [];
  const re = /\s*(?:(`[^`]+`)|('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(-?\d+\.?\d*(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)|(<=|>=|==|!=|<|>|=)|([A-Za-z_][\w.]*(?:-[A-Za-z_][\w.]*)*)|([()[\]{},:]))/y;
  let m, pos = 0;
  src = src.trim();
  while (pos < src.length) {
    re.lastIndex = pos;
    m = re.exec(src);
    if (!m) throw new FilterError(`cannot parse filter near ${JSON.stringify(src.slice(pos, pos + 20))}`);
    pos = re.lastIndex;
    if (m[1]) out.push({ t: "name", v: m[1].slice(1, -1) });
    else if (m[2]) out.push({ t: "lit", v: m[2].slice(1, -1).replace(/\\(.)/g, "$1") });
    else if (m[3]) out.push({ t: "lit", v: Number(m[3]) });
    else if (m[4]) out.push({ t: "op", v: m[4] });
    else if (m[5]) {
      const w = m[5];
      if (["and", "or", "not", "in"].includes(w)) out.push({ t: w });
      else if (w === "True" || w === "False") out.push({ t: "lit", v: w === "True" });
      else if (w === "None") out.push({ t: "lit", v: null });
      else out.push({ t: "name", v: w });
    } else if (m[6]) out.push({ t: m[6] });
    while (pos < src.length && /\s/.test(src[pos])) pos++;
  }
  return out;
}

const plain = (name) => (r) => lookup(r, name);

class Parser {
  constructor(tokens, getter = plain) { this.t = tokens; this.i = 0; this.getter = getter; }
  peek(type) { return this.t[this.i] && this.t[this.i].t === type; }
  take(type) {
    if (!this.peek(type)) throw new FilterError(`expected ${type} in filter`);
    return this.t[this.i++];
  }
  literal() {  // Python literal: number, string, list, dict (dict -> list of pairs)
    if (this.peek("lit")) return this.t[this.i++].v;
    if (this.peek("[")) {
      this.i++; const items = [];
      while (!this.peek("]")) { items.push(this.literal()); if (!this.peek("]")) this.take(","); }
      this.i++; return items;
    }
    if (this.peek("{")) {
      this.i++; const pairs = [];
      while (!this.peek("}")) {
        const k = this.literal(); this.take(":"); pairs.push([k, this.literal()]);
        if (!this.peek("}")) this.take(",");
      }
      this.i++; return { pairs };
    }
    throw new FilterError("only literal keys and values are allowed in a fitlog filter");
  }
  // expression grammar: or -> and -> not -> comparison -> atom
  or() { let l = this.and(); while (this.peek("or")) { this.i++; const a = l, b = this.and(); l = (r) => truth(a(r)) || truth(b(r)); } return l; }
  and() { let l = this.not(); while (this.peek("and")) { this.i++; const a = l, b = this.not(); l = (r) => truth(a(r)) && truth(b(r)); } return l; }
  not() { if (this.peek("not") && !(this.t[this.i + 1]?.t === "in")) { this.i++; const a = this.not(); return (r) => !truth(a(r)); } return this.cmp(); }
  cmp() {
    const first = this.atom();
    const steps = [];
    for (;;) {
      if (this.peek("op")) { steps.push([this.t[this.i++].v, this.atom()]); continue; }
      if (this.peek("in")) { this.i++; steps.push(["in", this.atom()]); continue; }
      if (this.peek("not") && this.t[this.i + 1]?.t === "in") { this.i += 2; steps.push(["not in", this.atom()]); continue; }
      break;
    }
    if (!steps.length) return first;
    return (r) => {
      let cur = first(r);
      for (const [op, fn] of steps) {
        const right = fn(r);
        let ok;
        if (op === "in" || op === "not in") { ok = contains(right, cur); if (op === "not in") ok = !ok; }
        else ok = compare(op, cur, right);
        if (!ok) return false;
        cur = right;
      }
      return true;
    };
  }
  atom() {
    if (this.peek("(")) { this.i++; const e = this.or(); this.take(")"); return e; }
    if (this.peek("name")) return this.getter(this.t[this.i++].v);
    if (this.peek("lit") || this.peek("[")) { const v = this.literal(); return () => v; }
    throw new FilterError("unexpected end of filter");
  }
}

const truth = (v) => v !== MISSING && Boolean(v instanceof When ? v.t : v);
function contains(container, item) {
  if (container === MISSING || item === MISSING) return false;
  if (typeof container === "string") return container.includes(String(item));
  if (Array.isArray(container)) return container.some((c) => compare("==", item, c));
  return false;
}

function fitlogCondition(col, spec, getter = plain) {
  const valueOf = getter(col);
  if (Array.isArray(spec)) { const parts = spec.map((s) => fitlogCondition(col, s, getter)); return (r) => parts.some((p) => p(r)); }
  if (typeof spec !== "string") return (r) => compare("==", valueOf(r), spec);
  if (spec.includes("&&")) { const parts = spec.split("&&").map((s) => fitlogCondition(col, s, getter)); return (r) => parts.every((p) => p(r)); }
  const m = /^\s*(<=|>=|!=|==|<|>|=)?\s*([^<>=!]*?)\s*(<=|>=|!=|==|<|>|=)?\s*$/.exec(spec);
  if (!m || (m[1] && m[3])) throw new FilterError(`cannot read condition '${spec}' for '${col}'; write e.g. '<0.3', '0.1<&&<0.3' or '!=0.4'`);
  let value = m[2];
  if (value !== "" && !Number.isNaN(Number(value))) value = Number(value);
  else if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
  const flip = { "<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!=", "==": "==", "=": "=" };
  const op = m[1] || (m[3] ? flip[m[3]] : "==");
  return (r) => compare(op, valueOf(r), value);
}

const isFitlog = (s) => s.startsWith("${") && s.endsWith("}$");
const EXPRESSION = /[<>=!]|\b(and|or|not|in)\b/;

export function parseFilter(text, getter = plain) {
  const s = (text || "").trim();
  if (!s) return () => true;
  if (isFitlog(s)) {
    const p = new Parser(tokenize(s.slice(1, -1)));
    const d = p.literal();
    if (!d || !d.pairs) throw new FilterError("a fitlog filter is a dict between ${ and }$");
    let and = true;
    const conds = [];
    for (const [k, v] of d.pairs) {
      if (k === "and_filters") { and = Boolean(v); continue; }
      conds.push(fitlogCondition(String(k), v, getter));
    }
    if (!conds.length) return () => true;
    return and ? (r) => conds.every((c) => c(r)) : (r) => conds.some((c) => c(r));
  }
  if (EXPRESSION.test(s)) {
    const p = new Parser(tokenize(s), getter);
    const fn = p.or();
    if (p.i < p.t.length) throw new FilterError(`cannot parse filter '${s}': unexpected ${p.t[p.i].t}`);
    return (r) => truth(fn(r));
  }
  const words = s.toLowerCase().split(/\s+/);
  return (r) => {
    const hay = [r.id, r.name, r.notes, r.project, r.status, ...(r.tags || []),
      ...Object.entries(r.args || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)]
      .map((x) => String(x ?? "")).join(" ").toLowerCase();
    return words.every((w) => hay.includes(w));
  };
}

// -- names resolved against the runs (flowillower.queries.names, ported) --------------
// A bare name means one thing in every run; an unknown or ambiguous one is an error with
// the spellings to use ("did you mean", `args.lr` / `metrics.lr`).
const ARG_P = ["hyper-", "hyper.", "args.", "arg.", "config."];
const METRIC_P = ["metric-", "metric.", "metrics.", "loss-"];
const TAG_P = ["tag.", "tags.", "tag-"];
const ALL_STATS = ["last", "min", "max", "count"];
const endsLike = (k, name) => k.endsWith(`.${name}`) || k.endsWith(`/${name}`);

function abbreviates(name, key) {  // `lr` abbreviates `training.learning_rate`
  const words = key.split(".").pop().split(/[_-]/).filter(Boolean);
  return words.length > 1 && name.length > 1 && name === words.map((w) => w[0]).join("");
}

export function vocabulary(rows) {
  const v = { args: new Set(), metrics: new Set(), tags: new Set() };
  for (const r of rows) {
    Object.keys(r.args || {}).forEach((k) => v.args.add(k));
    Object.keys(r.metrics || {}).forEach((k) => v.metrics.add(k));
    (r.tags || []).forEach((t) => v.tags.add(String(t)));
  }
  return v;
}

export function spelling(u) {
  if (u.kind === "arg") return `args.${u.key}`;
  if (u.kind === "metric") return `metrics.${u.key}${u.stat === "last" ? "" : `.${u.stat}`}`;
  if (u.kind === "tag") return `tag.${u.key}`;
  return u.key;
}

export function describe(u) {
  const q = u.choices.map((c) => `\`${c}\``);
  const quoted = q.length > 1 ? `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}` : q.join("");
  if (u.kind === "unknown") return `unknown name \`${u.name}\`${q.length ? `; did you mean ${quoted}?` : ""}`;
  if (u.kind === "ambiguous") return `ambiguous name \`${u.name}\`: write ${quoted}`;
  const what = { field: "run field", arg: "arg", tag: "tag (true when the run has it)",
    metric: `metric, ${u.stat} value` }[u.kind];
  return `\`${u.name}\` → \`${spelling(u)}\` (${what})`;
}

const use = (name, kind, key, stat = "last", choices = []) => ({ name, kind, key, stat, choices });
const isOk = (u) => u.kind !== "unknown" && u.kind !== "ambiguous";

function metricUse(name, rest, v) {
  for (const c of [rest, rest.replaceAll("-", "/"), rest.replaceAll("-", ".")]) if (v.metrics.has(c)) return use(name, "metric", c);
  const dot = rest.lastIndexOf(".");
  if (dot > 0 && ALL_STATS.includes(rest.slice(dot + 1)) && v.metrics.has(rest.slice(0, dot))) {
    return use(name, "metric", rest.slice(0, dot), rest.slice(dot + 1));
  }
  return null;
}

function closeness(a, b) {  // 2 * longest common subsequence / total length, as difflib's ratio
  const d = new Array(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let prev = 0;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j];
      d[j] = a[i - 1] === b[j - 1] ? prev + 1 : Math.max(d[j], d[j - 1]);
      prev = cur;
    }
  }
  return (2 * d[b.length]) / Math.max(a.length + b.length, 1);
}

function suggest(name, v, pool = "all") {
  if (name.length > 200) return [];  // no name is that long; don't spend edit distances on it
  const spell = new Map();
  const add = (short, full) => { if (!spell.has(short)) spell.set(short, full); };
  if (pool !== "metrics") [...v.args].sort().forEach((k) => { add(k, `args.${k}`); add(k.split(".").pop(), `args.${k}`); });
  if (pool !== "args") [...v.metrics].sort().forEach((k) => { add(k, `metrics.${k}`); add(k.replaceAll("/", ".").split(".").pop(), `metrics.${k}`); });
  if (pool === "all") [...FIELDS].sort().forEach((f) => add(f, f));
  const low = name.toLowerCase();
  const out = [...spell].filter(([s]) => low && s.toLowerCase().includes(low)).map(([, f]) => f);
  [...spell].map(([s, f]) => [closeness(name, s), f]).filter(([c]) => c >= 0.6)
    .sort((a, b) => b[0] - a[0]).forEach(([, f]) => out.push(f));
  return [...new Set(out)].slice(0, 5);
}

export function resolveName(name, v) {
  const bare = ALIASES[name] || name;
  if (FIELDS.has(bare)) return use(name, "field", bare);
  const argP = ARG_P.find((p) => name.startsWith(p));
  if (argP) {
    const rest = name.slice(argP.length);
    if (v.args.has(rest)) return use(name, "arg", rest);
    const found = [...v.args].filter((k) => endsLike(k, rest)).sort();
    if (found.length === 1) return use(name, "arg", found[0]);
    if (found.length) return use(name, "ambiguous", rest, "last", found.map((k) => `args.${k}`));
    return use(name, "unknown", rest, "last", suggest(rest, v, "args"));
  }
  const metricP = METRIC_P.find((p) => name.startsWith(p));
  if (metricP) {
    const rest = name.slice(metricP.length);
    return metricUse(name, rest, v) || use(name, "unknown", rest, "last", suggest(rest, v, "metrics"));
  }
  const tagP = TAG_P.find((p) => name.startsWith(p) && name.length > p.length);
  if (tagP) return use(name, "tag", name.slice(tagP.length));
  const inArgs = v.args.has(name), inMetrics = v.metrics.has(name);
  if (inArgs && inMetrics) return use(name, "ambiguous", name, "last", [`args.${name}`, `metrics.${name}`]);
  if (inArgs) return use(name, "arg", name);
  const likeArgs = [...v.args].sort().filter((k) => endsLike(k, name) || abbreviates(name, k)).map((k) => `args.${k}`);
  const metric = metricUse(name, name, v);
  if (metric) return likeArgs.length ? use(name, "ambiguous", name, "last", [spelling(metric), ...likeArgs]) : metric;
  const found = [...likeArgs, ...[...v.metrics].filter((k) => endsLike(k, name)).sort().map((k) => `metrics.${k}`)];
  if (found.length === 1) {
    const [kind, ...key] = found[0].split(".");
    return use(name, kind === "args" ? "arg" : "metric", key.join("."));
  }
  if (found.length) return use(name, "ambiguous", name, "last", found);
  if (v.tags.has(name)) return use(name, "tag", name);
  return use(name, "unknown", name, "last", suggest(name, v));
}

function getterOf(u) {
  const { key, stat } = u;
  if (u.kind === "field" && TIME_FIELDS.has(key)) return (r) => (key in r ? asTime(r[key]) : MISSING);
  if (u.kind === "field") return (r) => (key in r ? r[key] : MISSING);
  if (u.kind === "arg") return (r) => (key in (r.args || {}) ? r.args[key] : MISSING);
  if (u.kind === "tag") return (r) => (r.tags || []).map(String).includes(key);
  return (r) => { const m = (r.metrics || {})[key]; return m && stat in m ? m[stat] : MISSING; };
}

// `{ pred, names }`: filter `text` with each name resolved against `rows`; throws
// FilterError naming the unknown or ambiguous names.
export function compileFilter(text, rows) {
  const s = (text || "").trim();
  if (!s || !(isFitlog(s) || EXPRESSION.test(s))) return { pred: parseFilter(s), names: [] };
  const v = vocabulary(rows), uses = new Map();
  const pred = parseFilter(s, (name) => {
    if (!uses.has(name)) uses.set(name, resolveName(name, v));
    const u = uses.get(name);
    return isOk(u) ? getterOf(u) : () => MISSING;
  });
  const bad = [...uses.values()].filter((u) => !isOk(u));
  if (bad.length) throw new FilterError(bad.map(describe).join("; "));
  return { pred, names: [...uses.values()].map((u) => ({ ...u, as: spelling(u), message: describe(u) })) };
}

// A filter that keeps some but not all of `rows`, from an arg that varies; null if none.
export function exampleFilter(rows) {
  const v = vocabulary(rows), num = new Map(), txt = new Map();
  const put = (m, k, x) => { if (!m.has(k)) m.set(k, new Set()); m.get(k).add(x); };
  for (const r of rows) {
    for (const [k, x] of Object.entries(r.args || {})) {
      if (typeof x === "number") put(num, k, x);
      else if (typeof x === "string" && x.length < 40) put(txt, k, x);
    }
  }
  const short = (key) => {
    const parts = key.split(".");
    for (let i = parts.length - 1; i >= 0; i--) {
      const n = parts.slice(i).join("."), u = resolveName(n, v);
      if (u.kind === "arg" && u.key === key && /^[A-Za-z_][\w.]*$/.test(n)) return n;
    }
    return `\`args.${key}\``;
  };
  const byKey = (m) => [...m].filter(([, s]) => s.size > 1).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const candidates = [
    ...byKey(num).map(([k, s]) => `${short(k)} <= ${Math.min(...s)}`),
    ...byKey(txt).map(([k, s]) => `${short(k)} == '${[...s].sort()[0].replace(/['\\]/g, "\\$&")}'`)];
  for (const c of candidates) {
    let pred;
    try { pred = compileFilter(c, rows).pred; } catch { continue; }
    const kept = rows.filter(pred).length;
    if (kept > 0 && kept < rows.length) return c;
  }
  return null;
}
