// Images: the run page's card per image key (step slider, click to enlarge) and the
// side-by-side view (#/run/<id>/images?runs=a,b&key=k&step=N, or steps=N,M for one run
// across steps). A run without the exact step shows its nearest one, labelled.
import { api, runPath } from "./api.js";
import { clear, h } from "./dom.js";
import { openLightbox, zoomable } from "./lightbox.js";
import { selection, setParams } from "./state.js";

/** The item of `items` (sorted by step) nearest to `step`; ties go to the earlier one. */
export function nearest(items, step) {
  let best = null;
  for (const it of items) if (!best || Math.abs(it.step - step) < Math.abs(best.step - step)) best = it;
  return best;
}

const caption = (it) => `step ${it.step}${it.caption ? ` · ${it.caption}` : ""}${it.replayed ? " · ↺ replayed" : ""}`;
const frames = (id, items) => items.map((it) => ({ src: api.fileUrl(id, it.path), step: it.step, label: caption(it) }));

/** Link to the side-by-side view of `runs` (key and step optional: the first key, the
 * last step). */
export function imagesHref(runs, key, step) {
  const q = new URLSearchParams({ runs: runs.join(",") });
  if (key) q.set("key", key);
  if (step !== undefined && step !== null) q.set("step", String(step));
  return `#/run/${encodeURIComponent(runs[0])}/images?${q.toString().replace(/%2C/g, ",")}`;
}

/** Fetch what `pull --no-media` left on the remote of run `id` (live UI only; a run with
 * nothing left answers at once): {added, note, error}. Opening a run fetches its media. */
export async function fetchRunMedia(id) {
  if (api.readonly) return { added: 0, note: "" };
  try {
    const r = await api.put(runPath(id, "/fetched-media"));
    return { added: r.files_added, note: r.files_added ? `fetched ${r.files_added} media file(s) of this run from ${r.remote}` : "" };
  } catch (e) { return { added: 0, error: true, note: e.message }; }
}

/** The run page's card of one image key: a step slider, click / Enter to enlarge. */
export async function imageCard(id, key) {
  const c = h("section", { class: "card media-card" }, h("h2", { text: `Images: ${key}` }));
  let items = [];
  try { items = (await api.get(runPath(id, "/media"), { key })).items; } catch (e) {
    c.append(h("p", { class: "error", text: e.message }));
    return c;
  }
  if (!items.length) { c.append(h("p", { class: "muted", text: "no images" })); return c; }
  const img = h("img", { alt: key });
  const label = h("div", { class: "muted" });
  const slider = h("input", { type: "range", min: 0, max: items.length - 1, value: items.length - 1, "aria-label": "step" });
  const side = h("a", { class: "side-link", text: "side by side" });
  const show = () => {
    const it = items[Number(slider.value)];
    img.src = api.fileUrl(id, it.path);
    img.dataset.step = it.step;
    label.textContent = `${caption(it)} · ${Number(slider.value) + 1}/${items.length}`;
    // With other runs selected: compare them at this step; alone: this run across steps.
    const others = selection.ids().filter((r) => r !== id);
    side.href = others.length ? imagesHref([id, ...others], key, it.step)
      : `${imagesHref([id], key)}&steps=${[items[0], it, items[items.length - 1]].map((x) => x.step).filter((v, i, a) => a.indexOf(v) === i).join(",")}`;
    side.title = others.length ? "this step in the selected runs" : "this run at several steps";
  };
  slider.addEventListener("input", show);
  zoomable(img, () => openLightbox(frames(id, items), Number(slider.value), {
    onMove: (i) => { slider.value = i; show(); } }));
  show();
  c.append(h("div", { class: "media" }, img, slider, h("div", { class: "media-foot" }, label, side)));
  return c;
}

// One tile of the side-by-side grid: a run's image nearest the asked step.
function tile(id, name, items, step) {
  const it = items.length ? nearest(items, step) : null;
  const head = h("div", { class: "tile-head" }, h("a", { href: `#/run/${encodeURIComponent(id)}`, text: name }));
  if (!it) return h("figure", { class: "tile", "data-run": id }, head, h("p", { class: "muted", text: "no images for this key" }));
  const img = h("img", { alt: `${name} step ${it.step}`, src: api.fileUrl(id, it.path), "data-step": it.step });
  zoomable(img, () => openLightbox(frames(id, items), items.indexOf(it)));
  const off = it.step !== step;
  return h("figure", { class: "tile", "data-run": id, "data-step": it.step }, head, img,
    h("figcaption", { class: off ? "step off" : "step", text: off ? `step ${it.step} (nearest to ${step})` : `step ${it.step}` },
      it.caption ? h("span", { class: "muted", text: ` · ${it.caption}` }) : null));
}

