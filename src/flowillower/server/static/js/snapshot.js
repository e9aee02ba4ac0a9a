// The run page's code snapshot browser: a file tree with a filter (paths, and contents
// where the server can search them) beside the chosen file, highlighted, with line numbers.
import { api, runPath } from "./api.js";
import { codeLines, fileTree, fmtBytes, pathFilter } from "./code.js";
import { clear, h } from "./dom.js";
import { params, setParams } from "./state.js";

// The file to show first: the script the run was started with, else a README.
function firstFile(tree, argv) {
  const script = (argv || [])[0] || "";
  const byPath = new Set(tree.map((e) => e.path));
  const tail = script.replace(/\\/g, "/").split("/").pop();
  const guess = [...byPath].filter((p) => tail && (p === tail || p.endsWith(`/${tail}`)));
  if (guess.length) return guess.sort((a, b) => a.length - b.length)[0];
  return tree.map((e) => e.path).find((p) => /^readme(\.|$)/i.test(p)) || null;
}

/** Fill `card` with the snapshot browser of run `id` (`argv`: how the run was started). */
export function snapshotBrowser(card, id, argv) {
  const body = h("div", { class: "snap-body" }, h("p", { class: "muted", text: "loading files…" }));
  card.append(body);
  api.get(runPath(id, "/code")).then((res) => build(body, id, res, argv))
    .catch((e) => { clear(body).append(h("p", { class: "muted code-error", text: e.message })); });
}

function build(body, id, res, argv) {
  const entries = res.tree || res.files.map((path) => ({ path }));
  const viewer = h("div", { class: "snap-file" }, h("p", { class: "muted", text: "choose a file" }));
  const find = h("input", { type: "search", class: "snap-find", placeholder: "filter files (path words)",
    "aria-label": "filter snapshot files" });
  const inText = h("input", { type: "checkbox", "aria-label": "search file contents" });
  const shown = h("span", { class: "muted snap-count" });
  let seq = 0;
  const open = async (entry) => {
    const mine = ++seq;
    clear(viewer).append(h("p", { class: "muted", text: `loading ${entry.path}…` }));
    let r;
    try { r = await api.get(runPath(id, "/code/file"), { path: entry.path }); } catch (e) {
      if (mine === seq) clear(viewer).append(h("p", { class: "error", text: e.message }));
      return;
    }
    const head = h("div", { class: "snap-head" }, h("span", { class: "mono snap-path", text: entry.path }),
      h("span", { class: "muted", text: fmtBytes(r.size) }));
    if (r.binary) {
      if (mine === seq) clear(viewer).append(head, h("p", { class: "muted", text: `(binary file, ${fmtBytes(r.size)})` }));
      return;
    }
    const lines = await codeLines(r.text || "", entry.path);
    if (mine !== seq) return;  // another file was chosen meanwhile
    const note = r.truncated ? h("p", { class: "note truncated",
      text: `Large file: the first ${fmtBytes(r.text.length)} of ${fmtBytes(r.size)} are shown.` }) : "";
    clear(viewer).append(head, note, lines);
  };
  const tree = fileTree(entries, { onOpen: (e) => { setParams({ file: e.path }); open(e); },
    badge: (e) => (e.size !== undefined ? h("span", { class: "muted size", text: fmtBytes(e.size) }) : null) });
  let timer = 0;
  const refilter = async () => {
    const byPath = pathFilter(find.value);
    let pred = byPath;
    if (inText.checked && find.value.trim()) {
      try {
        const hits = new Set((await api.get(runPath(id, "/code/search"), { text: find.value.trim() })).paths);
        pred = (p) => hits.has(p) || (byPath ? byPath(p) : false);
      } catch (e) { shown.textContent = e.message; return; }
    }
    const n = tree.filter(pred);
    shown.textContent = pred ? `${n} of ${tree.size} files` : `${tree.size} files`;
  };
  find.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refilter, inText.checked ? 250 : 0); });
  inText.addEventListener("change", refilter);
  shown.textContent = `${tree.size} files`;
  clear(body).append(
    h("div", { class: "toolbar snap-tools" }, find, res.search ? h("label", null, inText, " contents") : null, shown),
    h("div", { class: "snap" }, h("nav", { class: "snap-tree", "aria-label": "snapshot files" }, tree.el), viewer));
  // The file in the link (#/run/ID?file=PATH), else the run's script or a README.
  const linked = params().get("file");
  const start = entries.some((e) => e.path === linked) ? linked : firstFile(entries, argv);
  if (start) {
    tree.select(start);
    open(entries.find((e) => e.path === start));
  }
}
