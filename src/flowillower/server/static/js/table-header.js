// The runs table's header row: select-all (checked / indeterminate / unchecked for the
// loaded rows), sortable and draggable column titles, and per metric column the toggle
// of which way is best (min or max) for its best marker.
import { h } from "./dom.js";
import { goalOf, marksBest } from "./table-best.js";

/** Checked when every loaded row is selected, indeterminate when only some are. */
export function selectAllState(ids, isSelected) {
  const n = ids.filter(isSelected).length;
  return { checked: n > 0 && n === ids.length, indeterminate: n > 0 && n < ids.length };
}

/** The <thead>. `ids`: the loaded rows' ids; handlers: onSelectAll(ids, on), onSort(key),
 * onMove(dragged, before), onGoal(key, goal). */
export function tableHeader({ cols, st, ids, isSelected, onSelectAll, onSort, onMove, onGoal }) {
  const state = selectAllState(ids, isSelected);
  const all = h("input", { type: "checkbox", "aria-label": "select all loaded rows",
    title: state.checked ? "unselect the loaded rows" : "select all loaded rows" });
  all.checked = state.checked;
  all.indeterminate = state.indeterminate;
  all.addEventListener("change", () => onSelectAll(ids, state.indeterminate || all.checked));
  const ths = [h("th", { class: "pick sticky" }, all)];
  let dragKey = null;
  for (const c of cols) {
    const name = c.key === "name";
    const th = h("th", { draggable: name ? null : "true",
      title: `${c.key} — click to sort${name ? "" : ", drag to reorder"}`,
      "aria-sort": st.sort === c.key ? (st.desc ? "descending" : "ascending") : null,
      class: [st.sort === c.key ? `sorted ${st.desc ? "" : "asc"}` : "", name ? "sticky name-col" : ""].join(" ") },
    c.label, c.group !== "run" ? h("span", { class: "grp" }, c.group, goalToggle(c, st.goals, onGoal)) : null);
    // Keyboard: the title is focusable and Enter / Space sort like a click.
    th.tabIndex = 0;
    th.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && e.target === th) { e.preventDefault(); onSort(c.key); }
    });
    th.addEventListener("click", (e) => { if (!e.target.closest("button")) onSort(c.key); });
    if (!name) {
      th.addEventListener("dragstart", (e) => { dragKey = c.key; e.dataTransfer.effectAllowed = "move"; });
    }
    th.addEventListener("dragover", (e) => { e.preventDefault(); th.classList.add("drag-over"); });
    th.addEventListener("dragleave", () => th.classList.remove("drag-over"));
    th.addEventListener("drop", (e) => {
      e.preventDefault();
      th.classList.remove("drag-over");
      if (dragKey && dragKey !== c.key) onMove(dragKey, c.key);
    });
    ths.push(th);
    // The group column follows the frozen name column.
    if (name && st.group) ths.push(h("th", { text: `group: ${st.group.replace(/^arg:/, "")}` }));
  }
  if (st.group && !cols.some((c) => c.key === "name")) {
    ths.splice(1, 0, h("th", { text: `group: ${st.group.replace(/^arg:/, "")}` }));
  }
  return h("thead", null, h("tr", null, ths));
}

function goalToggle(col, goals, onGoal) {
  if (!marksBest(col)) return null;
  const { goal, known, chosen } = goalOf(col, goals);
  const other = goal === "min" ? "max" : "min";
  const label = `best = ${goal}${chosen ? " (your choice)" : known ? "" : " (guessed)"}; click for ${other}`;
  return h("button", { type: "button", class: `goal${known ? "" : " guessed"}`, text: goal === "min" ? "↓min" : "↑max",
    title: label, "aria-label": label, onclick: (e) => { e.stopPropagation(); onGoal(col.key, other); } });
}
