// The run page: args, metrics, environment, git and code snapshot (with a diff against
// another run), images with a step slider, artifacts, histograms.
import { api, runPath } from "./api.js";
import { clear, fmtDuration, fmtNum, fmtTime, fmtValue, h, statusBadge } from "./dom.js";
import { showCodeDiff } from "./diffview.js";
import { heatmap } from "./heatmap.js";
import { fetchRunMedia, imageCard } from "./media.js";
import { snapshotBrowser } from "./snapshot.js";
import { params, selection, setParams } from "./state.js";

function kv(obj, keys) {
  const shown = (keys || Object.keys(obj)).filter((k) => obj[k] !== undefined && obj[k] !== null && obj[k] !== "");
  if (!shown.length) return h("p", { class: "muted", text: "nothing recorded" });
  return h("table", { class: "kv" }, shown.map((k) =>
    h("tr", null, h("td", { text: k }), h("td", { text: fmtValue(obj[k]) }))));
}

// Who made the run, on which machine, and the remote it was pulled from (none: made here).
// What a run says about itself may come from anyone: text only, long names cut.
function whoSpans(row) {
  const cut = (v) => (v.length > 60 ? `${v.slice(0, 59)}…` : v);
  const span = (label, v, cls) => (v ? h("span", { class: cls, title: `${label} ${v}`, text: `${label} ${cut(String(v))}` }) : null);
  return [span("by", row.author, "muted who-author"), span("on", row.host, "muted who-host"),
    span("pulled from", row.origin, "chip who-origin")];
}

function card(title, ...body) { return h("section", { class: "card" }, h("h2", { text: title }), ...body); }

