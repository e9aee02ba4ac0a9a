// The code part of a run diff: a unified diff (git's, or the static export's own) read
// into files, shown as a tree of changed files with +/- counts beside the chosen file's
// hunks, highlighted, with old and new line numbers and added/removed line colours.
import { fileTree, highlighter, langFor, lineCode, tokenLines } from "./code.js";
import { clear, h } from "./dom.js";

// A path as git writes it in a header: "a/x", or C-quoted "\"a/\\303\\251\"" when unusual.
function gitPath(raw) {
  let s = raw.trim();
  if (s.startsWith('"') && s.endsWith('"')) {
    const bytes = [];
    const body = s.slice(1, -1);
    for (let i = 0; i < body.length; i++) {
      const c = body[i];
      if (c !== "\\") { bytes.push(...new TextEncoder().encode(c)); continue; }
      const n = body[++i];
      if (/[0-7]/.test(n)) { bytes.push(parseInt(body.slice(i, i + 3), 8)); i += 2; }
      else bytes.push({ n: 10, t: 9, r: 13, '"': 34, "\\": 92 }[n] ?? n.charCodeAt(0));
    }
    s = new TextDecoder().decode(new Uint8Array(bytes));
  }
  return s === "/dev/null" ? null : s.replace(/^[ab]\//, "");
}

/** A unified diff's files: { path, old, status, add, del, binary, hunks: [{ head, old, new, lines }] }. */
export function parseDiff(text) {
  const files = [];
  let f = null, hunk = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("diff --git ")) {
      // "a/P b/P" (or both quoted): the second half; ---/+++ and rename lines refine it.
      const rest = line.slice(11), half = (rest.length - 1) / 2;
      f = { path: gitPath(Number.isInteger(half) ? rest.slice(half + 1) : rest), old: null, status: "modified", add: 0, del: 0, binary: false, hunks: [] };
      hunk = null;
      files.push(f);
    } else if (!f) {
      continue;
    } else if (hunk && /^[ +\-\\]/.test(line) && !/^(---|\+\+\+) /.test(line)) {
      if (line[0] === "+") f.add += 1; else if (line[0] === "-") f.del += 1;
      hunk.lines.push(line);
    } else if (line.startsWith("@@")) {
      const m = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$/.exec(line);
      hunk = { head: line, old: m ? Number(m[1]) : 1, new: m ? Number(m[2]) : 1, lines: [] };
      f.hunks.push(hunk);
    } else if (line.startsWith("new file mode")) f.status = "added";
    else if (line.startsWith("deleted file mode")) f.status = "removed";
    else if (line.startsWith("rename from ")) { f.status = "renamed"; f.old = gitPath(line.slice(12)); }
    else if (line.startsWith("rename to ")) f.path = gitPath(line.slice(10));
    else if (line.startsWith("Binary files ")) f.binary = true;
    else if (line.startsWith("--- ")) { const p = gitPath(line.slice(4)); if (p && f.status !== "renamed") f.old = p; }
    else if (line.startsWith("+++ ")) { const p = gitPath(line.slice(4)); if (p) f.path = p; }
  }
  for (const x of files) if (x.status === "removed") x.path = x.old = x.old || x.path;
  return files;
}

const MARK = { added: "A", removed: "D", modified: "M", renamed: "R" };

function counts(f) {
  return h("span", { class: "dcount" }, h("span", { class: `st st-${f.status}`, title: f.status, text: MARK[f.status] }),
    f.binary ? h("span", { class: "muted", text: " binary" }) : [
      h("span", { class: "plus", text: ` +${f.add}` }), h("span", { class: "minus", text: ` −${f.del}` })]);
}

// The old and new line numbers of a row, kept in view while the code scrolls sideways.
const nums = (a, b) => h("span", { class: "nums" }, h("span", { class: "n", text: a }), h("span", { class: "n", text: b }));

// One file's hunks: each line highlighted in the context of its hunk's other lines.
function fileDiff(hljs, f) {
  const rows = h("div", { class: "rows" });
  const lang = langFor(f.path);
  if (f.binary) rows.append(h("div", { class: "dl" }, h("code", { text: "(binary file changed)" })));
  if (!f.hunks.length && !f.binary) rows.append(h("div", { class: "dl" }, h("code", { text: f.status === "renamed" ? "(renamed, same content)" : "(mode change only)" })));
  for (const hk of f.hunks) {
    rows.append(h("div", { class: "dl hunk" }, nums("", ""), h("code", { text: hk.head })));
    const body = hk.lines.filter((l) => l[0] !== "\\");
    const pieces = tokenLines(hljs, body.map((l) => l.slice(1)).join("\n"), lang);
    let o = hk.old, n = hk.new, i = 0;
    for (const line of hk.lines) {
      if (line[0] === "\\") { rows.append(h("div", { class: "dl note" }, nums("", ""), h("code", { text: line }))); continue; }
      const kind = line[0] === "+" ? "add" : line[0] === "-" ? "del" : "ctx";
      const code = lineCode(pieces[i++] || []);
      code.prepend(h("span", { class: "sign", text: kind === "add" ? "+" : kind === "del" ? "-" : " " }));
      rows.append(h("div", { class: `dl ${kind}` },
        nums(kind === "add" ? "" : String(o), kind === "del" ? "" : String(n)), code));
      if (kind !== "add") o += 1;
      if (kind !== "del") n += 1;
    }
  }
  const title = f.old && f.old !== f.path ? `${f.old} → ${f.path}` : f.path;
  return h("div", { class: "dfile" }, h("div", { class: "snap-head" }, h("span", { class: "mono snap-path", text: title }), counts(f)),
    h("div", { class: "code-lines diff-lines", tabindex: 0 }, rows));
}

/** Show the code diff `text` in `out`: changed-file tree beside the chosen file's diff.
 * `start`: the path shown first (else the first changed file); `onOpen(path)` runs when
 * the user picks a file. */
export async function showCodeDiff(out, text, truncated, { start = null, onOpen = null } = {}) {
  const files = parseDiff(text || "");
  if (!files.length) { out.append(h("p", { class: "muted same-code", text: "(same code)" })); return; }
  const hljs = await highlighter();
  const add = files.reduce((s, f) => s + f.add, 0), del = files.reduce((s, f) => s + f.del, 0);
  const panel = h("div", { class: "snap-file" });
  const tree = fileTree(files, { openAll: true, badge: counts, onOpen: (f) => {
    clear(panel).append(fileDiff(hljs, f));
    if (onOpen) onOpen(f.path);
  } });
  out.append(h("p", { class: "muted diff-summary", text: `${files.length} file${files.length === 1 ? "" : "s"} changed, +${add} −${del}` }),
    truncated ? h("p", { class: "note truncated", text: "The diff is too large and was cut; files past the cut are not listed." }) : "",
    h("div", { class: "snap code-diff" }, h("nav", { class: "snap-tree", "aria-label": "changed files" }, tree.el), panel));
  const first = files.find((f) => f.path === start) || tree.first();
  if (first) { tree.select(first.path); panel.append(fileDiff(hljs, first)); }
}
