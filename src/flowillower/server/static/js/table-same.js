// The "same in every run" line above the runs table: one line, collapsed by default
// ("12 values are the same in every run — show"), expanding to `key = value` pairs.
// Args carry their value in the column list; a metric's constant value (watch
// statistics included) is fetched once, on the first expansion, as one row's cells.
import { clear, fmtValue, h } from "./dom.js";

const CHUNK = 60;  // metric keys per request: keeps the URL short

/** The line's controller. `fetchCells(keys)` resolves to {key: value} for some columns
 * of any one matched run; `onToggle(open)` records the state (the URL's `same=1`). */
export function sameLine({ open, fetchCells, onToggle }) {
  const el = h("div", { class: "folded same-line" });
  const values = new Map();  // metric column key -> its value in every run
  const asked = new Set();
  let consts = [];

  function pairLabel(c) { return c.group === "metrics" ? c.metric || c.label : c.label; }

  function valueOf(c) {
    if (c.value !== undefined) return { ok: true, value: c.value };
    if (values.has(c.key)) return { ok: true, value: values.get(c.key) };
    return { ok: false };
  }

  async function fetchMissing() {
    const keys = consts.filter((c) => !valueOf(c).ok && !asked.has(c.key)).map((c) => c.key);
    if (!keys.length) return;
    keys.forEach((k) => asked.add(k));
    for (let i = 0; i < keys.length; i += CHUNK) {
      try {
        const cells = await fetchCells(keys.slice(i, i + CHUNK));
        for (const [k, v] of Object.entries(cells || {})) if (v !== undefined && v !== null) values.set(k, v);
      } catch { /* left out: a pair without its value is not shown */ }
    }
    draw();
  }

  function draw() {
    clear(el);
    el.classList.toggle("open", open);
    if (!consts.length) { el.hidden = true; return; }
    el.hidden = false;
    const n = consts.length;
    const pending = consts.filter((c) => !valueOf(c).ok).length;
    const list = h("div", { class: "same-pairs", id: "same-pairs", hidden: !open });
    for (const c of consts) {
      const { ok, value } = valueOf(c);
      if (!ok) continue;  // a value we do not know yet is left out, never shown empty
      // textContent reads "layers=3"; the spaces around "=" are drawn by CSS.
      list.append(h("span", { class: "pair", title: `${c.key}: the same in every listed run` },
        h("b", { text: pairLabel(c) }), h("span", { class: "eq", text: "=" }),
        h("span", { class: "val", text: fmtValue(value) })));
    }
    if (open && pending) list.append(h("span", { class: "muted", text: `(${pending} loading…)` }));
    const toggle = h("button", { type: "button", class: "link-button", text: open ? "hide" : "show",
      "aria-expanded": open ? "true" : "false", "aria-controls": "same-pairs",
      onclick: () => { open = !open; onToggle(open); draw(); if (open) fetchMissing(); } });
    el.append(h("div", { class: "same-summary" },
      h("span", { text: `${n} ${n === 1 ? "value is" : "values are"} the same in every run — ` }), toggle),
    list);
  }

  return {
    el,
    /** The constant columns of a new answer (a reload: other runs may match, so the
     * fetched values are forgotten): redraw, and fetch the values if open. */
    update(columns) {
      consts = columns;
      values.clear();
      asked.clear();
      draw();
      if (open) fetchMissing();
    },
  };
}
