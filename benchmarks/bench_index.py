"""No cold index (issue 17): the first `flowillower ls` after many runs were trained,
`flowillower reindex` from scratch, and `ls` once warm, the previous package vs this one.

Each version trains its own store: `--runs` real runs (1,000; 10,000 with `--full`)
written through the API (args, 5 steps of two metrics, finish) by `--workers` processes,
so each store holds what that version's writers leave (this one: a row per run). Then,
with no index yet, each command runs as a user types it (a fresh `python -m flowillower`
process): each case `--repeats` times, the two versions taking turns, and the median
printed. Each figure is wall-clock seconds and, in brackets, the CPU seconds the command
used (on a loaded machine the wall clock mostly measures the wait for a core). The
previous package is `git archive BASELINE_REV` (or `--baseline REV`: e.g. the commit
before a change) unpacked in a temporary folder (benchmarks/_baseline.py). A second table reads this
store's rows serially, in threads and in processes (how `reindex` could spread the work).
`--keep DIR` keeps both stores in DIR, and a later run with the same DIR reuses them
(trained once, timed many times; its train row then reads "-": delete DIR after
changing what writers write).
Run: python benchmarks/bench_index.py [--runs 1000] [--full] [--workers 4] [--repeats 3]
     [--baseline REV] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _baseline import env_running, previous_package

BASELINE_REV = "22dee9f"  # the last commit before runs recorded their index rows

TRAIN = """
import sys, flowillower as fw
store, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    fw.init(project="bench", name=f"run-{i}", dir=store, snapshot=False)
    fw.config({"lr": 0.001 * (1 + i % 7), "batch": 32 << (i % 3), "seed": i})
    for step in range(5):
        fw.log_metrics({"loss": 1.0 / (step + 1 + i % 5), "acc": step / 5}, step=step)
    fw.finish()
"""


Timing = tuple[float, float]  # wall seconds, CPU seconds of the child processes


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(commands: list[list[str]], env: dict[str, str]) -> Timing:
    """Run `commands` at once; wall and CPU seconds until all are done."""
    cpu, t0 = _children_cpu(), time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in commands]
    if any(p.wait() for p in procs):
        raise SystemExit(f"failed: {commands[0]}")
    return time.perf_counter() - t0, _children_cpu() - cpu


def train(store: Path, runs: int, workers: int, env: dict[str, str]) -> Timing:
    """Write `runs` finished runs with `workers` processes."""
    per = -(-runs // workers)
    return _timed([[sys.executable, "-c", TRAIN, str(store), str(w * per),
                    str(min(per, runs - w * per))] for w in range(workers) if w * per < runs],
                  env)


def cli(store: Path, env: dict[str, str], *args: str) -> Timing:
    return _timed([[sys.executable, "-m", "flowillower", *args, "--dir", str(store)]], env)


# What `flowillower ls` does once its one-line change (report of issue 17) passes the
# limit on: the CLI's imports, then the first page of rows (the previous package has no
# `limit=`: all rows, then the page).
PAGE = """
import sys
from flowillower.cli import main
from flowillower.store.catalog import Store
store = Store(sys.argv[1])
try:
    rows = store.runs(include_hidden=False, limit=50)
except TypeError:
    rows = store.runs(include_hidden=False)[:50]
