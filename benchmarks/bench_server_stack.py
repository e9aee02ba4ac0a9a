"""Library choices for the UI server, measured: downsampler and web framework.

1. Downsampling a chart's series to 2,000 points: `tsdownsample` (Rust MinMax and
   MinMaxLTTB, from PyPI) against the numpy min/max of server/downsample.py, at 1M and
   10M points: time (median of repeats) and visual error, the mean gap, in pixels of a
   1000 x 200 plot, between the true per-pixel-column [min, max] envelope and the one
   drawn from the kept points (lines between them included).
2. The route layer: server/routing.py (hand-written parameters, validation and OpenAPI)
   against FastAPI declaring the same two routes (`/api/runs`, `/api/series`) over the
   same `Api` views, each app alone under uvicorn in its own process on loopback, driven
   by 4 keep-alive client threads: requests/s and p50/p99 latency; plus the import time
   of each stack in a fresh interpreter and the packages FastAPI adds.

Run: python benchmarks/bench_server_stack.py [--seconds 4] [--runs 20] [--steps 5000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


# -- 1. downsampling ---------------------------------------------------------------------
def series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.standard_normal(n))
    spikes = rng.integers(0, n, 20)
    y[spikes] += rng.choice([-1, 1], 20) * 30 * y.std()  # what a stride would drop
    return y


def envelope(x: np.ndarray, y: np.ndarray, n: int, width: int = 1000
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel column, the [min, max] y that a polyline through (x, y) covers."""
    col = np.minimum((x * width // n).astype(np.int64), width - 1)
    lo = np.full(width, np.inf)
    hi = np.full(width, -np.inf)
    np.minimum.at(lo, col, y)
    np.maximum.at(hi, col, y)
    # A segment crossing columns covers the columns between its ends.
    for a, b, ya, yb in zip(col[:-1], col[1:], y[:-1], y[1:]):
        if b > a + 1:
            lo[a + 1:b] = np.minimum(lo[a + 1:b], min(ya, yb))
            hi[a + 1:b] = np.maximum(hi[a + 1:b], max(ya, yb))
    return lo, hi


def visual_error(y: np.ndarray, keep: np.ndarray, true_env) -> float:
    lo, hi = envelope(keep.astype(np.float64), y[keep], len(y))
    tlo, thi = true_env
    scale = 200 / (y.max() - y.min())
    return float(np.mean(np.abs(lo - tlo) + np.abs(hi - thi)) * scale)


def bench_downsample(sizes: list[int], out: int = 2000) -> list[dict[str, object]]:
    from tsdownsample import MinMaxDownsampler, MinMaxLTTBDownsampler

    from flowillower.server import downsample
    from flowillower.server.downsample import minmax_indices

    def numpy_only(y: np.ndarray) -> np.ndarray:
        saved, downsample._tsdownsample = downsample._tsdownsample, False
        try:
            return minmax_indices(y, out)
        finally:
            downsample._tsdownsample = saved

    rows = []
    for n in sizes:
        y = series(n)
        x = np.arange(n, dtype=np.float64)
        # The exact envelope, by columns (every point is a vertex).
        col = (np.arange(n) * 1000 // n)
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        true_env = (np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts))
        cases = {
            "numpy minmax (before)": lambda y=y: numpy_only(y),
            "minmax_indices (now)": lambda y=y: minmax_indices(y, out),
            "tsdownsample MinMax": lambda y=y: MinMaxDownsampler().downsample(y, n_out=out),
            "tsdownsample MinMaxLTTB": lambda x=x, y=y: MinMaxLTTBDownsampler().downsample(
                x, y, n_out=out),
            "stride (naive)": lambda n=n: np.linspace(0, n - 1, out).astype(np.int64),
        }
        for name, fn in cases.items():
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                keep = np.asarray(fn())
                times.append(time.perf_counter() - t0)
            rows.append({"points": n, "method": name, "ms": statistics.median(times) * 1e3,
                         "kept": len(keep), "error px": visual_error(y, np.sort(keep),
                                                                     true_env)})
    return rows


# -- 2. route layer ----------------------------------------------------------------------
OURS = r"""
import sys, uvicorn
from starlette.applications import Starlette
from flowillower.server.api import Api
from flowillower.server.routing import make_route
from flowillower.server.store_view import StoreView
api = Api(StoreView(sys.argv[1]))
eps = [e for e in api.endpoints() if e.path in ("/api/runs", "/api/series")]
app = Starlette(routes=[make_route(e) for e in eps])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

FASTAPI = r"""
import sys, uvicorn
from typing import Annotated
from fastapi import FastAPI, Query
from flowillower.server.api import Api
from flowillower.server.routing import json_response
from flowillower.server.store_view import StoreView
api = Api(StoreView(sys.argv[1]))
app = FastAPI()

@app.get("/api/runs")
def runs(q: Annotated[str | None, Query(max_length=2000)] = None,
         sort: Annotated[str, Query(max_length=300)] = "created", desc: bool = True,
         offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
         limit: Annotated[int, Query(ge=1, le=5000)] = 100,
         group: Annotated[str | None, Query(max_length=300)] = None,
         col: Annotated[list[str], Query(max_length=300)] = [], hidden: bool = False):
    return json_response(api.runs(q, sort, desc, offset, limit, group, col, hidden))

@app.get("/api/series")
def series(key: Annotated[str, Query(max_length=500)],
           run: Annotated[list[str], Query(max_length=200)] = [],
           x: Annotated[str, Query(max_length=500)] = "step",
           points: Annotated[int, Query(ge=2, le=100000)] = 1000,
           x0: float | None = None, x1: float | None = None,
           after: Annotated[list[int], Query(ge=0, le=10**12)] = [],
           also: Annotated[list[str], Query(max_length=500)] = []):
    return json_response(api.series(run, key, x, points, x0, x1, after, also))

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def build_store(root: Path, runs: int, steps: int) -> list[str]:
    from bench_ui import write_run

    from flowillower.store.catalog import Store
    from flowillower.store.layout import ensure_store

    ensure_store(root)
    ids = [write_run(root, i, steps, 1.7e9 + 60 * i, seed=i + 1) for i in range(runs)]
    Store(root).sync()
    return ids


def load(port: int, path: str, seconds: float, threads: int = 4) -> dict[str, float]:
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            conn.request("GET", path)
            res = conn.getresponse()
            body = res.read()
            assert res.status == 200, body[:300]
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"req/s": len(lat) / wall, "p50 ms": lat[len(lat) // 2] * 1e3,
            "p99 ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3}


def serve(code: str, root: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(port)],
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def import_ms(stmt: str) -> float:
    times = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", f"import time; t=time.perf_counter(); "
                              f"{stmt}; print(time.perf_counter()-t)"], capture_output=True,
                             text=True, env={"PYTHONPATH": str(SRC)}, check=True)
        times.append(float(out.stdout) * 1e3)
    return statistics.median(times)


def bench_routes(runs: int, steps: int, seconds: float) -> list[dict[str, object]]:
    root = Path(tempfile.mkdtemp(prefix="fw-stack-"))
    ids = build_store(root, runs, steps)
    paths = {"runs": "/api/runs?limit=100",
             "series": "/api/series?" + urllib.parse.urlencode(
                 {"run": ids[:10], "key": "train/loss", "points": 1000}, doseq=True)}
    rows = []
    try:
        for name, code in (("routing.py (ours)", OURS), ("FastAPI", FASTAPI)):
            proc, port = serve(code, root)
            try:
                for route, path in paths.items():
                    load(port, path, 1.0)  # warm: caches filled, connections made
                    rows.append({"stack": name, "route": route, **load(port, path, seconds)})
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def deps_added() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "show", "fastapi"],
                         capture_output=True, text=True).stdout
    req = [line.split(":", 1)[1].strip() for line in out.splitlines()
           if line.startswith("Requires:")]
    return req[0] if req else "?"


def table(rows: list[dict[str, object]]) -> None:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(width[c]) for c in cols))


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--sizes", default="1000000,10000000")
    opts, _ = ap.parse_known_args()
    print("downsampling to 2,000 points (visual error: mean px gap of the column envelope, "
          "1000x200 plot)")
    table(bench_downsample([int(s) for s in opts.sizes.split(",")]))
    print(f"\nroute layer: {opts.runs} runs x {opts.steps} steps, uvicorn, 4 client threads, "
          f"{opts.seconds:g} s per row")
    table(bench_routes(opts.runs, opts.steps, opts.seconds))
    print("\nimport time (fresh interpreter, median of 3)")
    table([{"import": s, "ms": import_ms(s)} for s in (
        "import flowillower", "import flowillower.server.app",
        "import fastapi, flowillower.server.app", "import tsdownsample")])
    print(f"\nFastAPI requires: {deps_added()} (on top of starlette, which we already use)")
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
