// Args versus results: a scatter of one column against another (usually an arg against
// a final metric), or parallel coordinates over several columns, for all matched runs.
import { api } from "./api.js";
import { debounce, fmtNum, fmtValue, h } from "./dom.js";
import { chartTheme, labelColors, onTheme, themeColor } from "./palette.js";
import { params, prefs, setParams, setPrefs } from "./state.js";

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// A column as positions in [0, 1]: numbers linearly (log optional), text as categories.
function scale(values, log = false) {
  const nums = values.filter((v) => typeof v === "number" && Number.isFinite(v) && (!log || v > 0));
  const isNum = nums.length && nums.length >= values.filter((v) => v !== null && v !== undefined).length;
  if (isNum) {
    const f = log ? Math.log10 : (v) => v;
    let lo = Math.min(...nums.map(f)), hi = Math.max(...nums.map(f));
    if (lo === hi) { lo -= 1; hi += 1; }
    const pos = (v) => (typeof v === "number" && Number.isFinite(v) && (!log || v > 0) ? (f(v) - lo) / (hi - lo) : null);
    const ticks = log ? niceTicks(lo, hi).map((t) => [(t - lo) / (hi - lo), fmtNum(10 ** t)])
      : niceTicks(lo, hi).map((t) => [(t - lo) / (hi - lo), fmtNum(t)]);
    return { pos, ticks, numeric: true };
  }
  const cats = [...new Set(values.filter((v) => v !== null && v !== undefined).map(fmtValue))].sort();
  const idx = new Map(cats.map((c, i) => [c, i]));
  const n = Math.max(1, cats.length - 1);
  const pos = (v) => (v === null || v === undefined ? null : cats.length === 1 ? 0.5 : idx.get(fmtValue(v)) / n);
  return { pos, ticks: cats.slice(0, 30).map((c) => [cats.length === 1 ? 0.5 : idx.get(c) / n, c]), numeric: false };
}