export async function render(root, { args, params }) {
  // #/run/<id>/images?runs=a,b&key=k&step=N: the side-by-side images view (media.js).
  if (args[1] === "images") return (await import("./media.js")).render(root, { args, params });
  const ref = args[0];
  let d;
  try { d = await api.get(runPath(ref)); } catch (e) {
    root.append(h("p", { class: "error", text: e.message }), h("a", { href: "#/", text: "← runs" }));
    return null;
  }
  const row = d.run, meta = d.meta || {}, id = row.id;
  const selBox = h("input", { type: "checkbox", checked: selection.has(id) });
  selBox.addEventListener("change", () => selection.toggle(id, selBox.checked));
  const head = h("div", null,
    h("a", { href: "#/", text: "← runs" }),
    h("h1", { class: "run-name", text: row.name }),
    h("div", { class: "toolbar" }, statusBadge(row.status), h("span", { class: "mono muted", text: id }),
      h("span", { text: `started ${fmtTime(row.created)}` }), h("span", { text: `ran ${fmtDuration(row.duration)}` }),
      row.project ? h("span", { class: "muted", text: `project ${row.project}` }) : null,
      whoSpans(row),
      (row.tags || []).map((t) => h("span", { class: "chip", text: t })),
      h("label", null, selBox, " selected"),
      h("a", { href: `#/charts?runs=${encodeURIComponent(id)}`, text: "charts" }),
      d.models.map((m) => h("a", { href: `#/model/${encodeURIComponent(id)}${m ? `?name=${encodeURIComponent(m)}` : ""}`,
        text: m ? `model ${m}` : "model graph" }))));
  root.append(head);
  if (row.error) root.append(card("Error", h("pre", { class: "code", text: row.error })));

  const grid = h("div", { class: "cols" });
  root.append(grid);

  // Notes (editable) and visibility.
  const notes = h("textarea", { rows: 3, style: { width: "100%" }, readOnly: api.readonly, "aria-label": "notes" });
  // A textarea's text is its `value` property: set as an attribute it would show empty,
  // and the next save would erase the stored note.
  notes.value = row.notes || "";
  const saved = h("span", { class: "muted note-status" });
  const noteCard = card("Notes", notes, saved);
  if (!api.readonly) {
    noteCard.append(" ",
      h("button", { text: "Save note", onclick: async () => {
        saved.textContent = "saving…";
        try {
          const res = await api.patch(runPath(id), { notes: notes.value });
          row.notes = res.run ? res.run.notes : notes.value;
          saved.textContent = "saved";
        } catch (e) { saved.textContent = `not saved: ${e.message}`; }
      } }), " ",
      h("button", { text: row.hidden ? "Unhide run" : "Hide run", onclick: async (e) => {
        row.hidden = !row.hidden;
        await api.patch(runPath(id), { hidden: row.hidden });
        e.target.textContent = row.hidden ? "Unhide run" : "Hide run";
      } }));
  }
  grid.append(noteCard);

  grid.append(card(`Args (${Object.keys(row.args).length})`, kv(row.args, Object.keys(row.args).sort())));

  const watch = (k) => /^(act|grad|param)\//.test(k);
  const chartKeys = [...d.keys.chart.filter((k) => !watch(k)), ...d.keys.chart.filter(watch)];
  const metricRows = chartKeys.map((k) => {
    const s = row.metrics[k];
    return h("tr", null, h("td", null, h("a", { href: `#/charts?runs=${encodeURIComponent(id)}&m=${encodeURIComponent(k)}`, text: k })),
      h("td", { class: "num", text: fmtNum(s.last) }), h("td", { class: "num", text: fmtNum(s.min) }),
      h("td", { class: "num", text: fmtNum(s.max) }), h("td", { class: "num", text: s.count }),
      h("td", null, s.replayed ? h("span", { class: "replayed", text: "↺ replayed" }) : ""));
  });
  grid.append(card(`Metrics (${d.keys.chart.length})`, h("div", { style: { maxHeight: "320px", overflow: "auto" } },
    h("table", { class: "kv legend" }, h("tr", { class: "muted" }, h("td", { text: "key" }), h("td", { text: "last" }),
      h("td", { text: "min" }), h("td", { text: "max" }), h("td", { text: "count" }), h("td")), metricRows))));

  // host and user as the index keeps them (run.json may come from anyone: cut, no controls).
  const env = { host: row.host ?? meta.host, user: row.author ?? meta.user, python: meta.python, platform: meta.platform,
    executable: meta.executable, cwd: meta.cwd, argv: (meta.argv || []).join(" "),
    gpu: meta.gpu ? JSON.stringify(meta.gpu) : "none", pid: meta.pid };
  const pk = meta.packages || {};
  grid.append(card("Environment", kv(env),
    h("details", null, h("summary", { text: `packages (${Object.keys(pk).length})` }), kv(pk, Object.keys(pk).sort()))));
  import("./system.js").then((m) => m.systemPanel(grid, row)).catch((e) => grid.append(card("System", h("p", { class: "error", text: e.message }))));

  const git = meta.git || {};
  const gitCard = card("Git and code", kv({ head: git.head, branch: git.branch, dirty: git.dirty,
    snapshot: git.snapshot, root: git.root, skipped: (git.skipped || []).map((s) => s[0]).join(", ") || undefined,
    error: git.error }));
  grid.append(gitCard);
  if (d.snapshot) {  // full width: a file tree beside the file (stacked when narrow)
    const snap = h("section", { class: "card wide code-card" }, h("h2", { text: "Code snapshot" }));
    grid.append(snap);
    snapshotBrowser(snap, id, meta.argv);
  }
  grid.append(diffCard(id));
  import("./lineage.js").then((m) => m.lineageCard(grid, id)).catch(() => null);  // inputs and consumers DAG
  import("./family.js").then((m) => m.familyPanel(grid, id)).catch(() => null);  // forks tree, segments

  // A run pulled with --no-media gets its media from its remote now (media.js).
  const got = await fetchRunMedia(id);
  if (got.note) grid.append(card("Media", h("p", { class: got.error ? "error media-fetch" : "muted media-fetch", text: got.note })));
  const keys = got.added ? (await api.get(runPath(id))).keys : d.keys;
  for (const key of keys.image) grid.append(await imageCard(id, key));
  for (const key of keys.artifact) grid.append(await artifactCard(id, key));
  for (const key of d.keys.hist.slice(0, 12)) {
    const c = card(`Histogram ${key}`, h("p", { class: "muted", text: "loading…" }));
    grid.append(c);
    api.get(runPath(id, "/hist"), { key, points: 300 }).then((data) => c.lastChild.replaceWith(heatmap(data)))
      .catch((e) => { c.lastChild.textContent = e.message; });
  }
  return null;
}

