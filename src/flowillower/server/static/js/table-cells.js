// Cells of the runs table: one <td> per column kind, and the click-to-edit note cell.
import { api, runPath } from "./api.js";
import { clear, fmtDuration, fmtNum, fmtTime, fmtValue, h, statusBadge } from "./dom.js";

const NUMERIC = (k) => /^(last|best|min|max|count):/.test(k) || k === "duration";
// Run fields each row of /api/runs carries; other run fields come as cells.
export const ROW_FIELDS = new Set(["id", "name", "status", "created", "duration", "tags", "notes",
  "hidden", "host", "author", "origin", "git_branch", "project"]);
const SHORT = 40;  // characters of a name a cell shows; the whole name is its tooltip

/** Who made a run, where, where it came from: text (never markup), cut when long. */
function nameCell(value) {
  const text = value == null ? "" : String(value);
  const cut = text.length > SHORT ? `${text.slice(0, SHORT - 1)}…` : text;
  return h("td", { class: "who", text: cut, title: text });
}

/** The <td> of one column of a row. `onError(message)`: a note that could not be saved. */
export function cellFor(row, col, onError) {
  const k = col.key;
  if (k === "status") return h("td", null, statusBadge(row.status));
  if (k === "name") {
    return h("td", { title: row.id }, h("a", { href: `#/run/${encodeURIComponent(row.id)}`,
      text: row.name || row.id }));
  }
  if (k === "created") return h("td", { text: fmtTime(row.created) });
  if (k === "duration") return h("td", { class: "num", text: fmtDuration(row.duration) });
  if (k === "tags") return h("td", null, (row.tags || []).map((t) => h("span", { class: "chip", text: t })));
  if (k === "notes") return noteCell(row, onError);
  if (k === "git_branch") return h("td", { text: row.git_branch || "" });
  if (k === "author" || k === "host" || k === "origin") return nameCell(k in row ? row[k] : row.cells?.[k]);
  if (col.group === "run") return h("td", { text: fmtValue(k in row ? row[k] : row.cells?.[k]) });
  const v = row.cells?.[k];
  const td = h("td", { class: NUMERIC(k) || typeof v === "number" ? "num" : "",
    text: NUMERIC(k) ? fmtNum(v) : fmtValue(v), title: typeof v === "object" ? "" : String(v ?? "") });
  if (col.metric && (row.replayed || []).includes(col.metric)) {
    td.classList.add("replayed");
    td.append(h("span", { class: "replayed-mark", text: "↺", title: "includes values from a hindsight replay" }));
  }
  return td;
}

function noteCell(row, onError) {
  const td = h("td", { class: "note", text: row.notes || "", title: api.readonly ? row.notes : "click to edit the note" });
  if (api.readonly) return td;
  td.addEventListener("click", () => {
    if (td.querySelector("input")) return;
    const input = h("input", { type: "text", value: row.notes || "" });
    clear(td).append(input);
    input.focus();
    let done = false;
    const finish = async (save) => {
      if (done) return; done = true;
      const text = input.value;
      td.textContent = save ? text : row.notes || "";
      if (save && text !== (row.notes || "")) {
        try { await api.patch(runPath(row.id), { notes: text }); row.notes = text; }
        catch (e) { onError(`note not saved: ${e.message}`); td.textContent = row.notes || ""; }
      }
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
  });
  return td;
}

