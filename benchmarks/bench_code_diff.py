"""The static export's code diff (static/js/linediff.js) in Chromium.

A source file of `--lines` lines with `--edits` scattered one-line changes, diffed by
the page's Myers diff, against the textbook baseline measured in the same browser: the
longest-common-subsequence table (O(N*M) time and memory). Both must find the same
number of changed lines.

Run: python benchmarks/bench_code_diff.py [--lines N] [--edits N]
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "src/flowillower/server/static"

NAIVE = """
(a, b) => {  // LCS table, then walk back: the number of changed lines
  const n = a.length, m = b.length, w = m + 1;
  const t = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      t[i * w + j] = a[i] === b[j] ? t[(i + 1) * w + j + 1] + 1
        : Math.max(t[(i + 1) * w + j], t[i * w + j + 1]);
  return n + m - 2 * t[0];
}"""


def texts(lines: int, edits: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    a = [f"    x{i % 97} = layer_{i % 13}(x{i % 89}) * {i % 7}" for i in range(lines)]
    b = list(a)
    for _ in range(edits):
        at = rng.randrange(len(b))
        kind = rng.random()
        if kind < 0.4:
            b[at] = b[at] + "  # changed"
        elif kind < 0.7:
            b.insert(at, f"    y = {rng.random():.6f}")
        else:
            del b[at]
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args, _unknown = parser.parse_known_args()
    from playwright.sync_api import sync_playwright

    a, b = texts(args.lines, args.edits)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "-d", str(STATIC.parent)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/static/")  # a plain listing page
            res = page.evaluate("""async ([url, a, b, repeats, naiveSrc]) => {
                const m = await import(url);
                const naive = eval(naiveSrc);
                const best = (f) => { let t = Infinity, r;
                  for (let i = 0; i < repeats; i++) { const t0 = performance.now(); r = f();
                    t = Math.min(t, performance.now() - t0); }
                  return [t, r]; };
                const [tm, ops] = best(() => m.diffLines(a, b));
                const [tn, changed] = best(() => naive(a, b));
                return { ours: tm, naive: tn, ours_changed: ops.filter((o) => o[0] !== " ").length,
                         naive_changed: changed };
            }""", [f"http://127.0.0.1:{port}/static/js/linediff.js", a, b, args.repeats,
                   NAIVE])
            browser.close()
    finally:
        server.terminate()
        server.wait(5)
    print(f"diff of a {len(a)}-line file with {args.edits} one-line edits in Chromium "
          f"(best of {args.repeats})")
    print(f"{'case':<44}{'ms':>10}{'changed lines':>15}")
    print(f"{'ours: Myers O(ND), common head/tail trimmed':<44}{res['ours']:>10.1f}"
          f"{res['ours_changed']:>15}")
    print(f"{'baseline: LCS table O(N*M)':<44}{res['naive']:>10.1f}{res['naive_changed']:>15}")
    if res["ours_changed"] != res["naive_changed"]:
        raise SystemExit("the two diffs disagree on the number of changed lines")
    print(f"ours is {res['naive'] / max(res['ours'], 1e-3):.0f}x faster")


if __name__ == "__main__":
    main()
