// Series arithmetic shared by the charts: EMA smoothing and aligning runs on one x grid.

// EMA with TensorBoard's debiasing, skipping gaps (null / non-finite).
export function ema(y, alpha) {
  if (!alpha) return y;
  const out = new Array(y.length);
  let acc = 0, n = 0;
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (v === null || v === undefined || !Number.isFinite(v)) { out[i] = null; continue; }
    acc = acc * alpha + (1 - alpha) * v;
    n += 1;
    out[i] = acc / (1 - alpha ** n);
  }
  return out;
}

// Align per-run (x, y) arrays on the union of their x values (uPlot's data layout).
export function join(list) {
  if (!list.length) return [[]];
  const first = list[0].x;
  if (list.every((r) => r.x === first)) return [first, ...list.map((r) => r.y)];
  let total = 0;
  list.forEach((r) => { total += r.x.length; });
  const all = new Float64Array(total);
  let o = 0;
  list.forEach((r) => { all.set(r.x, o); o += r.x.length; });
  all.sort();
  const xs = [];
  for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) xs.push(all[i]);
  const ys = list.map((r) => {
    const col = new Array(xs.length).fill(null);
    for (let i = 0; i < r.x.length; i++) {
      let lo = 0, hi = xs.length - 1;
      const v = r.x[i];
      while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < v) lo = mid + 1; else hi = mid; }
      col[lo] = r.y[i];
    }
    return col;
  });
  return [xs, ...ys];
}
