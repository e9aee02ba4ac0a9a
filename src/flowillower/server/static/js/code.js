// Code display shared by the snapshot browser and the diff view: syntax highlighting
// (vendored highlight.js, loaded on first use), numbered lines, and a collapsible file
// tree with a filter. Highlighted text becomes DOM through textContent only: the
// highlighter's HTML is read by a strict tokenizer, never assigned as innerHTML.
import { h, loadScript } from "./dom.js";

const HIGHLIGHT_MAX = 400000;  // characters; a longer text is shown plain (fast)
const LANGS = {
  py: "python", pyi: "python", pyx: "python", ipynb: "json", json: "json", jsonl: "json",
  yaml: "yaml", yml: "yaml", toml: "toml", ini: "ini", cfg: "ini", conf: "ini",
  sh: "bash", bash: "bash", zsh: "bash", md: "markdown", markdown: "markdown",
  diff: "diff", patch: "diff", js: "javascript", mjs: "javascript", ts: "typescript",
  c: "c", h: "c", cc: "cpp", cpp: "cpp", hpp: "cpp", cu: "cpp", cuh: "cpp", rs: "rust",
  go: "go", java: "java", lua: "lua", r: "r", sql: "sql", html: "xml", xml: "xml",
  css: "css", mk: "makefile", txt: "plaintext",
};
const NAMES = { makefile: "makefile", dockerfile: "bash", "cmakelists.txt": "cmake" };

/** The highlight.js language for a file path, or "" when none fits. */
export function langFor(path) {
  const name = path.split("/").pop().toLowerCase();
  if (NAMES[name]) return NAMES[name];
  const dot = name.lastIndexOf(".");
  return dot > 0 ? LANGS[name.slice(dot + 1)] || "" : "";
}

let hl = null;
/** highlight.js, loaded once; resolves to null when it cannot load (plain text then). */
export function highlighter() {
  if (!hl) {
    hl = (window.hljs ? Promise.resolve() : loadScript("static/vendor/highlight.min.js"))
      .then(() => window.hljs || null, () => null);
  }
  return hl;
}

const TOKEN = /<span class="([\w -]+)">|<\/span>|&(amp|lt|gt|quot|#x27|#39);|[^<&]+/y;
const ENTITY = { amp: "&", lt: "<", gt: ">", quot: '"', "#x27": "'", "#39": "'" };

// highlight.js's HTML as lines of [class, text] pieces. Anything but its own span tags
// and escapes means the format is not what we expect: null, and the caller shows text.
function htmlLines(html) {
  const lines = [[]], stack = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < html.length) {
    const m = TOKEN.exec(html);
    if (!m) return null;
    if (m[1] !== undefined) stack.push(m[1]);
    else if (m[0] === "</span>") stack.pop();
    else {
      const text = m[2] !== undefined ? ENTITY[m[2]] : m[0];
      const cls = stack.join(" ");
      text.split("\n").forEach((part, i) => {
        if (i) lines.push([]);
        if (part) lines[lines.length - 1].push([cls, part]);
      });
    }
  }
  return lines;
}

const canHighlight = (hljs, text, lang) => Boolean(hljs && lang && lang !== "plaintext"
  && text.length <= HIGHLIGHT_MAX && hljs.getLanguage(lang));

/** `text` split into lines of [class, text] pieces, highlighted when a language fits. */
export function tokenLines(hljs, text, lang) {
  if (canHighlight(hljs, text, lang)) {
    try {
      const lines = htmlLines(hljs.highlight(text, { language: lang, ignoreIllegals: true }).value);
      if (lines) return lines;
    } catch { /* a grammar error: plain text below */ }
  }
  return text.split("\n").map((line) => (line ? [["", line]] : []));
}

/** One line's content as a <code> element of highlighted spans. */
export function lineCode(pieces) {
  const code = h("code");
  for (const [cls, text] of pieces) code.append(cls ? h("span", { class: cls, text }) : text);
  return code;
}

/** A whole file with line numbers: a gutter of numbers beside one <pre> of the code (no
 * element per line, so a 1 MB file is two text nodes when not highlighted). */