/** The side-by-side images view. */
export async function render(root, { args, params }) {
  const runs = (params.get("runs") || args[0] || "").split(",").filter(Boolean);
  if (!runs.length) { root.append(h("p", { class: "error", text: "no runs: #/run/<id>/images?runs=a,b&key=k&step=N" })); return null; }
  let infos;
  try { infos = await Promise.all(runs.map((r) => api.get(runPath(r)))); } catch (e) {
    root.append(h("p", { class: "error", text: e.message }), h("a", { href: "#/", text: "← runs" }));
    return null;
  }
  const fetched = await Promise.all(infos.map((d) => fetchRunMedia(d.run.id)));
  for (const f of fetched) if (f.error) root.append(h("p", { class: "error media-fetch", text: f.note }));
  if (fetched.some((f) => f.added)) infos = await Promise.all(infos.map((d) => api.get(runPath(d.run.id))));
  const ids = infos.map((d) => d.run.id);
  const keys = [...new Set(infos.flatMap((d) => d.keys.image))].sort();
  let key = params.get("key") || keys[0] || "";
  const keyPick = h("select", { "aria-label": "image key" }, keys.map((k) => h("option", { value: k, text: k, selected: k === key })));
  const stepBox = h("input", { type: "number", class: "step-box", "aria-label": "step", min: 0 });
  const slider = h("input", { type: "range", class: "step-slider", "aria-label": "step slider", min: 0, value: 0 });
  const stepsBox = h("input", { type: "text", class: "steps-box", placeholder: "steps, e.g. 50,100", "aria-label": "steps of the first run" });
  const grid = h("div", { class: "side-grid" });
  root.append(h("a", { href: `#/run/${encodeURIComponent(ids[0])}`, text: `← ${infos[0].run.name}` }),
    h("h1", { class: "run-name", text: `Images side by side${ids.length > 1 ? `: ${ids.length} runs` : ""}` }),
    h("div", { class: "toolbar" }, "key ", keyPick, " step ", stepBox, slider,
      ids.length === 1 ? h("label", null, "or several steps ", stepsBox) : null),
    grid);
  if (!keys.length) { grid.append(h("p", { class: "muted", text: "these runs logged no images" })); return null; }

  const media = new Map();  // run id -> items of the current key
  let allSteps = [];
  async function loadKey() {
    await Promise.all(ids.map(async (id) => {
      try { media.set(id, (await api.get(runPath(id, "/media"), { key })).items); } catch { media.set(id, []); }
    }));
    allSteps = [...new Set([...media.values()].flatMap((items) => items.map((it) => it.step)))].sort((a, b) => a - b);
    slider.max = Math.max(0, allSteps.length - 1);
  }
  function draw() {
    const asked = params.get("step");
    const step = asked !== null && asked !== "" && Number.isFinite(Number(asked)) ? Number(asked) : allSteps[allSteps.length - 1] ?? 0;
    stepBox.value = step;
    const at = allSteps.indexOf(nearest(allSteps.map((s) => ({ step: s })), step)?.step);
    slider.value = Math.max(0, at);
    const steps = ids.length === 1 ? (params.get("steps") || "").split(",").filter((s) => s.trim() !== "" && Number.isFinite(Number(s))).map(Number) : [];
    stepsBox.value = steps.join(",");
    const tiles = steps.length ? steps.map((s) => tile(ids[0], infos[0].run.name, media.get(ids[0]), s))
      : ids.map((id, i) => tile(id, infos[i].run.name, media.get(id), step));
    clear(grid).append(...tiles);
    grid.dataset.step = step;
  }
  const update = (values) => {
    setParams(values);
    for (const [k, v] of Object.entries(values)) if (v === null || v === "") params.delete(k); else params.set(k, String(v));
    draw();
  };
  keyPick.addEventListener("change", async () => {
    key = keyPick.value;
    setParams({ key });
    params.set("key", key);
    await loadKey();
    draw();
  });
  stepBox.addEventListener("change", () => update({ step: stepBox.value, steps: null }));
  slider.addEventListener("input", () => update({ step: allSteps[Number(slider.value)], steps: null }));
  stepsBox.addEventListener("change", () => update({ steps: stepsBox.value.replace(/\s+/g, "") }));
  setParams({ runs: ids, key });
  await loadKey();
  draw();
  return null;
}
