"""The UI at scale: API latency, bytes and browser first paint at 1,000 and 10,000 runs.

Stores of N runs x 5 args x 5 metrics x 1,000 steps are written straight through the
store's frame encoder (the format the background writer produces, minus its threads and
fsyncs), indexed once, then served by the real app under uvicorn and measured over HTTP.
A naive baseline is measured in the same run: shipping every row in full for the table,
every point of every selected run for the charts (what peers' UIs do).

Run: python benchmarks/bench_ui.py [--runs 1000,10000] [--steps 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ARGS = ("lr", "weight_decay", "dropout", "batch_size", "optimizer")
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr_now")


# -- writing stores fast -----------------------------------------------------------------
def write_run(root: Path, index: int, steps: int, created: float, seed: int) -> str:
    """One finished run with 5 args and 5 metrics x `steps` values (frame format)."""
    from flowillower.store.format import columns, encode_frame

    rng = np.random.default_rng(seed)
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created)) + f"-{seed:08x}"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    lr = float(10 ** rng.uniform(-4, -1))
    args = {"lr": lr, "weight_decay": float(rng.choice([0.0, 1e-4, 1e-2])),
            "dropout": float(round(rng.uniform(0, 0.5), 2)),
            "batch_size": int(rng.choice([32, 64, 128])),
            "optimizer": str(rng.choice(["adam", "sgd", "adamw"]))}
    keys = {i: (name, "arg") for i, name in enumerate(ARGS)}
    keys.update({len(ARGS) + i: (name, "metric") for i, name in enumerate(METRICS)})
    arg_frame = encode_frame(
        keys=keys, contexts={1: {"epoch": 0}},
        call_cols=[np.zeros(1, np.uint32), np.zeros(1, np.int64), np.full(1, created),
                   np.full(1, 3, np.uint32)],
        float_cols=[np.array([0, 1, 2], np.uint32),
                    np.array([args["lr"], args["weight_decay"], args["dropout"]])],
        int_cols=columns([(3, 0, 0, created, args["batch_size"])], "q"),
        objects=[(4, 0, 0, created, args["optimizer"])])
    t = np.arange(steps, dtype=np.float64)
    rate = 3 + 300 * lr
    loss = 2.3 * np.exp(-rate * t / steps) + 0.05 * rng.standard_normal(steps) + 0.1
    vals = np.stack([loss, 1 - loss / 2.5, loss * 1.1, 1 - loss / 2.4,
                     lr * (1 - t / steps)], axis=1)
    frames = [arg_frame]
    per_epoch = max(1, steps // 10)
    for start in range(0, steps, 2000):  # one frame per ~0.5 s of a fast training loop
        stop = min(steps, start + 2000)
        n = stop - start
        epochs = (np.arange(start, stop) // per_epoch).astype(np.uint32)
        ctx_defs = {int(e) + 1: {"epoch": int(e)} for e in np.unique(epochs)}
        frames.append(encode_frame(
            contexts=ctx_defs,
            call_cols=[epochs + 1, np.arange(start, stop, dtype=np.int64),
                       created + np.arange(start, stop) * 0.05, np.full(n, 5, np.uint32)],
            float_cols=[np.tile(np.arange(len(ARGS), len(ARGS) + 5, dtype=np.uint32), n),
                        vals[start:stop].ravel()]))
    (run_dir / "data.fwl").write_bytes(b"".join(frames))
    ended = created + steps * 0.05
    meta = {"id": run_id, "project": "bench", "name": f"run-{index:05d}", "tags": ["bench"],
            "notes": "", "created": created, "host": "bench", "pid": 1, "git": None}
    (run_dir / "run.json").write_text(json.dumps(meta))
    summary = {"id": run_id, "status": "success", "created": created, "ended": ended,
               "duration": ended - created, "error": None,
               "last": {m: float(vals[-1, i]) for i, m in enumerate(METRICS)}, "args": args}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_id


def _write_chunk(job: tuple[str, int, int, int, float]) -> int:
    root, start, stop, steps, t0 = job
    for i in range(start, stop):
        write_run(Path(root), i, steps, t0 + i * 60.0, seed=i + 1)
    return stop - start


def build_store(root: Path, n: int, steps: int) -> tuple[float, float]:
    """(seconds to write, seconds to index) for a fresh store of n runs."""
    from flowillower.store.catalog import Store
    from flowillower.store.layout import ensure_store

    ensure_store(root)
    t0 = time.perf_counter()
    chunk = max(1, n // 32)
    jobs = [(str(root), s, min(n, s + chunk), steps, 1.7e9) for s in range(0, n, chunk)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        pool.map(_write_chunk, jobs)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    Store(root).sync()
    return written, time.perf_counter() - t0


# -- measuring ---------------------------------------------------------------------------
class Server:
    """The real app under uvicorn in a thread, on a free port."""

    def __init__(self, root: Path) -> None:
        import uvicorn

        from flowillower.server.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = create_app(root)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def timed_get(client, url: str, params=None, repeat: int = 1) -> tuple[float, int, object]:
    """(median seconds, bytes, json) of GET url."""
    times, size, data = [], 0, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url, params=params)
        body = r.content
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text[:300]
        size = len(body)
        data = r.json()
    return statistics.median(times), size, data


def naive_table(root: Path) -> tuple[float, int]:
    """Every run row, all args and metric stats, in one JSON answer (no paging)."""
    from flowillower.store.catalog import Store

    store = Store(root)
    t0 = time.perf_counter()
    body = json.dumps(store.runs(sync=False), default=str).encode()
    return time.perf_counter() - t0, len(body)


def naive_series(root: Path, run_ids: list[str], key: str) -> tuple[float, int]:
    """Full histories of `key` for every selected run, read and encoded (trackio-style)."""
    from flowillower.store.reader import RunReader

    t0 = time.perf_counter()
    out = {}
    for rid in run_ids:
        s = RunReader(root / "runs" / rid).load([key]).series[key]
        out[rid] = {"step": s.step.tolist(), "value": s.values.tolist(), "time": s.time.tolist()}
    body = json.dumps(out).encode()
    return time.perf_counter() - t0, len(body)


def _mark(page, name: str) -> float:
    """Seconds from the page's navigation start to a `performance.mark` of the UI."""
    return page.evaluate(f"performance.getEntriesByName('{name}')[0].startTime") / 1000


