// DOM and formatting helpers. Every piece of data goes through textContent or an
// attribute, never innerHTML: run names, notes and args holding HTML stay text.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

export function fmtNum(v, digits = 4) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;  // "NaN", "inf" from the server
  if (typeof v === "boolean") return String(v);
  if (typeof v !== "number") return fmtValue(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 1);
  return String(Number(v.toPrecision(digits)));
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return fmtNum(v);
  if (typeof v === "object") {
    if (v["$media"]) return `<${v["$media"]}>`;
    return JSON.stringify(v);
  }
  return String(v);
}

export function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined || typeof s !== "number") return "";
  if (s < 1) return `${(s * 1000).toFixed(0)}ms`;
  s = Math.round(s);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (hh) return `${hh}h${String(mm).padStart(2, "0")}m`;
  if (mm) return `${mm}m${String(ss).padStart(2, "0")}s`;
  return `${ss}s`;
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

// Colour-blind-safe colours readable on white: Okabe-Ito (minus black and yellow), then
// Paul Tol's "muted" (minus its pale sand and its cyan, too close to Okabe-Ito's sky blue).
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00",
  "#CC6677", "#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499"];
// A run id (string) hashes to the same colour on every page and in any selection order;
// a number picks the palette entry at that index (categories, not runs).
export function color(key) {
  if (typeof key === "number") return PALETTE[((key % PALETTE.length) + PALETTE.length) % PALETTE.length];
  let hash = 0x811c9dc5;  // FNV-1a: cheap, and well spread over short ids
  const text = String(key);
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return PALETTE[(hash >>> 0) % PALETTE.length];
}

export function statusBadge(status) {
  return h("span", { class: `status ${status || ""}`, text: status || "?" });
}

export function copyButton(text) {
  return h("button", { text: "copy", title: "copy to clipboard", onclick: async (e) => {
    try { await navigator.clipboard.writeText(text); e.target.textContent = "copied"; }
    catch { e.target.textContent = "select it"; }
  } });
}

// Vendored libraries are classic scripts, loaded on the first page that needs them.
const scripts = new Map();
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = src;
      el.onload = resolve;
      el.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.append(el);
    }));
  }
  return scripts.get(src);
}
