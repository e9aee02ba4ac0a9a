"""Reading back: one run's 1,000,000 values into a DataFrame, and a table of 1,000 runs.

Baselines measured in the same run: the same values read from a JSON-lines file into
pandas (the naive way), and a per-run JSON summary scan for the runs table.
Run: python benchmarks/bench_query.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import flowillower as fw
from flowillower import api
from flowillower.store.catalog import Store


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def million_values(tmp: Path) -> tuple[float, float, float]:
    store = tmp / "one"
    values = np.random.default_rng(0).random(1_000_000)
    run = fw.init(dir=store, snapshot=False)
    rows = values.reshape(-1, 4).tolist()
    for step, (a, b, c, d) in enumerate(rows):
        run.log_metrics({"a": a, "b": b, "c": c, "d": d}, step=step)
    fw.finish()
    api._current = None
    jsonl = tmp / "naive.jsonl"
    with open(jsonl, "w") as fh:
        for step, (a, b, c, d) in enumerate(rows):
            fh.write(json.dumps({"step": step, "a": a, "b": b, "c": c, "d": d}) + "\n")
    Store(store).sync()
    ours = timed(lambda: fw.dataframe("a", "b", "c", "d", dir=store))
    naive = timed(lambda: pd.read_json(jsonl, lines=True))
    frame = fw.dataframe("a", "b", "c", "d", dir=store)
    assert len(frame) == 250_000 and np.array_equal(frame["a"].to_numpy(), values[0::4])
    size = sum(p.stat().st_size for p in (Store(store).root / "runs").rglob("*.fwl"))
    return ours, naive, size / 1_000_000


def thousand_runs(tmp: Path) -> tuple[float, float, float]:
    store = tmp / "many"
    for i in range(1000):
        run = fw.init(dir=store, name=f"r{i}", snapshot=False)
        run.record_args({"lr": 10 ** -(1 + i % 4), "width": 64 * (1 + i % 3)})
        for step in range(20):
            run.log_metrics({"loss": 1 / (step + 1 + i), "acc": step / 20}, step=step)
        fw.finish()
    api._current = None
    t0 = time.perf_counter()
    Store(store).sync()
    cold = time.perf_counter() - t0
    warm = timed(lambda: fw.dataframe(dir=store))
    df = fw.dataframe(dir=store)
    assert len(df) == 1000

    def naive() -> pd.DataFrame:
        records = []
        for run_dir in (Store(store).root / "runs").iterdir():
            meta = json.loads((run_dir / "run.json").read_text())
            summary = json.loads((run_dir / "summary.json").read_text())
            records.append({"id": meta["id"], **summary["args"], **summary["last"]})
        return pd.DataFrame(records)

    return warm, timed(naive), cold


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours, naive, bytes_per_value = million_values(Path(tmp))
        warm, naive_runs, cold = thousand_runs(Path(tmp))
    print(f"{'case':<52}{'seconds':>10}{'naive':>10}{'ratio':>8}")
    print(f"{'1,000,000 values of one run -> DataFrame':<52}{ours:>10.3f}{naive:>10.3f}"
          f"{ours / naive:>8.2f}")
    print(f"{'fw.dataframe() over 1,000 runs (index warm)':<52}{warm:>10.3f}{naive_runs:>10.3f}"
          f"{warm / naive_runs:>8.2f}")
    print(f"{'index sync of 1,000 new runs (cold)':<52}{cold:>10.3f}{'-':>10}{'-':>8}")
    print(f"bytes per stored float value on disk: {bytes_per_value:.1f}")


if __name__ == "__main__":
    main()