def browser_first_row(base: str) -> float:
    """Seconds from navigation start to the first data row rendered (headless Chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/static/vendor/README.md")  # warm the process, not our page
        times = []
        for _ in range(3):
            page.goto(base + "/#/")
            page.wait_for_selector("table.runs tr[data-id]", timeout=30000)
            # The in-page mark: navigation start -> rows rendered, no driver polling.
            times.append(_mark(page, "fw:rows"))
        b.close()
    return statistics.median(times)


def browser_first_chart(base: str, ids: list[str], key: str) -> tuple[float, float]:
    """(cold, warm) seconds from navigation to the chart of `ids` drawn (all overlaid).

    Cold: the server has decoded none of the runs yet; warm: median of two reloads.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/static/vendor/README.md")
        page.evaluate("localStorage.setItem('flowillower.chart.filter', JSON.stringify(''))")
        times = []
        url = f"{base}/#/charts?runs={','.join(ids)}&m={key}"
        for i in range(3):
            page.goto(base + "/static/vendor/README.md")
            page.goto(url)
            page.wait_for_selector(f'.chart[data-drawn="{len(ids)}"] canvas', timeout=60000)
            times.append(_mark(page, "fw:chart-drawn"))
            if i == 0:
                page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench_ui_chart.png"))
        b.close()
    return times[0], statistics.median(times[1:])


