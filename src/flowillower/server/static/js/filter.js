// The filter engine of flowillower.queries.filters, ported for static exports (no
// server to ask). Same three forms and the same name lookup rules:
//   fitlog:      ${'hyper-lr':'<0.3', 'hyper-lr':[0.1,0.3], 'x':'0.1<&&<0.3', 'and_filters':0}$
//   expression:  lr < 0.3 and status == "finished"
//   plain text:  every word appears in the run's id, name, tags, notes or args

const MISSING = Symbol("missing");
const FIELDS = new Set(["id", "name", "project", "status", "created", "ended", "duration", "tags",
  "notes", "host", "hidden", "git_branch", "git_head", "snapshot"]);
const ALIASES = { branch: "git_branch", head: "git_head", run: "id", run_id: "id" };
const STATUS = { finished: "success", done: "success", crashed: "failed" };
const STATS = new Set(["min", "max", "last", "count"]);

export class FilterError extends Error {}

export function lookup(row, name) {
  name = ALIASES[name] || name;
  if (FIELDS.has(name) && name in row) return row[name];
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

class Parser {
  constructor(tokens) { this.t = tokens; this.i = 0; }
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
    if (this.peek("name")) { const n = this.t[this.i++].v; return (r) => lookup(r, n); }
    if (this.peek("lit") || this.peek("[")) { const v = this.literal(); return () => v; }
    throw new FilterError("unexpected end of filter");
  }
}

const truth = (v) => v !== MISSING && Boolean(v);
function contains(container, item) {
  if (container === MISSING || item === MISSING) return false;
  if (typeof container === "string") return container.includes(String(item));
  if (Array.isArray(container)) return container.some((c) => compare("==", item, c));
  return false;
}

function fitlogCondition(col, spec) {
  if (Array.isArray(spec)) { const parts = spec.map((s) => fitlogCondition(col, s)); return (r) => parts.some((p) => p(r)); }
  if (typeof spec !== "string") return (r) => compare("==", lookup(r, col), spec);
  if (spec.includes("&&")) { const parts = spec.split("&&").map((s) => fitlogCondition(col, s)); return (r) => parts.every((p) => p(r)); }
  const m = /^\s*(<=|>=|!=|==|<|>|=)?\s*([^<>=!]*?)\s*(<=|>=|!=|==|<|>|=)?\s*$/.exec(spec);
  if (!m || (m[1] && m[3])) throw new FilterError(`cannot read condition '${spec}' for '${col}'; write e.g. '<0.3', '0.1<&&<0.3' or '!=0.4'`);
  let value = m[2];
  if (value !== "" && !Number.isNaN(Number(value))) value = Number(value);
  else if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
  const flip = { "<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!=", "==": "==", "=": "=" };
  const op = m[1] || (m[3] ? flip[m[3]] : "==");
  return (r) => compare(op, lookup(r, col), value);
}

export function parseFilter(text) {
  const s = (text || "").trim();
  if (!s) return () => true;
  if (s.startsWith("${") && s.endsWith("}$")) {
    const p = new Parser(tokenize(s.slice(1, -1)));
    const d = p.literal();
    if (!d || !d.pairs) throw new FilterError("a fitlog filter is a dict between ${ and }$");
    let and = true;
    const conds = [];
    for (const [k, v] of d.pairs) {
      if (k === "and_filters") { and = Boolean(v); continue; }
      conds.push(fitlogCondition(String(k), v));
    }
    if (!conds.length) return () => true;
    return and ? (r) => conds.every((c) => c(r)) : (r) => conds.some((c) => c(r));
  }
  if (/[<>=!]|\b(and|or|not|in)\b/.test(s)) {
    const p = new Parser(tokenize(s));
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
