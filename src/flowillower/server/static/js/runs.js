// The runs table: server-side filter / sort / group, virtual scrolling over pages of
// rows fetched on demand (10,000 runs cost what the visible 30 rows cost).
import { api, runPath } from "./api.js";
import { clear, debounce, fmtValue, h } from "./dom.js";
import { prefs, selection, setParams, setPrefs } from "./state.js";
import { bestValues, parseGoals } from "./table-best.js";
import { constantColumns, customCols, parseCols, visibleColumns as shownColumns } from "./table-columns.js";
import { cellFor, ROW_FIELDS } from "./table-cells.js";
import { tableHeader } from "./table-header.js";
import { tableKeys } from "./table-keys.js";
import { sameLine } from "./table-same.js";

const ROW = 28;       // px, must match --row in app.css
const PAGE = 200;     // rows per request
const GROUP_FIELDS = ["author", "host", "origin", "project"];

export async function render(root, { params }) {
  // A link that carries the view (sort is always written) is the whole truth: what it
  // leaves out is the default, not this browser's last settings.
  const linked = params.has("sort");
  const pick = (key, name, fallback, parse) => {
    if (!linked) return key === "q" && params.has("q") ? params.get("q") : prefs(name, fallback);
    return params.has(key) ? parse(params.get(key)) : fallback;
  };
  const st = {
    q: pick("q", "q", "", String),
    sort: pick("sort", "sort", "created", String), desc: pick("desc", "desc", true, (v) => v !== "0"),
    group: pick("group", "group", "", String), hidden: pick("hidden", "hidden", false, (v) => v === "1"),
    colPrefs: parseCols(pick("cols", "columns", { order: [], shown: [], hidden: [] }, String)),
    goals: parseGoals(pick("best", "bestGoals", {}, String)),  // column key -> "min" | "max"
    same: pick("same", "sameOpen", false, (v) => v === "1"),
    columns: [], matched: 0, total: 0, pages: new Map(), inflight: new Set(),
    epoch: 0, cellKeys: null, bestCache: new Map(),
  };

  const search = h("input", { type: "search", class: "search", value: st.q, spellcheck: false,
    placeholder: "filter: words · status == \"success\" · ${'hyper-NAME':'<0.01'}$",
    "aria-label": "filter runs" });
  const err = h("div", { class: "error", role: "alert" });
  // How each name of the filter resolved (learning_rate → args.training.learning_rate).
  const resolved = h("div", { class: "muted filter-names", "aria-live": "polite" });
  const count = h("span", { class: "muted" });
  const groupSel = h("select", { title: "group rows by an arg", "aria-label": "group rows by author, host, origin, project or an arg" });
  const hiddenBox = h("input", { type: "checkbox", checked: st.hidden });
  const same = sameLine({ open: st.same,
    fetchCells: async (keys) => (await api.get("runs", { q: st.q, hidden: st.hidden, limit: 1, col: keys })).rows[0]?.cells,
    onToggle: (open) => { st.same = open; setPrefs("sameOpen", open); writeUrl(); } });
  const actions = h("span");
  // aria-selected marks the keyboard's cursor row (the ticked boxes are the selection).
  const table = h("table", { class: "runs", role: "grid", "aria-label": "runs" });
  const wrap = h("div", { class: "table-wrap" }, table);
  const colBtn = h("button", { text: "Columns", title: "show, hide and reorder columns" });

  const keys = tableKeys({ wrap, search, rowHeight: ROW, count: () => st.matched,
    idAt: (i) => rowAt(i)?.id, toggle: (id) => selection.toggle(id),
    open: (id) => { location.hash = `#/run/${encodeURIComponent(id)}`; }, redraw: () => draw() });

  root.append(
    h("div", { class: "toolbar" }, h("div", { class: "grow" }, search), count, colBtn,
      h("label", null, "group by ", groupSel),
      h("label", { title: "also list runs you hid" }, hiddenBox, " hidden"), actions, keys.helpBtn),
    err, resolved, same.el, wrap);

  // -- columns -----------------------------------------------------------------------
  const visibleColumns = () => shownColumns(st.columns, st.colPrefs);
  function savePrefs() { setPrefs("columns", st.colPrefs); writeUrl(); }
  function writeUrl() {
    const goals = Object.keys(st.goals).length ? st.goals : null;
    setParams({ q: st.q, sort: st.sort, desc: st.desc ? null : "0", group: st.group,
      hidden: st.hidden ? "1" : null, cols: customCols(st.colPrefs) ? st.colPrefs : null,
      best: goals, same: st.same ? "1" : null });
  }
  function wantedKeys() {  // run fields that rows do not carry (author, origin) come as cells
    return visibleColumns().filter((c) => c.group !== "run" || !ROW_FIELDS.has(c.key)).map((c) => c.key);
  }

  // -- data --------------------------------------------------------------------------
  function queryParams(page) {
    const p = { q: st.q, sort: st.sort, desc: st.desc, offset: page * PAGE, limit: PAGE,
      group: st.group, hidden: st.hidden };
    if (st.cellKeys) p.col = st.cellKeys.length ? st.cellKeys : ["name"];
    return p;
  }

  async function fetchPage(page, epoch) {
    if (st.pages.has(page) || st.inflight.has(page)) return;
    st.inflight.add(page);
    try {
      const data = await api.get("runs", queryParams(page));
      if (epoch !== st.epoch) return;
      st.pages.set(page, data.rows);
      st.matched = data.matched;
      st.total = data.total;
      if (page === 0) showFilterFacts(data.filter);
      if (page === 0 || !st.columns.length) {
        st.columns = data.columns;
        same.update(constantColumns(st.columns, st.colPrefs));
      }
      draw();
    } catch (e) {
      if (epoch === st.epoch) { err.textContent = e.message; resolved.textContent = ""; st.matched = 0; draw(); }
    } finally { st.inflight.delete(page); }
  }

  // The placeholder is a filter that works on these runs (a varying arg, from the server).
  function showFilterFacts(facts) {
    if (!facts) return;
    if (facts.example) {
      search.placeholder = `filter, e.g. ${facts.example} · words · status == "success"`;
      search.dataset.example = facts.example;
    }
    resolved.textContent = (facts.names || []).map((n) => n.message).join(" · ");
  }

  async function reload() {
    st.epoch += 1;
    st.pages.clear();
    st.inflight.clear();
    st.bestCache = new Map();  // answers still on their way land in the old one
    keys.reset();
    err.textContent = "";
    setPrefs("q", st.q); setPrefs("sort", st.sort); setPrefs("desc", st.desc);
    setPrefs("group", st.group); setPrefs("hidden", st.hidden);
    writeUrl();
    const epoch = st.epoch;
    await fetchPage(0, epoch);
    // The first answer tells which columns exist; ask again if we need other cells.
    const want = wantedKeys();
    const got = st.pages.get(0)?.[0]?.cells;
    if (got && want.some((k) => !(k in got))) {
      st.cellKeys = want;
      st.epoch += 1; st.pages.clear();
      await fetchPage(0, st.epoch);
    } else if (!st.cellKeys) {
      st.cellKeys = want;
    }
    wrap.scrollTop = 0;
    draw();
  }

  // -- drawing -----------------------------------------------------------------------
  function rowAt(i) {
    const page = st.pages.get(Math.floor(i / PAGE));
    return page ? page[i % PAGE] : undefined;
  }

  function loadedRows() {
    const rows = [];
    for (const page of st.pages.values()) rows.push(...page);
    return rows;
  }

  function header(cols) {
    return tableHeader({ cols, st, ids: loadedRows().map((r) => r.id), isSelected: selection.has,
      onSelectAll: (ids, on) => {
        const cur = new Set(selection.ids());
        ids.forEach((id) => (on ? cur.add(id) : cur.delete(id)));
        selection.set([...cur]);
      },
      onSort: (key) => {
        if (st.sort === key) st.desc = !st.desc;
        else { st.sort = key; st.desc = !(key === "name" || key.startsWith("arg:")); }
        reload();
      },
      onMove: (dragged, before) => {
        const order = visibleColumns().map((x) => x.key).filter((k) => k !== dragged);
        order.splice(order.indexOf(before), 0, dragged);
        st.colPrefs.order = order;
        savePrefs();
        draw();
      },
      onGoal: (key, goal) => {
        st.goals = { ...st.goals, [key]: goal };
        setPrefs("bestGoals", st.goals);
        writeUrl();
        draw();
      } });
  }

  // The best value of each metric column among the matched rows (all loaded: here;
  // else the server's sort answers, one short page per column).
  function bests(cols) {
    const rows = loadedRows();
    const epoch = st.epoch;
    // One /api/best request for every column not answered yet, in this table's scope.
    return bestValues(cols, st.goals, rows, rows.length >= st.matched, st.bestCache,
      { q: st.q, hidden: st.hidden }, () => { if (epoch === st.epoch) draw(); });
  }

  function markBest(td, best) {
    td.classList.add("best");
    const label = `best (${best.goal})`;
    td.title = `${td.title ? `${td.title} — ` : ""}${label}`;
    td.prepend(h("span", { class: "best-mark", text: "★", role: "img", "aria-label": label, title: label }));
  }

  function draw() {
    const cols = visibleColumns();
    const best = bests(cols);
    const n = st.matched;
    const hadFocus = keys.rowFocused();
    count.textContent = `${n.toLocaleString()} of ${st.total.toLocaleString()} runs`;
    drawActions();
    const top = wrap.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - 10);
    const last = Math.min(n, first + Math.ceil((wrap.clientHeight || 600) / ROW) + 30);
    for (let p = Math.floor(first / PAGE); p <= Math.floor(Math.max(first, last - 1) / PAGE); p++) {
      if (p * PAGE < n) fetchPage(p, st.epoch);
    }
    const width = cols.length + 1 + (st.group ? 1 : 0);
    table.setAttribute("aria-rowcount", String(n + 1));
    const body = h("tbody");
    body.append(h("tr", { class: "spacer" }, h("td", { colspan: width, style: { height: `${first * ROW}px` } })));
    for (let i = first; i < last; i++) {
      const row = rowAt(i);
      if (!row) {
        body.append(h("tr", null, h("td", { colspan: width, class: "muted", text: "…" })));
        continue;
      }
      const sel = selection.has(row.id);
      const box = h("input", { type: "checkbox", checked: sel, "aria-label": `select ${row.name}` });
      box.addEventListener("change", () => selection.toggle(row.id, box.checked));
      const before = i > 0 ? rowAt(i - 1) : undefined;
      const groupStart = st.group && (!before || fmtValue(before.group) !== fmtValue(row.group));
      const groupCell = st.group ? h("td", { class: "group-cell", text: groupStart ? fmtValue(row.group) : "" }) : null;
      const cells = [];
      for (const c of cols) {
        const td = cellFor(row, c, (msg) => { err.textContent = msg; });
        if (c.key === "name") td.classList.add("sticky", "name-col");
        const b = best.get(c.key);
        if (b && row.cells?.[c.key] === b.value) markBest(td, b);
        cells.push(td);
        if (c.key === "name" && groupCell) cells.push(groupCell);
      }
      if (groupCell && !cols.some((c) => c.key === "name")) cells.unshift(groupCell);
      const tr = h("tr", { class: [sel ? "selected" : "", row.hidden ? "hidden-run" : "",
        groupStart && i > 0 ? "group-start" : ""].join(" "),
      dataset: { id: row.id, index: String(i) }, "aria-rowindex": String(i + 2) },
      h("td", { class: "pick sticky" }, box), cells);
      keys.decorate(tr, i);
      body.append(tr);
    }
    body.append(h("tr", { class: "spacer" }, h("td", { colspan: width, style: { height: `${Math.max(0, n - last) * ROW}px` } })));
    clear(table).append(header(cols), body);
    keys.afterDraw(hadFocus);
    if (rowAt(first) && !performance.getEntriesByName("fw:rows").length) performance.mark("fw:rows");
    if (!n && !err.textContent) {
      body.append(h("tr", null, h("td", { colspan: width, class: "muted",
        text: st.total ? "No run matches this filter." : "No runs yet: log one with fw.init() / fw.log()." })));
    }
  }

  function drawActions() {
    clear(actions);
    const n = selection.size();
    const chart = h("button", { class: "primary", text: `Chart ${n} selected`, disabled: !n,
      onclick: () => { location.hash = "#/charts"; } });
    const clearBtn = h("button", { text: "Clear", disabled: !n, onclick: () => selection.clear() });
    // The side-by-side images page (media.js), linked without loading it here.
    const images = h("button", { text: `Images of ${n} selected`, disabled: !n,
      onclick: () => { location.hash = `#/images?runs=${selection.ids().map(encodeURIComponent).join(",")}`; } });
    actions.append(chart, " ", images, " ", clearBtn);
    if (!api.readonly) {
      actions.append(" ",
        h("button", { text: "Hide", disabled: !n, title: "hide the selected runs", onclick: () => bulk({ hidden: true }) }),
        " ",
        h("button", { text: "Unhide", disabled: !n, onclick: () => bulk({ hidden: false }) }),
        " ",
        h("button", { class: "danger", text: "Delete", disabled: !n, onclick: deleteSelected }));
    }
  }

  async function bulk(body) {
    try {
      for (const id of selection.ids()) await api.patch(runPath(id), body);
    } catch (e) { err.textContent = e.message; }
    reload();
  }

  async function deleteSelected() {
    const ids = selection.ids();
    if (!ids.length || !confirm(`Delete ${ids.length} run(s) for good? This cannot be undone.`)) return;
    for (const id of ids) {
      try { await api.del(runPath(id)); } catch (e) { err.textContent = e.message; }
    }
    selection.clear();
    reload();
  }

  // -- columns menu ------------------------------------------------------------------
  let menu = null;
  function toggleMenu() {
    if (menu) { menu.remove(); menu = null; return; }
    menu = h("div", { class: "menu" });
    const vis = new Set(visibleColumns().map((c) => c.key));
    for (const group of ["run", "args", "metrics"]) {
      const cols = st.columns.filter((c) => c.group === group);
      if (!cols.length) continue;
      menu.append(h("h4", { text: group }));
      for (const c of cols) {
        const box = h("input", { type: "checkbox", checked: vis.has(c.key) });
        box.addEventListener("change", () => {
          const cp = st.colPrefs;
          cp.shown = cp.shown.filter((k) => k !== c.key);
          cp.hidden = cp.hidden.filter((k) => k !== c.key);
          (box.checked ? cp.shown : cp.hidden).push(c.key);
          savePrefs();
          st.cellKeys = wantedKeys();
          reload();
        });
        menu.append(h("label", null, box, ` ${c.label}`, c.constant ? h("span", { class: "muted", text: " (constant)" }) : ""));
      }
    }
    menu.append(h("button", { text: "Reset columns", onclick: () => {
      st.colPrefs = { order: [], shown: [], hidden: [] }; savePrefs(); st.cellKeys = null; toggleMenu(); reload();
    } }));
    const r = colBtn.getBoundingClientRect();
    Object.assign(menu.style, { left: `${r.left}px`, top: `${r.bottom + window.scrollY + 4}px` });
    document.body.append(menu);
  }
  colBtn.addEventListener("click", (e) => { e.stopPropagation(); toggleMenu(); });
  const closeMenu = (e) => { if (menu && !menu.contains(e.target)) { menu.remove(); menu = null; } };
  document.addEventListener("click", closeMenu);

  // -- events ------------------------------------------------------------------------
  const onSearch = debounce(() => { st.q = search.value.trim(); reload(); }, 300);
  search.addEventListener("input", onSearch);
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { st.q = search.value.trim(); reload(); } });
  hiddenBox.addEventListener("change", () => { st.hidden = hiddenBox.checked; reload(); });
  groupSel.addEventListener("change", () => { st.group = groupSel.value; reload(); });
  let ticking = false;
  wrap.addEventListener("scroll", () => {
    if (ticking) return;
    ticking = true;
    requestAnimationFrame(() => { ticking = false; draw(); });
  });
  const offSel = selection.onChange(draw);

  await reload();
  // The group-by choices: who / where / which project, then the args of the listed runs.
  groupSel.append(h("option", { value: "", text: "—" }));
  st.columns.filter((c) => GROUP_FIELDS.includes(c.key) || c.group === "args").forEach((c) => {
    groupSel.append(h("option", { value: c.key, text: c.label, selected: c.key === st.group }));
  });

  // Follow running runs: re-fetch the loaded pages every few seconds, swap them in whole.
  const timer = setInterval(async () => {
    if (document.hidden || api.readonly || document.activeElement?.closest?.("td.note")) return;
    const running = [...st.pages.values()].some((rows) => rows.some((r) => r.status === "running"));
    if (!running) return;
    const epoch = st.epoch;
    for (const p of [...st.pages.keys()]) {
      try {
        const data = await api.get("runs", queryParams(p));
        if (epoch !== st.epoch) return;
        st.pages.set(p, data.rows);
        st.matched = data.matched;
      } catch { return; }
    }
    draw();
  }, 5000);

  return () => {
    clearInterval(timer); offSel(); keys.detach();
    document.removeEventListener("click", closeMenu); if (menu) menu.remove();
  };
}
