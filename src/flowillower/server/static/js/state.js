// Small persistent UI state: the run selection, per-table column preferences, and the
// view's settings in the URL hash (#/page?k=v) so that a copied link reproduces a view.

const KEY = "flowillower.selection";
const listeners = new Set();

function load() {
  try { return new Set(JSON.parse(localStorage.getItem(KEY) || "[]")); } catch { return new Set(); }
}

let ids = load();

function save() {
  try { localStorage.setItem(KEY, JSON.stringify([...ids])); } catch { /* private mode */ }
  listeners.forEach((fn) => fn());
}

export const selection = {
  has: (id) => ids.has(id),
  ids: () => [...ids],
  size: () => ids.size,
  set(list) { ids = new Set(list); save(); },
  toggle(id, on) {
    if (on === undefined ? ids.has(id) : !on) ids.delete(id); else ids.add(id);
    save();
  },
  clear() { ids = new Set(); save(); },
  onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); },
};

export function prefs(name, fallback) {
  try {
    const v = localStorage.getItem(`flowillower.${name}`);
    return v === null ? fallback : JSON.parse(v);
  } catch { return fallback; }
}

export function setPrefs(name, value) {
  try { localStorage.setItem(`flowillower.${name}`, JSON.stringify(value)); } catch { /* */ }
}

// -- the URL hash ----------------------------------------------------------------------

function splitHash() {
  const raw = location.hash.replace(/^#/, "");
  const at = raw.indexOf("?");
  return at < 0 ? [raw, ""] : [raw.slice(0, at), raw.slice(at + 1)];
}

/** The current view's settings: the query part of the hash (#/charts?x=time). */
export function params() {
  return new URLSearchParams(splitHash()[1]);
}

/** Write settings into the hash. A value of null, undefined or "" removes the key;
 * arrays are joined with commas and objects written as JSON. replaceState: no reload,
 * no hashchange (the page is not re-rendered) and no history entry per keystroke. */
export function setParams(values) {
  const [path, qs] = splitHash();
  const p = new URLSearchParams(qs);
  for (const [k, v] of Object.entries(values)) {
    if (v === null || v === undefined || v === "") p.delete(k);
    else if (Array.isArray(v)) p.set(k, v.join(","));
    else if (typeof v === "object") p.set(k, JSON.stringify(v));
    else p.set(k, String(v));
  }
  const query = p.toString();
  const hash = `#${path || "/"}${query ? `?${query}` : ""}`;
  if (hash === location.hash) return;
  history.replaceState(history.state, "", `${location.pathname}${location.search}${hash}`);
}

/** Write one setting into the hash (see setParams). */
export function setParam(name, value) {
  setParams({ [name]: value });
}

/** A JSON setting from the hash, or `fallback` when absent or malformed. */
export function jsonParam(name, fallback) {
  const raw = params().get(name);
  if (raw === null) return fallback;
  try { return JSON.parse(raw); } catch { return fallback; }
}