export async function codeLines(text, path) {
  const hljs = await highlighter();
  const body = text.endsWith("\n") ? text.slice(0, -1) : text;
  const code = h("code");
  let count;
  if (canHighlight(hljs, body, langFor(path))) {
    const lines = tokenLines(hljs, body, langFor(path));
    const frag = document.createDocumentFragment();
    lines.forEach((pieces, i) => {
      if (i) frag.append("\n");
      for (const [cls, part] of pieces) frag.append(cls ? h("span", { class: cls, text: part }) : part);
    });
    code.append(frag);
    count = lines.length;
  } else {
    code.textContent = body;
    count = body.split("\n").length;
  }
  const numbers = Array.from({ length: count }, (_, i) => i + 1).join("\n");
  return h("div", { class: "code-lines file-lines", tabindex: 0, "aria-label": `${path}, ${count} lines` },
    h("pre", { class: "gutter", "aria-hidden": "true", text: numbers }), h("pre", { class: "src" }, code));
}

const cmp = (a, b) => a.localeCompare(b, undefined, { sensitivity: "base", numeric: true }) || (a < b ? -1 : a > b ? 1 : 0);

// Nested folders of the entries: { dirs: Map(name -> node), files: [entry], path }.
function nest(entries) {
  const root = { dirs: new Map(), files: [], path: "" };
  for (const e of entries) {
    const parts = e.path.split("/");
    let node = root;
    for (const part of parts.slice(0, -1)) {
      if (!node.dirs.has(part)) node.dirs.set(part, { dirs: new Map(), files: [], path: node.path + part + "/" });
      node = node.dirs.get(part);
    }
    node.files.push(e);
  }
  return root;
}

function countFiles(node) {
  let n = node.files.length;
  for (const d of node.dirs.values()) n += countFiles(d);
  return n;
}

/**
 * A collapsible file tree: folders first, then files, each sorted by name. `onOpen(entry)`
 * runs when a file is chosen; `badge(entry)` may add an element after its name.
 * Returns { el, filter(pred or null) -> shown count, select(path), first() }.
 */
export function fileTree(entries, { onOpen, badge, openAll = false } = {}) {
  const root = nest(entries);
  const buttons = new Map(), folders = [];
  let current = null;
  const openDefault = openAll || entries.length <= 40;
  const render = (node, depth) => {
    const out = [];
    for (const name of [...node.dirs.keys()].sort(cmp)) {
      const sub = node.dirs.get(name);
      const det = h("details", { class: "dir", dataset: { path: sub.path } },
        h("summary", null, h("span", { class: "dir-name", text: `${name}/` }),
          h("span", { class: "muted count", text: ` ${countFiles(sub)}` })),
        h("div", { class: "kids" }, render(sub, depth + 1)));
      det.open = openDefault || depth === 0 && node.dirs.size === 1 && !node.files.length;
      folders.push(det);
      out.push(det);
    }
    for (const e of node.files.slice().sort((a, b) => cmp(a.path.split("/").pop(), b.path.split("/").pop()))) {
      const btn = h("button", { type: "button", class: "file", title: e.path, dataset: { path: e.path },
        onclick: () => { select(e.path); onOpen(e); } },
      h("span", { class: "fname", text: e.path.split("/").pop() }), badge ? badge(e) : null);
      buttons.set(e.path, btn);
      out.push(btn);
    }
    return out;
  };
  const el = h("div", { class: "file-tree" }, render(root, 0));
  function select(path) {
    if (current) { current.classList.remove("current"); current.removeAttribute("aria-current"); }
    current = buttons.get(path) || null;
    if (!current) return;
    current.classList.add("current");
    current.setAttribute("aria-current", "true");
    for (let p = current.parentElement; p && p !== el; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
  }
  function filter(pred) {
    let shown = 0;
    for (const [path, btn] of buttons) {
      const ok = !pred || pred(path);
      btn.hidden = !ok;
      shown += ok;
    }
    // Innermost folders first (render lists a folder after its sub-folders): a folder
    // shows when any of its files or folders does.
    for (const det of folders) {
      const any = [...det.querySelector(".kids").children].some((c) => !c.hidden);
      det.hidden = !any;
      if (pred) det.open = any;
    }
    return shown;
  }
  const first = () => entries.find((e) => buttons.get(e.path) && !buttons.get(e.path).hidden) || null;
  return { el, filter, select, first, size: entries.length };
}

/** Words typed in a filter box: a path matches when it holds every word (any case). */
export function pathFilter(text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  return words.length ? (path) => words.every((w) => path.toLowerCase().includes(w)) : null;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  return n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 2 ** 20).toFixed(1)} MB`;
}
