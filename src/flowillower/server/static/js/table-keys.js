// Keyboard use of the runs table: `/` focuses the filter, Escape leaves it, ArrowUp /
// ArrowDown (Home, End, PageUp, PageDown) move a row cursor, Space selects the row,
// Enter opens its run page, `?` shows these keys. The cursor row is the table's one tab
// stop (roving tabindex) and carries aria-selected; rows are redrawn on every scroll, so
// the focus is put back on the new cursor row after each draw.
import { h } from "./dom.js";

export const KEYS = [
  ["/", "focus the filter"],
  ["Esc", "leave the filter (focus goes to the table)"],
  ["↑ ↓", "move the row cursor (Home, End, PgUp, PgDn too)"],
  ["Space", "select or unselect the row"],
  ["Enter", "open the row's run page"],
  ["?", "show or hide these keys"],
];

/** Whether keys typed now go into a text field (then `/` and `?` are just characters). */
export function typingIn(el) {
  if (!el) return false;
  if (el.isContentEditable) return true;
  if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && !/^(checkbox|radio|button|submit|reset|range|color|file)$/.test(el.type);
}

/** Wire the keys to a table. `count()`: rows matched; `idAt(i)`: the id of row i when
 * loaded; `toggle(id)`, `open(id)`: what Space and Enter do; `redraw()`: draw now. */
export function tableKeys({ wrap, search, count, idAt, toggle, open, redraw, rowHeight }) {
  let cursor = -1;
  let popover = null;
  const helpBtn = h("button", { type: "button", class: "keys-help", text: "?", "aria-haspopup": "dialog",
    "aria-expanded": "false", "aria-label": "keyboard shortcuts",
    title: `Keys: ${KEYS.map(([k, what]) => `${k} ${what}`).join(" · ")}` });
  wrap.tabIndex = -1;  // the focus can rest here while the cursor row is scrolled out

  const rowEl = (i) => wrap.querySelector(`tr[data-index="${i}"]`);

  function showHelp(on = !popover) {
    if (popover) { popover.remove(); popover = null; }
    helpBtn.setAttribute("aria-expanded", String(on));
    if (!on) return;
    popover = h("div", { class: "menu keys-popover", role: "dialog", "aria-label": "keyboard shortcuts" },
      h("h4", { text: "Keyboard" }),
      h("table", { class: "kv" }, KEYS.map(([k, what]) => h("tr", null, h("td", null, h("kbd", { text: k })),
        h("td", { text: what })))));
    const r = helpBtn.getBoundingClientRect();
    Object.assign(popover.style, { top: `${r.bottom + window.scrollY + 4}px`,
      left: `${Math.max(4, Math.min(r.left, window.innerWidth - 300))}px` });
    document.body.append(popover);
  }
  helpBtn.addEventListener("click", (e) => { e.stopPropagation(); showHelp(); });

  /** Move the cursor to row i (clamped), scroll it into view and focus it. */
  function moveTo(i) {
    const n = count();
    if (!n) return;
    cursor = Math.max(0, Math.min(n - 1, i));
    if (!rowEl(cursor)) wrap.scrollTop = Math.max(0, cursor * rowHeight - wrap.clientHeight / 2);
    redraw();
    const tr = rowEl(cursor);
    if (!tr) { wrap.focus({ preventScroll: true }); return; }
    const head = wrap.querySelector("thead")?.getBoundingClientRect().height || rowHeight;
    const r = tr.getBoundingClientRect(), w = wrap.getBoundingClientRect();
    const bottom = w.top + wrap.clientHeight;
    if (r.top < w.top + head) wrap.scrollTop -= w.top + head - r.top;
    else if (r.bottom > bottom) wrap.scrollTop += r.bottom - bottom;
    tr.focus({ preventScroll: true });
  }

  function onTableKey(e) {
    const t = e.target;
    if (!(t === wrap || t.matches?.("tr[data-index]")) || e.altKey || e.ctrlKey || e.metaKey) return;
    const page = Math.max(1, Math.floor(wrap.clientHeight / rowHeight) - 2);
    const at = cursor < 0 ? -1 : cursor;
    const moves = { ArrowDown: at + 1, ArrowUp: Math.max(0, at - 1), Home: 0, End: count() - 1,
      PageDown: at + page, PageUp: at - page };
    if (e.key in moves) { e.preventDefault(); moveTo(moves[e.key]); return; }
    const id = cursor >= 0 ? idAt(cursor) : undefined;
    if (e.key === " " && id !== undefined) { e.preventDefault(); toggle(id); }
    else if (e.key === "Enter" && id !== undefined) { e.preventDefault(); open(id); }
  }

  function onDocKey(e) {
    if (e.key === "Escape" && popover) { showHelp(false); helpBtn.focus(); return; }
    if (e.altKey || e.ctrlKey || e.metaKey || typingIn(e.target)) return;
    if (e.key === "/") { e.preventDefault(); search.focus(); search.select(); }
    else if (e.key === "?") { e.preventDefault(); showHelp(); }
  }

  function onSearchKey(e) {
    // preventDefault: a search field's own Escape would also empty the filter.
    if (e.key === "Escape") { e.preventDefault(); search.blur(); moveTo(cursor < 0 ? 0 : cursor); }
    else if (e.key === "ArrowDown") { e.preventDefault(); moveTo(cursor < 0 ? 0 : cursor); }
  }

  // A click or Tab into a row makes it the cursor row, drawn in place (no redraw, which
  // would take an open note editor away).
  function onFocusIn(e) {
    const tr = e.target.closest?.("tr[data-index]");
    if (!tr || Number(tr.dataset.index) === cursor) return;
    cursor = Number(tr.dataset.index);
    wrap.querySelectorAll("tr[data-index]").forEach((row) => decorate(row, Number(row.dataset.index)));
  }

  /** Roving tabindex (the cursor row is the tab stop), aria-selected and the cursor
   * class of a drawn row. */
  function decorate(tr, i) {
    const on = i === cursor;
    tr.classList.toggle("cursor", on);
    tr.setAttribute("aria-selected", on ? "true" : "false");
    tr.tabIndex = on ? 0 : -1;
  }

  wrap.addEventListener("keydown", onTableKey);
  wrap.addEventListener("focusin", onFocusIn);
  search.addEventListener("keydown", onSearchKey);
  document.addEventListener("keydown", onDocKey);

  return {
    helpBtn,
    get cursor() { return cursor; },
    /** Before a redraw: whether the focus is on a row (to be put back after). */
    rowFocused: () => Boolean(document.activeElement?.matches?.("tr[data-index]") && wrap.contains(document.activeElement)),
    decorate,
    /** After a redraw: the first drawn row is the tab stop when the cursor's is not drawn. */
    afterDraw(hadFocus) {
      const rows = [...wrap.querySelectorAll("tr[data-index]")];
      if (rows.length && !rows.some((r) => r.tabIndex === 0) && !rowEl(cursor)) rows[0].tabIndex = 0;
      if (hadFocus) (rowEl(cursor) || wrap).focus({ preventScroll: true });
    },
    /** A new answer (filter, sort): the cursor goes back to the top. */
    reset() { cursor = -1; },
    detach() {
      document.removeEventListener("keydown", onDocKey);
      showHelp(false);
    },
  };
}
