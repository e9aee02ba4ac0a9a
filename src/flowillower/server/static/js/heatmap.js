// Histogram heat map over steps: one column per recorded step, each histogram's bins
// painted at their own value range on a shared y axis (darker = more values).
import { fmtNum, h } from "./dom.js";

export function heatmap(data, { height = 160 } = {}) {
  const wrap = h("div");
  if (!data.steps.length) { wrap.append(h("p", { class: "muted", text: "no histogram values" })); return wrap; }
  const cols = data.steps.length;
  const rows = 64;
  const lo = Math.min(...data.min.filter((v) => v !== null));
  const hi = Math.max(...data.max.filter((v) => v !== null));
  const span = hi > lo ? hi - lo : 1;
  const grid = new Float64Array(cols * rows);
  let peak = 0;
  data.counts.forEach((counts, c) => {
    const a = data.min[c], b = data.max[c];
    if (a === null || b === null) return;
    const total = counts.reduce((s, v) => s + v, 0) || 1;
    const nb = counts.length;
    counts.forEach((v, k) => {
      const v0 = a + ((b - a) * k) / nb, v1 = a + ((b - a) * (k + 1)) / nb;
      const r0 = Math.floor(((v0 - lo) / span) * (rows - 1));
      const r1 = Math.max(r0, Math.floor(((v1 - lo) / span) * (rows - 1)));
      const share = v / total / (r1 - r0 + 1);
      for (let r = r0; r <= r1; r++) {
        const cell = (rows - 1 - r) * cols + c;
        grid[cell] += share;
        if (grid[cell] > peak) peak = grid[cell];
      }
    });
  });
  const canvas = h("canvas", { class: "heat", width: cols, height: rows, style: { height: `${height}px` } });
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  // One blue at the cell's density as opacity: over the card's own background, so the
  // map reads the same in the light and the dark theme (empty cells are the background).
  for (let i = 0; i < grid.length; i++) {
    const t = peak ? Math.sqrt(grid[i] / peak) : 0;  // sqrt: faint tails stay visible
    img.data[4 * i] = 47;
    img.data[4 * i + 1] = 111;
    img.data[4 * i + 2] = 219;
    img.data[4 * i + 3] = Math.round(t * 255);
  }
  ctx.putImageData(img, 0, 0);
  wrap.append(canvas, h("div", { class: "muted", style: { fontSize: "11px" } },
    `steps ${data.steps[0]}–${data.steps[cols - 1]} (${data.count} recorded) · values ${fmtNum(lo)} … ${fmtNum(hi)}`));
  return wrap;
}
