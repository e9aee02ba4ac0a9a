"""Large runs in a real browser: navigation to the chart drawn, 100 x 100k and 1 x 10M.

Two stores, written straight through the frame encoder (50,000 values a frame, what a
fast training loop's writer produces): 100 runs x 100,000 steps of `loss`, and one run
of 10,000,000 steps. Each is served by the real app under uvicorn in its own process,
and headless Chromium (Playwright) opens the charts page of all its runs: seconds from
navigation start to the chart drawn with every run (`performance.mark` of chart.js),
cold (a fresh server: nothing decoded yet) and warm (median of two reloads). The
baseline, measured in the same run the same way, is the package before issue 19's live
work (`BASELINE_REV`: full re-decode per file change, numpy min/max only). A live poll
(10 new values per run after a cursor) is timed over HTTP too.

Run: python benchmarks/bench_ui_series.py [--small 100x100000] [--large 10000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from _baseline import env_running, previous_package
from bench_ui import browser_first_chart

BASELINE_REV = "82452f7"  # the commit before series_cache.py / live.py
SERVER = r"""
import sys, uvicorn
from flowillower.server.app import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""


def write_run(root: Path, index: int, steps: int, seed: int) -> str:
    """One finished run with `steps` values of `loss`, in 50,000-value frames."""
    from flowillower.store.format import encode_frame

    created = 1.7e9 + index * 60
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created)) + f"-{seed:08x}"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with open(run_dir / "data.fwl", "wb") as out:
        level = 2.0
        for start in range(0, steps, 50_000):
            n = min(50_000, steps - start)
            t = np.arange(start, start + n, dtype=np.float64)
            loss = level * np.exp(-3 * t / steps) + 0.05 * rng.standard_normal(n) + 0.1
            out.write(encode_frame(
                keys={0: ("loss", "metric")} if start == 0 else None,
                call_cols=[np.zeros(n, np.uint32), t.astype(np.int64), created + t * 0.01,
                           np.ones(n, np.uint32)],
                float_cols=[np.zeros(n, np.uint32), loss]))
    ended = created + steps * 0.01
    (run_dir / "run.json").write_text(json.dumps({
        "id": run_id, "project": "bench", "name": f"run-{index:03d}", "tags": [], "notes": "",
        "created": created, "host": "bench", "pid": 1, "git": None}))
    (run_dir / "summary.json").write_text(json.dumps({
        "id": run_id, "status": "success", "created": created, "ended": ended,
        "duration": ended - created, "error": None, "last": {"loss": float(loss[-1])},
        "args": {"seed": seed}}))
    return run_id


def build(root: Path, runs: int, steps: int) -> list[str]:
    from flowillower.store.catalog import Store
    from flowillower.store.layout import ensure_store

    ensure_store(root)
    ids = [write_run(root, i, steps, i + 1) for i in range(runs)]
    Store(root).sync()
    return ids


class Server:
    """The app of one package version in its own process, on a free loopback port."""

    def __init__(self, root: Path, src: Path | None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(self.port)],
                                     env=env_running(src))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the UI server did not start")

    def get(self, path: str, params: dict) -> tuple[float, dict]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as res:
            data = json.loads(res.read())
        return time.perf_counter() - t0, data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure(root: Path, ids: list[str], src: Path | None) -> dict[str, float]:
    srv = Server(root, src)
    try:
        cold, warm = browser_first_chart(srv.base, ids, "loss")
        params = {"run": ids, "key": "loss", "points": 1000}
        _, data = srv.get("/api/series", params)
        after = [max(0, r["cursor"] - 10) for r in data["runs"]]
        live = statistics.median(srv.get("/api/series", {**params, "after": after})[0]
                                 for _ in range(5))
    finally:
        srv.stop()
    return {"cold s": cold, "warm s": warm, "live poll s": live}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", default="100x100000", help="RUNSxSTEPS")
    ap.add_argument("--large", type=int, default=10_000_000, help="steps of the one run")
    ap.add_argument("--keep", help="keep the stores in this folder")
    opts, _ = ap.parse_known_args()
    work = Path(opts.keep or tempfile.mkdtemp(prefix="fw-bench-series-"))
    runs, steps = (int(v) for v in opts.small.lower().split("x"))
    cases = [(f"{runs} runs x {steps:,}", runs, steps), (f"1 run x {opts.large:,}", 1,
                                                          opts.large)]
    previous = previous_package(BASELINE_REV, work)
    rows = []
    try:
        for label, n, k in cases:
            root = work / f"store-{n}x{k}"
            t0 = time.perf_counter()
            ids = build(root, n, k) if not root.exists() else \
                sorted(p.name for p in (root / "runs").iterdir())
            print(f"{label}: store written in {time.perf_counter() - t0:.1f} s", flush=True)
            for version, src in (("this code", None), (f"before ({BASELINE_REV})", previous)):
                if version != "this code" and previous is None:
                    continue
                rows.append({"case": label, "code": version, **measure(root, ids, src)})
                print(rows[-1], flush=True)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\nnavigation -> chart drawn with every run (headless Chromium, target warm <= 1 s)")
    print(f"{'case':<22}{'code':<18}{'cold s':>8}{'warm s':>8}{'live poll s':>13}")
    for r in rows:
        print(f"{r['case']:<22}{r['code']:<18}{r['cold s']:>8.2f}{r['warm s']:>8.2f}"
              f"{r['live poll s']:>13.3f}")


if __name__ == "__main__":
    main()
