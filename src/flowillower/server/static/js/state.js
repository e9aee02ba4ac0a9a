// Small persistent UI state: the run selection and per-table column preferences.

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