def bench_store(root: Path, n: int, steps: int, rebuilt: tuple[float, float] | None,
                browser: bool) -> dict[str, object]:
    import httpx

    res: dict[str, object] = {}
    if rebuilt:
        res["write s"], res["index s"] = rebuilt
    srv = Server(root)
    try:
        with httpx.Client(base_url=srv.base, timeout=120) as c:
            res["table first s"], _, data = timed_get(c, "/api/runs")  # includes the first sync
            assert data["total"] == n, (data["total"], n)
            res["table warm s"], res["table bytes"], _ = timed_get(c, "/api/runs", repeat=20)
            # A new filter / sort computes over all rows once, then pages are cached.
            res["filter s"], _, f = timed_get(c, "/api/runs", {"q": "lr < 0.001 and "
                                                               "optimizer == 'adam'"})
            res["sort by metric s"], _, _ = timed_get(c, "/api/runs",
                                                      {"sort": "best:val/acc", "q": "sgd"})
            res["scrolled page s"], _, _ = timed_get(c, "/api/runs", {"offset": n // 2},
                                                     repeat=10)
            res["naive table s"], res["naive table bytes"] = naive_table(root)
            ids = [r["id"] for r in timed_get(c, "/api/runs", {"limit": 100})[2]["rows"]]
            params = {"run": ids, "key": "train/loss", "points": 1000}
            res["series 100 runs cold s"], res["series bytes"], _ = timed_get(
                c, "/api/series", params)
            res["series 100 runs warm s"], _, _ = timed_get(c, "/api/series", params, repeat=5)
            res["naive series s"], res["naive series bytes"] = naive_series(
                root, ids, "train/loss")
        if browser:
            res["browser first row s"] = browser_first_row(srv.base)
    finally:
        srv.stop()
    return res


def bench_charts(root: Path, runs: int, steps: int, browser: bool) -> dict[str, object]:
    """100 runs x 10,000 points: first chart draw, live traffic, vs full histories."""
    import httpx

    res: dict[str, object] = {}
    if browser:  # first, on a fresh server: nothing decoded yet
        srv = Server(root)
        try:
            with httpx.Client(base_url=srv.base, timeout=120) as c:
                ids = [r["id"] for r in timed_get(c, "/api/runs", {"limit": runs})[2]["rows"]]
            cold, warm = browser_first_chart(srv.base, ids, "train/loss")
            res["browser first chart cold s"], res["browser chart reload s"] = cold, warm
        finally:
            srv.stop()
    srv = Server(root)
    try:
        with httpx.Client(base_url=srv.base, timeout=120) as c:
            ids = [r["id"] for r in timed_get(c, "/api/runs", {"limit": runs})[2]["rows"]]
            params = {"run": ids, "key": "train/loss", "points": 1000}
            res["series cold s"], res["series bytes"], data = timed_get(c, "/api/series", params)
            res["series warm s"], _, _ = timed_get(c, "/api/series", params, repeat=5)
            # Live: every run got 10 new points since the last answer.
            after = [max(0, r["cursor"] - 10) for r in data["runs"]]
            res["live 10 new pts s"], res["live bytes"], live = timed_get(
                c, "/api/series", {**params, "after": after}, repeat=5)
            assert all(len(r["x"]) == 10 for r in live["runs"])
            res["naive series s"], res["naive series bytes"] = naive_series(
                root, ids, "train/loss")
    finally:
        srv.stop()
    return res


def bench_export(root: Path, out: Path) -> dict[str, object]:
    from flowillower.server.export import export_site

    result = export_site(root, out)
    # Baseline from the same run: the export without the file:// twins and bundle (what
    # `deploy` writes, since a Space serves over HTTP).
    plain = export_site(root, out.with_name(out.name + "-http-only"), files=False)
    return {"export s": result["seconds"], "export MB": result["bytes"] / 1e6,
            "export (files=False) s": plain["seconds"],
            "export (files=False) MB": plain["bytes"] / 1e6, "export runs": result["runs"]}


def fmt(key: str, v: object) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if key.endswith(" s"):
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if key.endswith("bytes"):
        return f"{v / 1e6:.2f} MB" if v > 1e6 else f"{v / 1e3:.1f} KB"
    if key.endswith(" MB"):
        return f"{v:.1f} MB"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1000,10000", help="store sizes (comma separated)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--chart-runs", type=int, default=100)
    ap.add_argument("--chart-steps", type=int, default=10000)
    ap.add_argument("--keep", default=None, help="directory to keep (and reuse) the stores")
    ap.add_argument("--no-browser", action="store_true")
    args, _ = ap.parse_known_args()  # run_all.py passes every benchmark the same args
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fw-bench-ui-"))
    sizes = [int(s) for s in args.runs.split(",") if s]
    results: dict[str, dict[str, object]] = {}
    try:
        for n in sizes:
            root = base / f"runs{n}x{args.steps}" / ".flowillower"
            rebuilt = None
            if not (root / "index.sqlite").exists():
                print(f"writing {n} runs x 5 metrics x {args.steps} steps ...", file=sys.stderr)
                rebuilt = build_store(root, n, args.steps)
            print(f"measuring {n} runs ...", file=sys.stderr)
            results[f"{n:,} runs"] = bench_store(root, n, args.steps, rebuilt,
                                                 not args.no_browser)
            if n == 1000:
                results[f"{n:,} runs"].update(bench_export(root, base / "export1000"))
        croot = base / f"chart{args.chart_runs}x{args.chart_steps}" / ".flowillower"
        if not (croot / "index.sqlite").exists():
            print(f"writing {args.chart_runs} runs x {args.chart_steps} steps ...",
                  file=sys.stderr)
            build_store(croot, args.chart_runs, args.chart_steps)
        print("measuring charts ...", file=sys.stderr)
        charts = bench_charts(croot, args.chart_runs, args.chart_steps, not args.no_browser)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    cols = list(results)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"\n## Runs table and series ({args.steps} steps per run, 5 args, 5 metrics)\n")
    print("| measure | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for k in keys:
        print(f"| {k} | " + " | ".join(fmt(k, results[c].get(k, float('nan'))) for c in cols)
              + " |")
    print(f"\n## Charts: {args.chart_runs} selected runs x {args.chart_steps:,} points, "
          "one metric, 1,000 points per run asked\n")
    print("| measure | value |\n|---|---:|")
    for k, v in charts.items():
        print(f"| {k} | {fmt(k, v)} |")


if __name__ == "__main__":
    main()