assert len(rows) == min(50, int(sys.argv[2]))
"""
# The UI's first table: every run's row, from a process that never indexed the store.
TABLE = """
import sys
from flowillower.store.catalog import Store
assert len(Store(sys.argv[1]).runs()) == int(sys.argv[2])
"""


def _forget_index(store: Path) -> None:
    for suffix in ("", "-wal", "-shm"):  # a store never indexed, as after training
        (store / f"index.sqlite{suffix}").unlink(missing_ok=True)


def _case(name: str, store: Path, runs: int, env: dict[str, str]) -> Timing:
    """One command as a user types it, from the state the case names."""
    if name in ("first ls", "first table"):
        _forget_index(store)
    if name == "first table":
        return _timed([[sys.executable, "-c", TABLE, str(store), str(runs)]], env)
    if name == "warm page":
        return _timed([[sys.executable, "-c", PAGE, str(store), str(runs)]], env)
    if name == "reindex":
        return cli(store, env, "reindex")
    return cli(store, env, "ls")  # first ls, warm ls (after the first)


CASES = ("first ls", "warm ls", "warm page", "reindex", "first table")


def measure(stores: dict[str, tuple[Path, dict[str, str]]], runs: int, workers: int,
            repeats: int) -> dict[str, dict[str, Timing]]:
    """Train each version's store, then time each case `repeats` times, the versions
    taking turns (a shared machine's load falls on both alike); the median of each."""
    out: dict[str, dict[str, Timing]] = {}
    for label, (store, env) in stores.items():
        kept = (store / "runs").is_dir() and len(os.listdir(store / "runs")) == runs
        out[label] = {} if kept else {"train": train(store, runs, workers, env)}
    for case in CASES:
        times: dict[str, list[Timing]] = {label: [] for label in stores}
        for _ in range(repeats):
            for label, (store, env) in stores.items():
                times[label].append(_case(case, store, runs, env))
        for label, got in times.items():
            got.sort()
            out[label][case] = got[len(got) // 2]
    return out


def _read_rows(paths: list[str]) -> int:
    from flowillower.store.index_journal import read_row

    return sum(read_row(p) is not None for p in paths)


def spread(store: Path) -> list[tuple[str, float, float]]:
    """Reading every run's row: serially, in 2 and 4 threads, in 2 processes."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    base = store / "runs"
    paths = [str(base / name) for name in sorted(os.listdir(base))]
    out = []
    for label, workers, pool in (("serial", 1, None), ("2 threads", 2, ThreadPoolExecutor),
                                 ("4 threads", 4, ThreadPoolExecutor),
                                 ("2 processes", 2, ProcessPoolExecutor)):
        cpu = time.process_time() + _children_cpu()
        t0 = time.perf_counter()
        if pool is None:
            found = _read_rows(paths)
        else:
            with pool(workers) as ex:
                found = sum(ex.map(_read_rows, [paths[i::workers] for i in range(workers)]))
        assert found == len(paths), (label, found)
        out.append((label, time.perf_counter() - t0,
                    time.process_time() + _children_cpu() - cpu))
    return out


def _cell(t: Timing | None) -> str:
    return "-" if t is None else f"{t[0]:.2f} ({t[1]:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="10,000 runs")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE_REV)
    parser.add_argument("--keep", metavar="DIR", help="keep the trained stores here; reuse "
                        "them when DIR already holds stores of --runs runs")
    opts, _ = parser.parse_known_args()
    runs = 10_000 if opts.full else opts.runs
    with tempfile.TemporaryDirectory() as tmp:
        stores_dir = Path(opts.keep).resolve() if opts.keep else Path(tmp)
        old_src = previous_package(opts.baseline, Path(tmp))
        stores: dict[str, tuple[Path, dict[str, str]]] = {}
        for label, src in (("previous", old_src), ("this", None)):
            if label == "previous" and src is None:
                continue
            env = env_running(src)
            env.pop("FLOWILLOWER_DIR", None)
            stores[label] = (stores_dir / f"{label}-store" / ".flowillower", env)
        results = measure(stores, runs, opts.workers, opts.repeats)
        ways = spread(stores_dir / "this-store" / ".flowillower")
    print(f"\nindex at {runs:,} runs, {opts.workers} training processes: seconds wall "
          f"(CPU), a fresh CLI process each, median of {opts.repeats} taking turns; "
          f"previous = {opts.baseline}")
    print(f"{'case':34}{'previous':>16}{'this':>16}{'this/prev':>15}")  # wall (CPU)
    names = {"train": f"train {runs:,} runs (writers)", "first ls": "first `ls` after training",
             "first table": "first `Store.runs()` (UI table)",
             "reindex": "`reindex` from scratch", "warm ls": "warm `ls`",
             "warm page": "warm first 50 rows + CLI imports"}
    for key, title in names.items():
        prev = results.get("previous", {}).get(key)
        this = results["this"].get(key)
        if this is None:  # kept stores: not trained this time
            print(f"{title:34}{_cell(prev):>16}{_cell(this):>16}")
            continue
        ratio = f"{this[0] / prev[0]:.2f} ({this[1] / prev[1]:.2f})" if prev else "-"
        print(f"{title:34}{_cell(prev):>16}{_cell(this):>16}{ratio:>15}")
    print(f"\nreading the {runs:,} rows (this store): seconds wall (CPU)")
    for label, wall, cpu in ways:
        print(f"{label:34}{f'{wall:.2f} ({cpu:.2f})':>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
