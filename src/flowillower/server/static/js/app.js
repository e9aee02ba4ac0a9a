// Router: hash routes (work on any static host), one module per page.
import { clear, h } from "./dom.js";
import { MODE } from "./api.js";
import { selection, setParam } from "./state.js";
import { initTheme } from "./theme.js";
import { initViews } from "./views.js";

const PAGES = {
  "": () => import("./runs.js"),
  charts: () => import("./charts.js"),
  compare: () => import("./compare.js"),
  run: () => import("./run.js"),
  model: () => import("./model.js"),
  images: () => import("./media.js"),
};

let current = null;  // the page's cleanup function

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "", args: parts.slice(1), params: new URLSearchParams(qs || "") };
}

// The selection travels in every page's URL (sel=id,id), so a copied link shows the
// same runs in a browser that never saw them; without sel the local selection is kept.
function syncSelection(params) {
  const sel = params.get("sel");
  if (sel !== null) {
    const list = sel.split(",").filter(Boolean);
    const cur = selection.ids();
    if (list.length !== cur.length || list.some((id) => !selection.has(id))) selection.set(list);
  } else if (selection.size()) {
    setParam("sel", selection.ids());
  }
}

async function route() {
  const { page, args, params } = parseHash();
  syncSelection(params);
  const load = PAGES[page] || PAGES[""];
  document.querySelectorAll("nav a").forEach((a) => {
    a.classList.toggle("active", (a.dataset.page === "runs" ? "" : a.dataset.page) === page);
  });
  if (current) { try { current(); } catch (e) { console.error(e); } current = null; }
  const root = clear(document.getElementById("view"));
  try {
    const mod = await load();
    current = (await mod.render(root, { args, params })) || null;
  } catch (err) {
    console.error(err);
    root.append(h("p", { class: "error", text: `Could not show this page: ${err.message}` }));
    const serve = window.flowillowerServe;  // set by index.html's inline script
    if (MODE === "static" && location.protocol === "file:" && serve) {
      root.append(h("p", { text: "Serve this folder instead of opening the file:" }),
        h("pre", {}, h("code", { text: serve.command })));
    }
  }
}

function showSelection() {
  const n = selection.size();
  const el = document.getElementById("sel-info");
  clear(el);
  if (n) el.append(`${n} selected · `, h("a", { href: "#/charts", text: "chart them" }));
}

function start() {
  // Every module loaded: tell index.html's start-up watchdog the app is running.
  document.documentElement.setAttribute("data-fw-started", "");
  initTheme();  // dark/light theme and its header toggle (theme.js)
  initViews();  // the header's saved-views menu (views.js)
  document.getElementById("mode-info").textContent =
    MODE === "static" ? "static export (read-only)" : "";
  selection.onChange(showSelection);
  selection.onChange(() => setParam("sel", selection.ids()));
  showSelection();
  window.addEventListener("hashchange", route);
  route();
}

// Opened from a file, the bundled copy of this module (export.py) and, in a browser
// that allows modules there, this module itself may both run: start once.
if (!document.documentElement.hasAttribute("data-fw-started")) start();
