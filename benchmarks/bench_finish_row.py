"""fw.finish() with the run's index row: built from the writer's per-key statistics
(this code) vs read back from the run's records with the reader (the previous package).

Each case logs 20,000 steps x 3 floats (60,000 values) and times `fw.finish()`, in child
processes: "in-process" is the median of several runs finished one after another in one
process (numpy already imported after the first, for the previous package), "fresh
process" the first and only finish of a new process (what a script sees at its end).
The logging before it is timed too (us per step), to show the statistics the writer
keeps cost the logging loop nothing measurable. "this, no row" is this code with the
writer's statistics switched off (no row at finish): the floor, what the row costs. The previous package is `git archive
BASELINE_REV` unpacked in a temporary folder; both run alternately, round by round.
The last table is the writer thread's cost of the statistics per value, by the shape of
a batch of 60,000 floats, next to `LatestValues` (the summary's last values, which the
writer kept before) on the same batches.
Run: python benchmarks/bench_finish_row.py [--repeats 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _baseline import env_running, previous_package

BASELINE_REV = "6976060^"  # the commit before finish stopped reading the run back
STEPS = 20_000

CHILD = r"""
import json, sys, time
from _baseline import check_imported_from
import flowillower as fw
check_imported_from(None if sys.argv[3] == "-" else sys.argv[3])
runs, folder, steps, off = int(sys.argv[1]), sys.argv[2], int(sys.argv[4]), sys.argv[5]
if off == "off":  # no statistics kept, no row recorded
    from flowillower.store.written import WrittenStats
    from flowillower.store.writer import FrameWriter
    WrittenStats.add = lambda self, batch: None
    FrameWriter.written = lambda self: None
out = {"finish": [], "log": []}
for _ in range(runs):
    run = fw.init(project="bench", dir=folder, snapshot=False)
    t0 = time.perf_counter()
    for i in range(steps):
        fw.log_metrics({"loss": 0.5 / (i + 1), "lr": 0.1, "acc": float(i % 7)}, step=i)
    t1 = time.perf_counter()
    fw.finish()
    out["finish"].append(time.perf_counter() - t1)
    out["log"].append((t1 - t0) / steps)
    assert (run.dir / "index-row.json").exists() == (off == "on"), "row or not"
print(json.dumps(out))
"""


def child(src: Path | None, runs: int, off: bool) -> dict[str, list[float]]:
    """Finish (and per-step logging) seconds of `runs` runs in one new process."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(runs), tmp, str(src) if src else "-",
             str(STEPS), "off" if off else "on"], capture_output=True, text=True, check=True, env=env_running(src),
            cwd=Path(__file__).parent)
    return json.loads(proc.stdout.splitlines()[-1])


def shaped_batch(keys_of: Callable[[int], list[int]], calls: int, threads: int = 1
                 ) -> dict[str, Any]:
    """A drained batch: `calls` float calls (keys `keys_of(i)`) from `threads` threads,
    their buffers one after another as `BufferSet.drain` hands them over."""
    cols = [array("I"), array("q"), array("d"), array("I")]
    keys, values = array("I"), array("d")
    for _ in range(threads):
        for i in range(calls // threads):
            ks = keys_of(i)
            for col, item in zip(cols, (0, i, 1.7e9 + i * 1e-3, len(ks))):
                col.append(item)
            keys.extend(ks)
            values.extend(0.5 / (i + 1) + k for k in ks)
    return {"call_cols": cols, "float_cols": [keys, values], "ints": [], "objects": [],
            "keys": {}, "contexts": {}, "events": []}


def per_value(rounds: int = 5) -> None:
    """ns per value of `WrittenStats.add` and `LatestValues.remember` (best of rounds)."""
    from flowillower.store.latest import LatestValues
    from flowillower.store.written import WrittenStats

    shapes = {
        "3 keys in every call (a training loop)": shaped_batch(lambda i: [0, 1, 2], 20_000),
        "3 keys + 1 every 100 calls": shaped_batch(
            lambda i: [0, 1, 2] + ([3] if i % 100 == 0 else []), 20_000),
        "12 keys, irregular": shaped_batch(
            lambda i: [k for k in range(12) if (i + k) % 4], 6_000),
        "ids past 256, irregular": shaped_batch(
            lambda i: [300, 301, 302] + ([3] if i % 100 == 0 else []), 20_000),
        "2 threads, 3 keys + 1": shaped_batch(
            lambda i: [0, 1, 2] + ([3] if i % 100 == 0 else []), 20_000, 2),
        "40 keys, irregular (value by value)": shaped_batch(
            lambda i: [k for k in range(40) if (i + k) % 3], 2_200),
    }
    print("\nwriter thread, per value of a 60,000-float batch (best of "
          f"{rounds}, ns): statistics vs LatestValues")
    for name, batch in shapes.items():
        n = len(batch["float_cols"][0])
        best = {"stats": 1.0, "latest": 1.0}
        for _ in range(rounds):
            for which, feed in (("stats", WrittenStats("x").add),
                                ("latest", LatestValues().remember)):
                t0 = time.perf_counter()
                feed(batch)
                best[which] = min(best[which], time.perf_counter() - t0)
        print(f"  {name:<40}{best['stats'] / n * 1e9:>7.0f}{best['latest'] / n * 1e9:>7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE_REV)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    with tempfile.TemporaryDirectory() as tmp:
        src = previous_package(opts.baseline, Path(tmp))
        versions: dict[str, tuple[Path | None, bool]] = {"this": (None, False),
                                                         "this, no row": (None, True)}
        if src is not None:
            versions = {f"previous ({opts.baseline})": (src, False), **versions}
        else:
            print(f"(no baseline: cannot read {opts.baseline} from git)")
        results: dict[tuple[str, str], list[float]] = {}
        logging: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(opts.repeats):  # alternate: both see the same machine load
            for name, (path, off) in versions.items():
                fresh = child(path, 1, off)
                warm = child(path, 4, off)
                results.setdefault((name, "fresh process"), []).extend(fresh["finish"])
                # The first finish of a process pays imports: in-process rows are the rest.
                results.setdefault((name, "in-process"), []).extend(warm["finish"][1:])
                logging[name] += fresh["log"] + warm["log"]
    print(f"fw.finish() after {STEPS * 3:,} values, index row included "
          f"(median / max, {opts.repeats} rounds, ms)")
    print(f"{'case':<46}{'median':>9}{'max':>9}{'vs previous':>13}")
    for where in ("in-process", "fresh process"):
        base = None
        for name in versions:
            times = results[(name, where)]
            med = statistics.median(times)
            base = med if base is None else base
            print(f"{name + ', ' + where:<46}{med * 1e3:>9.2f}{max(times) * 1e3:>9.2f}"
                  f"{med / base:>13.2f}")
    print("\nlogging before it, us/step (median of every run):",
          ", ".join(f"{name} {statistics.median(t) * 1e6:.2f}" for name, t in logging.items()))
    per_value()


if __name__ == "__main__":
    main()