async function artifactCard(id, key) {
  const c = card(`Artifacts: ${key}`);
  try {
    const { items } = await api.get(runPath(id, "/media"), { key });
    c.append(h("table", { class: "kv" }, items.map((it) => h("tr", null,
      h("td", { text: `step ${it.step}` }),
      h("td", null, it.dir || it.exported === false ? h("span", { text: `${it.path} (${fmtNum(it.bytes)} bytes${it.dir ? ", folder" : ", not exported"})` })
        : h("a", { href: api.fileUrl(id, it.path), download: "", text: it.path.split("/").pop() }),
      ` ${fmtNum(it.bytes)} B`)))));
  } catch (e) { c.append(h("p", { class: "error", text: e.message })); }
  return c;
}

// Diff against another run picked from the project's runs (newest first): args as
// `flowillower diff` shows them, then the code diff or why there is none.
function diffCard(id) {
  // maxWidth: a long run name in the list must not widen a 390 px page.
  const pick = h("select", { "aria-label": "diff against run", class: "diff-pick", style: { maxWidth: "100%" } },
    h("option", { value: "", text: "loading runs…" }));
  const find = h("input", { type: "search", placeholder: "find (name or id)", "aria-label": "find the other run" });
  const out = h("div", { class: "diff-out" });
  const c = card("Diff against another run", h("div", { class: "toolbar" }, "other run ", find, pick), out);
  c.classList.add("wide", "diff-card");
  let all = [];
  // Options for the runs matching every typed word; a long list is cut at 500 (the
  // search box narrows it).
  const fill = () => {
    const words = find.value.toLowerCase().split(/\s+/).filter(Boolean);
    const hits = all.filter((r) => words.every((w) => `${r.name} ${r.id}`.toLowerCase().includes(w)));
    clear(pick).append(h("option", { value: "", text: hits.length ? `choose a run… (${hits.length})` : "no run matches" }),
      ...hits.slice(0, 500).map((r) => h("option", { value: r.id, text: `${r.name} · ${r.id}` })));
  };
  find.addEventListener("input", fill);
  api.get("runs", { sort: "created", desc: true, limit: 5000, hidden: true }).then((res) => {
    all = res.rows.filter((r) => r.id !== id);
    fill();
    const linked = params().get("diff");  // #/run/ID?diff=ID2: the link's diff
    if (linked && all.some((r) => r.id === linked)) {
      if (![...pick.options].some((o) => o.value === linked)) { find.value = linked; fill(); }
      pick.value = linked;
      pick.dispatchEvent(new Event("change"));
    }
  }).catch((e) => { clear(pick).append(h("option", { value: "", text: e.message })); });
  pick.addEventListener("change", async () => {
    const other = params().get("diff");
    setParams(other === pick.value ? { diff: pick.value } : { diff: pick.value, dfile: null });
    if (!pick.value) { clear(out); return; }
    clear(out).append(h("p", { class: "muted", text: "…" }));
    const asked = pick.value;  // a slower answer for an earlier pick must not win
    try {
      const res = await api.get("diff", { a: asked, b: id });
      if (asked === pick.value) showDiff(out, res);
    } catch (e) { if (asked === pick.value) clear(out).append(h("p", { class: "error", text: e.message })); }
  });
  return c;
}

function showDiff(out, res) {
  const show = (v) => (v === undefined ? "(unset)" : fmtValue(v));
  clear(out).append(h("h3", { text: `args ${res.a} → ${res.b}` }), res.args.length
    ? h("table", { class: "kv arg-diff" }, res.args.map((x) => h("tr", { class: `arg-${x.change}` },
      h("td", { class: "mono", text: x.key }), h("td", { class: "muted", text: x.change }),
      h("td", { class: "del", text: show(x.a) }), h("td", { class: "add", text: show(x.b) }))))
    : h("p", { class: "muted", text: "(same args)" }));
  out.append(h("h3", { text: "code" }));
  if (res.code_error) { out.append(h("p", { class: "muted code-error", text: res.code_error })); return; }
  showCodeDiff(out, res.diff, res.truncated, { start: params().get("dfile"),
    onOpen: (path) => setParams({ dfile: path }) })
    .catch((e) => out.append(h("p", { class: "error", text: e.message })));
}
