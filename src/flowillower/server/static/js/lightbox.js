// An enlarged image in a modal dialog: the file at full resolution, fitted to the window,
// zoomed with the wheel or +/- (around the cursor), panned by dragging, arrow keys to the
// previous / next step of the same key, Escape (or the close button) to leave.
import { h } from "./dom.js";

const MIN = 0.05, MAX = 64;  // zoom limits (screen px per image px)

/**
 * Open `frames` ([{src, label, step}]) at `index` in a lightbox dialog; returns the
 * dialog (removed from the page when closed). `onMove(index)` hears arrow-key moves.
 */
export function openLightbox(frames, index = 0, { onMove = null } = {}) {
  let at = Math.max(0, Math.min(index, frames.length - 1));
  let scale = 1, x = 0, y = 0, fitted = true;
  const img = h("img", { class: "lb-img", alt: "" });
  img.draggable = false;  // the browser's image drag-and-drop would cancel the pan
  const stage = h("div", { class: "lb-stage" }, img);
  const label = h("span", { class: "lb-label" });
  const zoomText = h("span", { class: "lb-zoom muted" });
  const btn = (text, title, fn) => h("button", { type: "button", text, title, "aria-label": title, onclick: fn });
  const prev = btn("‹", "previous step (←)", () => move(-1));
  const next = btn("›", "next step (→)", () => move(1));
  const dlg = h("dialog", { class: "lightbox", "aria-label": "enlarged image" },
    h("div", { class: "lb-bar" }, prev, next, label, zoomText,
      btn("−", "zoom out (-)", () => zoomBy(1 / 1.25)), btn("+", "zoom in (+)", () => zoomBy(1.25)),
      btn("fit", "fit to window (0)", fit), btn("1:1", "actual size (1)", () => zoomTo(1)),
      btn("×", "close (Escape)", () => dlg.close())),
    stage);

  const apply = () => {
    img.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    img.style.imageRendering = scale >= 2 ? "pixelated" : "auto";  // enlarged: crisp pixels
    zoomText.textContent = `${Math.round(scale * 100)}%`;
    dlg.dataset.scale = scale.toFixed(4);
  };
  // Fit the whole image in the stage (small images grow: pixels stay crisp).
  function fit() {
    const w = img.naturalWidth, hh = img.naturalHeight;
    if (!w || !hh) return;
    const r = stage.getBoundingClientRect();
    scale = Math.max(MIN, Math.min(MAX, r.width / w, r.height / hh));
    x = (r.width - w * scale) / 2;
    y = (r.height - hh * scale) / 2;
    fitted = true;
    apply();
  }
  // Zoom keeping the image point under (cx, cy) (stage coordinates) in place.
  function zoomTo(s, cx, cy) {
    const r = stage.getBoundingClientRect();
    if (cx === undefined) { cx = r.width / 2; cy = r.height / 2; }
    const k = Math.max(MIN, Math.min(MAX, s)) / scale;
    x = cx - (cx - x) * k;
    y = cy - (cy - y) * k;
    scale *= k;
    fitted = false;
    apply();
  }
  const zoomBy = (f, cx, cy) => zoomTo(scale * f, cx, cy);

  function show() {
    const f = frames[at];
    dlg.dataset.step = f.step ?? "";
    label.textContent = `${f.label || ""}${frames.length > 1 ? ` · ${at + 1}/${frames.length}` : ""}`;
    prev.disabled = at === 0;
    next.disabled = at === frames.length - 1;
    const keep = !fitted;  // a chosen zoom stays while stepping through the key
    img.onload = () => { if (!keep) fit(); else apply(); };
    img.src = f.src;
  }
  function move(d) {
    const to = at + d;
    if (to < 0 || to >= frames.length) return;
    at = to;
    show();
    if (onMove) onMove(at);
  }

  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    zoomBy(e.deltaY > 0 ? 1 / 1.2 : 1.2, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  // One pointer drags; two (a pinch on a touch screen) zoom around their midpoint.
  const pointers = new Map();
  let drag = null, pinch = null;
  const spread = () => {
    const [p, q] = [...pointers.values()];
    return [Math.hypot(p[0] - q[0], p[1] - q[1]), (p[0] + q[0]) / 2, (p[1] + q[1]) / 2];
  };
  stage.addEventListener("pointerdown", (e) => {
    pointers.set(e.pointerId, [e.clientX, e.clientY]);
    stage.setPointerCapture(e.pointerId);
    if (pointers.size === 2) { drag = null; pinch = spread()[0]; } else drag = [e.clientX, e.clientY, x, y];
  });
  stage.addEventListener("pointermove", (e) => {
    if (!pointers.has(e.pointerId)) return;
    pointers.set(e.pointerId, [e.clientX, e.clientY]);
    if (pinch && pointers.size === 2) {
      const [d, mx, my] = spread(), r = stage.getBoundingClientRect();
      if (d > 0 && pinch > 0) zoomBy(d / pinch, mx - r.left, my - r.top);
      pinch = d;
      return;
    }
    if (!drag) return;
    x = drag[2] + e.clientX - drag[0];
    y = drag[3] + e.clientY - drag[1];
    fitted = false;
    apply();
  });
  const lift = (e) => { pointers.delete(e.pointerId); drag = null; if (pointers.size < 2) pinch = null; };
  stage.addEventListener("pointerup", lift);
  stage.addEventListener("pointercancel", lift);
  dlg.addEventListener("keydown", (e) => {
    const keys = { ArrowLeft: () => move(-1), ArrowRight: () => move(1), "+": () => zoomBy(1.25),
      "=": () => zoomBy(1.25), "-": () => zoomBy(1 / 1.25), 0: fit, 1: () => zoomTo(1) };
    if (keys[e.key] && !e.ctrlKey && !e.metaKey && !e.altKey) { e.preventDefault(); keys[e.key](); }
  });
  const refit = () => { if (fitted) fit(); };
  window.addEventListener("resize", refit);
  // Escape closes a modal dialog natively ("cancel", then "close"); so does leaving the page.
  const leave = () => dlg.close();
  window.addEventListener("hashchange", leave);
  dlg.addEventListener("close", () => {
    window.removeEventListener("resize", refit);
    window.removeEventListener("hashchange", leave);
    dlg.remove();
  });
  document.body.append(dlg);
  dlg.showModal();
  show();
  return dlg;
}

/** Make `img` open the lightbox on click or Enter / Space (it becomes focusable). */
export function zoomable(img, open) {
  img.tabIndex = 0;
  img.setAttribute("role", "button");
  img.title = "click or Enter: enlarge";
  img.classList.add("zoomable");
  img.addEventListener("click", open);
  img.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
  });
}
