// A chart's read-out at the cursor: the x value and every shown run's (or group's) y,
// sorted by value, each with its colour. Mouse, touch and keyboard reach it alike: focus
// on the plot shows the last point, arrow keys step through the points, Home/End jump.
import { fmtNum, h } from "./dom.js";

/** The tooltip element a chart overlays on its plot (CSSOM styles: the CSP allows them). */
export function tipElement() {
  return h("div", { class: "chart-tip", hidden: true, role: "status", "aria-live": "polite",
    style: { position: "absolute", zIndex: 10, pointerEvents: "none", background: "var(--panel, #fff)",
      color: "var(--fg, #1d2330)", border: "1px solid var(--line, #c9ced6)", borderRadius: "4px",
      padding: "3px 6px", fontSize: "11px", whiteSpace: "nowrap", boxShadow: "0 1px 4px rgba(0,0,0,.15)" } });
}

const present = (v) => typeof v === "number" && Number.isFinite(v);

/** The read-out's lines at data index `idx`: [{series, label, value, color, extra}],
 * largest value first (as the lines lie on the plot), runs without a value last. */
export function tipLines(u, idx) {
  const x = u.data[0][idx];
  const out = [];
  u.series.forEach((s, si) => {
    if (!s.show || !(s.role === "run" || s.role === "mean")) return;
    const v = u.data[si]?.[idx];
    const line = { series: si, label: s.label, value: present(v) ? v : null, color: s.fwColor,
      run: s.runId, group: s.group, extra: "" };
    if (s.role === "mean" && s.fwStats) {
      const st = s.fwStats(x);
      if (st && st.n > 1) {  // one run: no spread to show
        line.extra = s.fwBand === "minmax" ? ` [${fmtNum(st.min)}, ${fmtNum(st.max)}]`
          : ` ± ${fmtNum(st.std)}`;
        line.stats = st;
      }
    }
    out.push(line);
  });
  out.sort((a, b) => (a.value === null) - (b.value === null) || (b.value ?? 0) - (a.value ?? 0));
  return out;
}

/** Fill `tip` for uPlot `u` at its cursor (hidden when the cursor is off the plot). */
export function showTip(tip, u, idx, xText) {
  if (idx === null || idx === undefined || u.cursor.left < 0) { tip.hidden = true; return; }
  const rows = [h("div", { class: "tip-x", text: xText(u.data[0][idx]) })];
  for (const l of tipLines(u, idx)) {
    const data = l.run ? { run: l.run } : { group: l.group };
    rows.push(h("div", { class: l.run ? "tip-run" : "tip-run tip-group", dataset: data },
      h("span", { class: "swatch", style: { background: l.color } }), `${l.label} `,
      h("b", { class: "mono", text: l.value === null ? "—" : fmtNum(l.value) }),
      l.extra ? h("span", { class: "mono muted tip-spread", text: l.extra }) : null));
  }
  tip.replaceChildren(...rows);
  tip.hidden = false;
  // Beside the cursor on the side with room, never past the plot's edges (a phone's narrow
  // plot would otherwise push the page wider than the screen).
  const w = u.over.clientWidth, x = u.cursor.left;
  tip.style.whiteSpace = "nowrap";
  tip.style.maxWidth = `${w}px`;
  if (tip.offsetWidth >= w) tip.style.whiteSpace = "normal";
  const tw = tip.offsetWidth;
  let left = x + 14;
  if (left + tw > w) left = x - 14 - tw >= 0 ? x - 14 - tw : Math.max(0, w - tw);
  Object.assign(tip.style, { top: `${Math.max(0, u.cursor.top - 10)}px`, left: `${left}px`, right: "" });
}

function lastIndex(u) {
  for (let i = u.data[0].length - 1; i >= 0; i--) {
    if (u.series.some((s, si) => si > 0 && s.show && present(u.data[si]?.[i]))) return i;
  }
  return u.data[0].length - 1;
}

function moveTo(u, idx) {
  const n = u.data[0].length;
  if (!n) return;
  const i = Math.max(0, Math.min(n - 1, idx));
  const left = u.valToPos(u.data[0][i], "x");
  u.setCursor({ left: Math.max(0, Math.min(u.over.clientWidth - 1, left)), top: u.over.clientHeight / 2 });
}

/** Keyboard and touch access to the cursor of uPlot `u` inside focusable `host`. */
export function attachCursorKeys(host, u, onLeave) {
  host.tabIndex = 0;
  host.setAttribute("aria-label", "chart: arrow keys move the read-out between points");
  let at = null;
  const current = () => (u.cursor.idx ?? at ?? lastIndex(u));
  // Keyboard focus only: a click on the plot (zoom drag, hover) keeps the mouse's cursor.
  host.onfocus = () => {
    if (!host.matches(":focus-visible")) return;
    at = lastIndex(u);
    moveTo(u, at);
  };
  host.onblur = () => { at = null; u.setCursor({ left: -10, top: -10 }); onLeave(); };
  host.onkeydown = (e) => {
    const step = { ArrowLeft: -1, ArrowRight: 1, PageDown: -10, PageUp: 10 }[e.key];
    let idx = null;
    if (step) idx = current() + step;
    else if (e.key === "Home") idx = 0;
    else if (e.key === "End") idx = lastIndex(u);
    else return;
    e.preventDefault();
    at = Math.max(0, Math.min(u.data[0].length - 1, idx));
    moveTo(u, at);
  };
  // A touch shows the read-out where the finger is; scrolling the page still works.
  const touch = (e) => {
    const t = e.touches[0];
    if (!t) return;
    const r = u.over.getBoundingClientRect();
    u.setCursor({ left: t.clientX - r.left, top: t.clientY - r.top });
  };
  u.over.addEventListener("touchstart", touch, { passive: true });
  u.over.addEventListener("touchmove", touch, { passive: true });
}
