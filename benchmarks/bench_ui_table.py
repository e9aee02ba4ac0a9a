"""The runs table's best markers at scale: what it costs to know each metric column's best
value among all matched runs when the browser holds only the first page of rows.

The table asks `/api/best?col=KEY&goal=min&col=...` once for every shown metric column
(one pass over the matched rows on the server). Measured in the same run: the table's
previous way, one short page per column sorted best first
(`/api/runs?sort=KEY&desc=...&limit=20&col=KEY`: a full sort per column), and the naive
baseline, every page of every matched row (as a client computing the best itself would
have to) with the min / max taken in Python. Stores of N runs x 5 metrics are written by
bench_ui.py's fast writer and served by the real app over HTTP. Cold: the first request
for a filter (nothing cached); the one-pass and per-column ways share no cache.

Also printed: the run page's family card (`/api/runs/ID/family`: parents from the index's
`fork_of` column, in the rows the server holds), first request and later ones, against
the previous way in the same run (`ForkIndex`: every run.json read once, then one `stat`
per run per new generation of rows) and the naive one (every run.json per request).

Run: python benchmarks/bench_ui_table.py [--runs 1000] [--steps 50]  (docs/ui.md: --runs 1000,10000)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_ui import METRICS, Server, build_store

PAGE = 200  # rows per page, as in the table (js/runs.js)


def goal(metric: str) -> str:
    return "min" if "loss" in metric else "max"


def columns() -> list[tuple[str, str]]:
    return [(f"{stat}:{m}", goal(m)) for m in METRICS for stat in ("last", "best")]


def ours(client) -> tuple[float, int, dict[str, float]]:
    """(seconds, bytes, best per column): one request, one pass on the server."""
    t0 = time.perf_counter()
    cols = columns()
    r = client.get("/api/best", params={"col": [k for k, _ in cols],
                                        "goal": [g for _, g in cols]})
    r.raise_for_status()
    best = {k: v["value"] for k, v in r.json()["best"].items()}
    return time.perf_counter() - t0, len(r.content), best


def sorted_pages(client) -> tuple[float, int, dict[str, float]]:
    """(seconds, bytes, best per column): the previous way, one sorted short page per
    column."""
    t0, size, best = time.perf_counter(), 0, {}
    for key, g in columns():
        r = client.get("/api/runs", params={"sort": key, "desc": str(g == "max").lower(),
                                            "limit": 20, "col": key})
        size += len(r.content)
        vals = [row["cells"][key] for row in r.json()["rows"]]
        best[key] = pick(vals, g)
    return time.perf_counter() - t0, size, best


def naive(client, n: int) -> tuple[float, int, dict[str, float]]:
    """(seconds, bytes, best per column): every page of rows, best computed here."""
    t0, size = time.perf_counter(), 0
    keys = [k for k, _ in columns()]
    cells: dict[str, list] = {k: [] for k in keys}
    for offset in range(0, n, PAGE):
        r = client.get("/api/runs", params={"offset": offset, "limit": PAGE, "col": keys})
        size += len(r.content)
        for row in r.json()["rows"]:
            for k in keys:
                cells[k].append(row["cells"][k])
    best = {k: pick(cells[k], g) for k, g in columns()}
    return time.perf_counter() - t0, size, best


def pick(values: list, g: str) -> float:
    nums = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return (min if g == "min" else max)(nums)


def make_forks(root: Path, every: int = 100) -> list[str]:
    """Turn every `every`-th run into a fork of the run before it (run.json's `fork_of`,
    as `fw.init(fork_from=...)` writes it): chains of one generation; returns the forks.
    run.json is replaced as writers replace it (a new file), so the index sees it."""
    ids = sorted(p.name for p in (root / "runs").iterdir())
    forks = []
    for i in range(every, len(ids), every):
        path = root / "runs" / ids[i] / "run.json"
        meta = json.loads(path.read_text())
        meta["fork_of"] = {"run": ids[i - 1], "step": 10, "name": None, "git": None}
        tmp = path.with_name(".run.json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, path)
        forks.append(ids[i])
    return forks


def family(client, run_id: str) -> float:
    t0 = time.perf_counter()
    r = client.get(f"/api/runs/{run_id}/family")
    r.raise_for_status()
    assert r.json()["parent"] is not None
    return time.perf_counter() - t0


def previous_family(root: Path) -> tuple[float, float]:
    """(first, later) seconds of the previous way to find every fork: `ForkIndex` over
    every run (each run.json read the first time, one `stat` per run after)."""
    from flowillower.server.family import ForkIndex

    runs = root / "runs"
    ids = sorted(p.name for p in runs.iterdir())
    forks = ForkIndex()
    t0 = time.perf_counter()
    assert forks.parents(runs, ids)
    t1 = time.perf_counter()
    forks.parents(runs, ids)
    return t1 - t0, time.perf_counter() - t1


def naive_family(root: Path) -> float:
    """Every run.json read to find who forked from whom (no cache), as a request would."""
    t0 = time.perf_counter()
    parents = {}
    for path in (root / "runs").glob("*/run.json"):
        fork = json.loads(path.read_text()).get("fork_of")
        if isinstance(fork, dict):
            parents[path.parent.name] = fork.get("run")
    assert parents
    return time.perf_counter() - t0


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1000", help="store sizes (comma separated)")
    ap.add_argument("--steps", type=int, default=50, help="steps per run")
    ap.add_argument("--repeats", type=int, default=5)
    opts, _ = ap.parse_known_args()
    print(f"{'runs':>6} {'columns':>7} {'ours cold s':>11} {'ours warm s':>11} {'ours KB':>8} "
          f"{'sorted cold s':>13} {'sorted warm s':>13} {'sorted KB':>9} "
          f"{'naive warm s':>12} {'naive KB':>9} {'same bests':>10}")
    for n in (int(x) for x in opts.runs.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / ".flowillower"
            build_store(root, n, opts.steps)
            forks = make_forks(root)
            srv = Server(root)
            try:
                with httpx.Client(base_url=srv.base, timeout=300) as c:
                    c.get("/api/runs")  # the first sync and the default page, as on opening
                    cold, size, mine = ours(c)
                    warm = statistics.median(ours(c)[0] for _ in range(opts.repeats))
                    s_cold, s_size, s_best = sorted_pages(c)
                    s_warm = statistics.median(sorted_pages(c)[0] for _ in range(opts.repeats))
                    base = [naive(c, n) for _ in range(max(1, opts.repeats // 2))]
                    naive_s = statistics.median(b[0] for b in base)
                    same = mine == base[0][2] == s_best
                    print(f"{n:>6} {len(columns()):>7} {cold:>11.3f} {warm:>11.3f} "
                          f"{size / 1024:>8.1f} {s_cold:>13.3f} {s_warm:>13.3f} "
                          f"{s_size / 1024:>9.1f} {naive_s:>12.3f} {base[0][1] / 1024:>9.1f} "
                          f"{str(same):>10}")
                    fam_cold = family(c, forks[0])
                    fam_warm = statistics.median(family(c, f) for f in forks[1:6] or forks)
                    prev_cold, prev_warm = previous_family(root)
                    fam_naive = statistics.median(naive_family(root) for _ in range(3))
                    print(f"{'':>6} family of a fork ({len(forks)} forks in {n} runs): "
                          f"index (fork_of column) first {fam_cold:.3f} s, later "
                          f"{fam_warm:.3f} s; previous (ForkIndex over every run.json, "
                          f"finding forks only) first {prev_cold:.3f} s, later "
                          f"{prev_warm:.3f} s; naive (read every run.json per request) "
                          f"{fam_naive:.3f} s")
            finally:
                srv.stop()


if __name__ == "__main__":
    main()
