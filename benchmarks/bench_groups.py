"""What grouping runs on the charts page costs in the browser: groups.js's `aggregate` (runs
aligned on the union of their x values, mean / std / min / max per x) over R runs of P
points, half logging every step and half every other step, in 4 groups, in Chromium.

Baseline measured in the same run: a naive aggregate with the same rules (exact match,
else interpolation within 1.5 of the run's own spacing), which scans each run's x array
for every x of the union (quadratic). Both give the same numbers (checked); the baseline runs once at the large size.
Run: python benchmarks/bench_groups.py [--runs 100] [--points 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "src" / "flowillower" / "server" / "static"
CHROMIUM = "/usr/bin/chromium"

# Runs the benchmark in the page: ours (groups.js) against the naive scan, same input.
SCRIPT = """async ([runs, points, repeats, naiveRepeats]) => {
  const m = await import("./js/groups.js");
  const make = (r) => {
    const every = (r >> 2) % 2 ? 2 : 1, x = [], y = [];  // each group mixes both grids
    for (let s = 0; s < points * every; s += every) { x.push(s); y.push(Math.sin(s / 50 + r) + r * 0.01); }
    return { x, y };
  };
  const all = Array.from({ length: runs }, (_, r) => make(r));
  const groups = [0, 1, 2, 3].map((g) => all.filter((_, r) => r % 4 === g));
  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  const naive = (list) => {
    const xs = [...new Set(list.flatMap((r) => r.x))].sort((a, b) => a - b);
    const cols = list.map((r) => {
      const d = r.x.slice(1).map((v, i) => v - r.x[i]).sort((a, b) => a - b);
      const tol = 1.5 * (d.length ? d[d.length >> 1] : 0);
      return xs.map((v) => {
        for (let i = 0; i < r.x.length; i++) {  // scan the whole run for every x
          if (r.x[i] === v) return finite(r.y[i]) ? r.y[i] : null;
          if (i > 0 && r.x[i - 1] < v && v < r.x[i] && r.x[i] - r.x[i - 1] <= tol)
            return r.y[i - 1] + (r.y[i] - r.y[i - 1]) * (v - r.x[i - 1]) / (r.x[i] - r.x[i - 1]);
        }
        return null;
      });
    });
    return xs.map((_, k) => {
      const v = cols.map((c) => c[k]).filter((z) => z !== null);
      return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
    });
  };
  const best = (fn, n = repeats) => {
    let t = Infinity, out = null;
    for (let i = 0; i < n; i++) { const t0 = performance.now(); out = fn(); t = Math.min(t, performance.now() - t0); }
    return [t, out];
  };
  const [ours, got] = best(() => groups.map((g) => m.aggregate(g)));
  const res = { ours, naive: null, same: null, xs: got[0].x.length };
  if (naiveRepeats) {
    const [t, want] = best(() => groups.map((g) => naive(g)), naiveRepeats);
    res.naive = t;
    res.same = got.every((a, gi) => a.mean.every((v, k) => Math.abs(v - want[gi][k]) < 1e-9));
  }
  return res;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_known_args()[0]
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "-d", str(STATIC)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            for _ in range(100):
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - the server is still starting
                    time.sleep(0.1)
            # The quadratic baseline runs once at the large size (seconds).
            sizes = [(20, 1000, opts.repeats), (opts.runs, opts.points, 1)]
            print(f"{'runs x points':>16} {'union x':>8} {'groups.js ms':>13} {'naive ms':>10}"
                  f" {'speed-up':>9} same")
            for runs, points, naive_repeats in sizes:
                r = page.evaluate(SCRIPT, [runs, points, opts.repeats, naive_repeats])
                naive = f"{r['naive']:.1f}" if r["naive"] is not None else "(skipped)"
                ratio = f"{r['naive'] / r['ours']:.0f}x" if r["naive"] else "-"
                print(f"{runs:>7} x {points:<6} {r['xs']:>8} {r['ours']:>13.1f} {naive:>10}"
                      f" {ratio:>9} {r['same'] if r['same'] is not None else '-'}")
            browser.close()
    finally:
        server.terminate()
        server.wait(5)


if __name__ == "__main__":
    main()
