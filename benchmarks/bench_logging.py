"""Logging throughput: flowillower vs a naive JSON-lines append, measured in one process.

Each case logs N steps x 3 floats, from the first call to a finished, durable run.
Run: python benchmarks/bench_logging.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = r"""
import sys, time, json, os
mode, steps, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
values = [(0.5 / (i + 1), 0.1 + i * 1e-6, float(i % 7)) for i in range(steps)]
if mode == "naive":
    t0 = time.perf_counter()
    with open(os.path.join(path, "log.jsonl"), "a") as fh:
        for i, (a, b, c) in enumerate(values):
            fh.write(json.dumps({"step": i, "time": time.time(), "loss": a, "lr": b, "acc": c}) + "\n")
        fh.flush(); os.fsync(fh.fileno())
    t1 = time.perf_counter()
elif mode == "debug":
    import flowillower as fw
    fw.debug(True)
    t0 = time.perf_counter()
    for i in range(steps):
        fw.log("loss", 0.5)
    t1 = time.perf_counter()
else:
    import flowillower as fw
    run = fw.init(project="bench", dir=path, snapshot=False)
    t0 = time.perf_counter()
    for i, (a, b, c) in enumerate(values):
        fw.log_metrics({"loss": a, "lr": b, "acc": c}, step=i)
    fw.finish()
    t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0}))
"""


def measure(mode: str, steps: int, repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CASE, mode, str(steps), tmp],
                                 capture_output=True, text=True, check=True)
            times.append(json.loads(out.stdout)["seconds"])
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return statistics.median(times), size


def block_growth(blocks: int = 10, block: int = 10_000) -> list[float]:
    """Seconds per block of `block` steps, to show the cost does not grow."""
    import flowillower as fw

    with tempfile.TemporaryDirectory() as tmp:
        fw.init(project="bench", dir=tmp, snapshot=False)
        out = []
        step = 0
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(block):
                fw.log_metrics({"loss": 0.1, "lr": 0.2, "acc": 0.3}, step=step)
                step += 1
            out.append(time.perf_counter() - t0)
        fw.finish()
    return out


def import_time(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import flowillower"], check=True)
        times.append(time.perf_counter() - t0)
    base = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
    return statistics.median(times) - statistics.median(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    n = opts.steps
    naive, naive_size = measure("naive", n, opts.repeats)
    ours, our_size = measure("flowillower", n, opts.repeats)
    dbg, _ = measure("debug", n, opts.repeats)
    print(f"{n:,} steps x 3 floats, first call -> finished and fsynced (median of {opts.repeats})")
    print(f"{'case':<34}{'us/step':>10}{'bytes/value':>13}{'vs naive':>10}")
    print(f"{'naive JSON lines (baseline)':<34}{naive / n * 1e6:>10.2f}{naive_size / n / 3:>13.1f}{1:>10.2f}")
    print(f"{'flowillower log_metrics':<34}{ours / n * 1e6:>10.2f}{our_size / n / 3:>13.1f}{ours / naive:>10.2f}")
    print(f"{'flowillower debug() log call':<34}{dbg / n * 1e6:>10.3f}{'-':>13}{'-':>10}")
    growth = block_growth()
    print("\nNo growth: us/step per block of 10,000 steps:",
          " ".join(f"{b / 10_000 * 1e6:.2f}" for b in growth),
          f"(10th/1st = {growth[-1] / growth[0]:.2f})")
    print(f"import flowillower: {import_time() * 1000:.0f} ms over bare interpreter start")
    os.environ.setdefault("_FW_BENCH_DONE", "1")


if __name__ == "__main__":
    main()