// Blue -> orange for a numeric colour column: the theme's first two palette entries, so the
// ends are lighter on a dark background.
function gradient(t) {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).slice(0, 3).map(Number);
  const p = chartTheme().palette;
  const a = rgb(p[0]), b = rgb(p[1]);
  if (a.length < 3 || b.length < 3) return p[0];
  return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * t)).join(",")})`;
}

export async function render(root) {
  let cols;
  const url = params();  // a link's settings win over this browser's last ones
  const q = url.get("q") ?? prefs("q", "");
  try { cols = (await api.get("runs", { limit: 1, q })).columns; } catch (e) {
    root.append(h("p", { class: "error", text: e.message }));
    return null;
  }
  const usable = cols.filter((c) => c.group !== "run" || ["duration", "created", "status"].includes(c.key));
  const args = usable.filter((c) => c.group === "args" && !c.constant);
  const metrics = usable.filter((c) => c.group === "metrics" && !c.metric.startsWith("act/") && !c.metric.startsWith("grad/") && !c.metric.startsWith("param/"));
  const opt = (c, sel) => h("option", { value: c.key, text: `${c.group === "args" ? "arg " : ""}${c.label}`, selected: c.key === sel });
  const st = {
    mode: url.get("mode") ?? prefs("cmp.mode", "scatter"),
    x: url.get("x") ?? prefs("cmp.x", args[0]?.key || usable[0]?.key),
    y: url.get("y") ?? prefs("cmp.y", metrics.find((m) => m.stat === "last")?.key || usable[0]?.key),
    c: url.get("c") ?? prefs("cmp.c", ""), logx: url.get("logx") === "true", logy: url.get("logy") === "true",
  };
  const modeSel = h("select", null, ["scatter", "parallel"].map((m) => h("option", { value: m, text: m === "scatter" ? "scatter" : "parallel coordinates", selected: m === st.mode })));
  const xSel = h("select", { "aria-label": "x column" }, usable.map((c) => opt(c, st.x)));
  const ySel = h("select", { "aria-label": "y column" }, usable.map((c) => opt(c, st.y)));
  const cSel = h("select", { "aria-label": "colour" }, h("option", { value: "", text: "—" }), usable.map((c) => opt(c, st.c)));
  const logx = h("input", { type: "checkbox", checked: st.logx }), logy = h("input", { type: "checkbox", checked: st.logy });
  const search = h("input", { type: "search", class: "search", value: q, placeholder: "filter runs (same syntax as the runs table)" });
  const plot = h("div", { class: "pc" });
  const note = h("div", { class: "muted" });
  const key = h("div", { class: "cmp-key" });  // the categories of a text colour column
  root.append(h("div", { class: "toolbar" }, modeSel, h("label", null, "x ", xSel, " ", logx, " log"),
    h("label", null, "y ", ySel, " ", logy, " log"), h("label", null, "colour ", cSel),
    h("div", { class: "grow" }, search)), note, key, plot);
  const tip = h("div", { class: "tooltip", hidden: true });
  document.body.append(tip);

  let drawn = 0;  // the latest draw's number: an older answer arriving late is dropped
  async function draw() {
    const mine = ++drawn;
    Object.entries({ mode: st.mode, x: st.x, y: st.y, c: st.c }).forEach(([k, v]) => setPrefs(`cmp.${k}`, v));
    setParams({ mode: st.mode, x: st.x, y: st.y, c: st.c, logx: String(st.logx), logy: String(st.logy), q: search.value.trim() });
    const dims = st.mode === "scatter" ? [st.x, st.y, st.c].filter(Boolean)
      : [...new Set([...args.map((a) => a.key).slice(0, 10), st.y])];
    let data;
    try { data = await api.get("points", { dim: dims, q: search.value.trim() }); } catch (e) {
      if (mine === drawn) note.textContent = e.message;
      return;
    }
    if (mine !== drawn) return;  // the settings changed while this answer was on its way
    note.textContent = `${data.matched} runs`;
    if (st.mode === "scatter") scatter(data); else parallel(data, dims);
  }

  function canvasFor() {
    const c = h("canvas");
    plot.replaceChildren(c);
    const w = plot.clientWidth || 900, hgt = 420, dpr = window.devicePixelRatio || 1;
    c.width = w * dpr; c.height = hgt * dpr;
    const ctx = c.getContext("2d");
    ctx.scale(dpr, dpr);
    return { c, ctx, w, hgt };
  }

  function categoryColors(values) {
    const col = usable.find((c) => c.key === st.c);
    const name = col?.label || st.c;
    const cats = [...new Set(values.filter((v) => v !== null && v !== undefined).map(fmtValue))].sort();
    const colors = labelColors(cats.map((c) => `${name}=${c}`));
    const byCat = new Map(cats.map((c) => [c, colors.get(`${name}=${c}`)]));
    key.replaceChildren(...cats.slice(0, 30).map((c) => h("span", { class: "chip", dataset: { cat: c } },
      h("span", { class: "swatch", style: { background: byCat.get(c) } }), `${name}=${c}`)));
    return byCat;
  }

  function scatter(data) {
    key.replaceChildren();
    const { c, ctx, w, hgt } = canvasFor();
    const xs = scale(data.dims[st.x], st.logx), ys = scale(data.dims[st.y], st.logy);
    const cs = st.c ? scale(data.dims[st.c]) : null;
    // Categories take the colours the charts page gives the same groups (`lr=0.001`).
    const catColor = cs && !cs.numeric ? categoryColors(data.dims[st.c]) : null;
    const L = 80, R = 20, T = 14, B = 40, pw = w - L - R, ph = hgt - T - B;
    const theme = chartTheme();  // the theme's ink (CSS variables), not a filter over fixed colours
    ctx.font = "11px system-ui"; ctx.fillStyle = theme.axis; ctx.strokeStyle = theme.grid;
    const pad = (p) => 0.03 + 0.94 * p;
    xs.ticks.forEach(([p, t]) => { const x = L + pad(p) * pw; ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke(); ctx.fillText(String(t).slice(0, 14), x - 12, T + ph + 14); });
    ys.ticks.forEach(([p, t]) => { const y = T + ph - pad(p) * ph; ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke(); ctx.fillText(String(t).slice(0, 10), 22, y + 4); });
    ctx.fillStyle = theme.text;
    ctx.fillText(xSel.selectedOptions[0]?.text || st.x, L + pw / 2 - 30, hgt - 6);
    ctx.save(); ctx.translate(12, T + ph / 2 + 40); ctx.rotate(-Math.PI / 2);
    ctx.fillText(ySel.selectedOptions[0]?.text || st.y, 0, 0); ctx.restore();
    const pts = [];
    data.ids.forEach((id, i) => {
      const px = xs.pos(data.dims[st.x][i]), py = ys.pos(data.dims[st.y][i]);
      if (px === null || py === null) return;
      const jitter = xs.numeric ? 0 : ((i * 7919) % 100) / 100 * 0.02 - 0.01;
      const x = L + (0.03 + 0.94 * (px + jitter)) * pw, y = T + ph - (0.03 + 0.94 * py) * ph;
      const cv = cs ? cs.pos(data.dims[st.c][i]) : null;
      // Without a colour column a run keeps the colour it has on the charts page.
      const cat = catColor ? catColor.get(fmtValue(data.dims[st.c][i])) : null;
      ctx.fillStyle = cv === null ? themeColor(id) : cs.numeric ? gradient(cv) : cat;
      ctx.globalAlpha = 0.8;
      ctx.beginPath(); ctx.arc(x, y, 4, 0, 7); ctx.fill();
      pts.push([x, y, i]);
    });
    ctx.globalAlpha = 1;
    const nearest = (e) => {
      const r = c.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
      let best = null, bd = 64;
      for (const p of pts) { const d = (p[0] - mx) ** 2 + (p[1] - my) ** 2; if (d < bd) { bd = d; best = p; } }
      return best;
    };
    c.addEventListener("mousemove", (e) => {
      const p = nearest(e);
      if (!p) { tip.hidden = true; return; }
      const i = p[2];
      tip.hidden = false;
      tip.textContent = `${data.names[i]} · x=${fmtValue(data.dims[st.x][i])} · y=${fmtValue(data.dims[st.y][i])}`;
      Object.assign(tip.style, { left: `${e.clientX + 12}px`, top: `${e.clientY + 12}px` });
    });
    c.addEventListener("mouseleave", () => { tip.hidden = true; });
    c.addEventListener("click", (e) => { const p = nearest(e); if (p) location.hash = `#/run/${encodeURIComponent(data.ids[p[2]])}`; });
  }

  function parallel(data, dims) {
    key.replaceChildren();
    const { ctx, w, hgt } = canvasFor();
    const scales = dims.map((k) => scale(data.dims[k]));
    const L = 40, R = 60, T = 24, B = 20, pw = w - L - R, ph = hgt - T - B;
    const ax = (j) => L + (dims.length > 1 ? (j / (dims.length - 1)) * pw : pw / 2);
    const last = scales[scales.length - 1];
    const theme = chartTheme();
    ctx.lineWidth = 1;
    // Opaque enough to read on either theme when few; faint when many lines overlap.
    ctx.globalAlpha = data.ids.length > 2000 ? 0.15 : data.ids.length > 200 ? 0.4 : 0.8;
    data.ids.forEach((_, i) => {
      const t = last.pos(data.dims[dims[dims.length - 1]][i]);
      ctx.strokeStyle = t === null ? theme.axis : gradient(t);
      ctx.beginPath();
      let started = false;
      dims.forEach((k, j) => {
        const p = scales[j].pos(data.dims[k][i]);
        if (p === null) { started = false; return; }
        const x = ax(j), y = T + ph - p * ph;
        if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
    });
    ctx.globalAlpha = 1;
    ctx.font = "11px system-ui";
    dims.forEach((k, j) => {
      const x = ax(j);
      ctx.strokeStyle = theme.axis; ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke();
      ctx.fillStyle = theme.text;
      ctx.fillText(k.replace(/^arg:/, "").slice(0, 18), x - 20, T - 8);
      ctx.fillStyle = theme.axis;
      scales[j].ticks.slice(0, 8).forEach(([p, t]) => ctx.fillText(String(t).slice(0, 10), x + 3, T + ph - p * ph + 4));
    });
  }

  [modeSel, xSel, ySel, cSel].forEach((s) => s.addEventListener("change", () => {
    st.mode = modeSel.value; st.x = xSel.value; st.y = ySel.value; st.c = cSel.value; draw();
  }));
  logx.addEventListener("change", () => { st.logx = logx.checked; draw(); });
  logy.addEventListener("change", () => { st.logy = logy.checked; draw(); });
  search.addEventListener("input", debounce(() => { setPrefs("q", search.value.trim()); draw(); }, 300));
  await draw();
  const offTheme = onTheme(() => draw());  // repaint in the new theme's colours
  return () => { tip.remove(); offTheme(); };
}
