// Chart colours from the theme: axes, grid, text, background and the run palette are CSS
// variables (app.css, written with light-dark()), resolved here to concrete colours a
// canvas can use. Charts redraw on theme.js's `fw-theme` event and read them again.
import { color } from "./dom.js";

const ROLES = { text: "--chart-text", axis: "--chart-axis", grid: "--chart-grid", bg: "--chart-bg",
  band: "--chart-band-alpha" };
const PALETTE_SIZE = 13;
// dom.js's palette, entry by entry (a number picks the entry at that index): the light theme's
// colours and the fallback when a stylesheet lacks the variables.
const BASE = Array.from({ length: PALETTE_SIZE }, (_, i) => color(i));
const FALLBACK = { text: "#1d2330", axis: "#6b7280", grid: "#e3e6eb", bg: "#ffffff", band: "0.18" };

let cached = null, cachedFor = "";

// A custom property holding light-dark() is not resolved by getComputedStyle; a real colour
// property on a probe element is, under the page's current colour scheme.
function resolve(probe, variable, fallback) {
  probe.style.color = "";
  probe.style.color = `var(${variable}, ${fallback})`;
  return getComputedStyle(probe).color || fallback;
}

function themeKey() {
  const attr = document.documentElement.getAttribute("data-theme") || "";
  return `${attr}|${matchMedia("(prefers-color-scheme: dark)").matches}`;
}

/** The chart colours in effect now: {text, axis, grid, bg, band (fill alpha), palette[13]}. */
export function chartTheme() {
  const key = themeKey();
  if (cached && cachedFor === key) return cached;
  const probe = document.createElement("span");
  probe.hidden = true;
  document.body.append(probe);
  const out = { palette: [] };
  for (const [role, variable] of Object.entries(ROLES)) {
    if (role === "band") continue;
    out[role] = resolve(probe, variable, FALLBACK[role]);
  }
  const alpha = Number(getComputedStyle(document.documentElement).getPropertyValue(ROLES.band).trim());
  out.band = Number.isFinite(alpha) && alpha > 0 && alpha < 1 ? alpha : Number(FALLBACK.band);
  for (let i = 0; i < PALETTE_SIZE; i++) out.palette.push(resolve(probe, `--chart-c${i}`, BASE[i]));
  probe.remove();
  cached = out;
  cachedFor = key;
  return out;
}

/** A key's palette index: the same hash dom.js's color() uses, so a run or a group keeps
 * its entry in any selection order and on every page. */
export function paletteIndex(key) {
  return Math.max(0, BASE.indexOf(color(String(key))));
}

/** The theme's colour for a run id or a group label (string), or palette entry i (number). */
export function themeColor(key) {
  const p = chartTheme().palette;
  const i = typeof key === "number" ? ((key % PALETTE_SIZE) + PALETTE_SIZE) % PALETTE_SIZE : paletteIndex(key);
  return p[i];
}

function hue(hex) {
  const n = parseInt(hex.slice(1), 16);
  const r = (n >> 16) / 255, g = ((n >> 8) & 255) / 255, b = (n & 255) / 255;
  const max = Math.max(r, g, b), d = max - Math.min(r, g, b);
  if (!d) return 0;
  const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
  return (h * 60 + 360) % 360;
}
const HUES = BASE.map(hue);
const NEAR = 25;  // degrees: two palette entries closer in hue read as the same line

/** Colours for labels shown together (groups, categories): each the hash of its label, so
 * a group keeps its colour in any selection and on every page. When that entry is taken,
 * or close in hue to one taken (the palette has several pinks), a label takes the next
 * entry that is not, or else the next free one. Returns Map label -> colour. */
export function labelColors(labels) {
  const used = [];
  const far = (i) => used.every((j) => Math.min(Math.abs(HUES[i] - HUES[j]), 360 - Math.abs(HUES[i] - HUES[j])) >= NEAR);
  return new Map(labels.map((label) => {
    const start = paletteIndex(label);
    const order = Array.from({ length: PALETTE_SIZE }, (_, k) => (start + k) % PALETTE_SIZE);
    const i = order.find((j) => !used.includes(j) && far(j)) ?? order.find((j) => !used.includes(j)) ?? start;
    used.push(i);
    return [label, themeColor(i)];
  }));
}

/** `c` (any CSS colour the probe resolved: rgb()/rgba()/hex) with opacity `a`. */
export function withAlpha(c, a) {
  const m = /^rgba?\(([^)]+)\)$/.exec(c);
  if (m) {
    const [r, g, b] = m[1].split(/[,\s/]+/).filter(Boolean);
    return `rgba(${r}, ${g}, ${b}, ${a})`;
  }
  if (/^#[0-9a-f]{6}$/i.test(c)) {
    const n = parseInt(c.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }
  return c;
}

/** uPlot axis options in the theme's colours (text, tick marks, grid lines). */
export function axisColors() {
  const t = chartTheme();
  return { stroke: t.text, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.grid, width: 1 } };
}

/** Call `fn` whenever the theme changes (the toggle, or the system's scheme); returns an
 * unsubscribe function. */
export function onTheme(fn) {
  const handler = () => { cached = null; fn(); };
  window.addEventListener("fw-theme", handler);
  return () => window.removeEventListener("fw-theme", handler);
}
