"""Logging throughput and finish latency: flowillower vs a naive JSON-lines append, and
this code vs the previous one (before issue 13), all measured in one run.

Each case logs N steps x 3 floats in a fresh process, from the first call to a finished,
durable run; "finish" is the `fw.finish()` call alone. The previous package is
`git archive BASELINE_REV` unpacked in a temporary folder and run the same way.
The per-call rows time `Run.log_metrics` (3 floats at an explicit step, the hot path) of
the previous `run.py` (loaded from git next to today's modules) and of this one, in one
process, alternating blocks so both see the same machine load.
Run: python benchmarks/bench_logging.py [--steps 20000] [--repeats 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _baseline import env_running, previous_module, previous_package

# "previous" in every row below: logging as before issue 13 (thread-safe logging, the
# I/O-fault writer). 810530e only moved RecordBuffer into store/buffer.py after 501d721,
# the last commit before issue 13, so its run.py still loads beside today's modules (the
# per-call rows import the previous run.py next to today's store/).
BASELINE_REV = "810530e"

CASE = r"""
import sys, time, json, os
mode, steps, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
values = [(0.5 / (i + 1), 0.1 + i * 1e-6, float(i % 7)) for i in range(steps)]
tf = None
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
    tf = time.perf_counter()
    fw.finish()
    t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "finish": None if tf is None else t1 - tf}))
"""


def measure(mode: str, steps: int, repeats: int, src: Path | None = None
            ) -> tuple[float, float | None, int]:
    """Median seconds (whole case, finish alone) and the bytes it left on disk."""
    env = env_running(src)  # this package shadowed by the previous one (if src)
    times, finishes, size = [], [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CASE, mode, str(steps), tmp],
                                 capture_output=True, text=True, check=True, env=env)
            result = json.loads(out.stdout)
            times.append(result["seconds"])
            if result["finish"] is not None:
                finishes.append(result["finish"])
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return (statistics.median(times), statistics.median(finishes) if finishes else None,
            size)


def per_call(rev: str, rounds: int = 61, block: int = 5_000) -> dict[str, list[float]]:
    """CPU seconds of the logging thread per `log_metrics` call of each Run class, blocks
    alternating in order (thread CPU time: a block is not charged for the time the
    machine's other processes or our writer thread had the core)."""
    from flowillower.run import Run

    classes = {"this": Run}
    # The previous run.py next to today's modules: its hot path only needs
    # `RecordBuffer`, which keeps its fields.
    old = previous_module(rev, "run.py", "flowillower.run_previous")
    if old is not None:
        classes = {"previous": old.Run, **classes}
    out: dict[str, list[float]] = {name: [] for name in classes}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: cls(project="bench", dir=tmp, snapshot=False)
                for name, cls in classes.items()}
        step = 0
        for r in range(rounds):
            order = list(runs.items())
            for name, run in order if r % 2 else order[::-1]:
                log = run.log_metrics
                t0 = time.thread_time()
                for i in range(step, step + block):
                    log({"loss": 0.1, "lr": 0.2, "acc": 0.3}, i)
                out[name].append((time.thread_time() - t0) / block)
            step += block
        for run in runs.values():
            run.finish()
    return out


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
    parser.add_argument("--baseline", default=BASELINE_REV)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    n = opts.steps
    with tempfile.TemporaryDirectory() as tmp:
        src = previous_package(opts.baseline, Path(tmp))
        naive, _, naive_size = measure("naive", n, opts.repeats)
        cases = [("flowillower log_metrics", None)]
        if src is not None:
            cases.insert(0, (f"  previous ({opts.baseline})", src))
        rows = {name: measure("flowillower", n, opts.repeats, s) for name, s in cases}
        long_rows = {name: measure("flowillower", 10 * n, max(3, opts.repeats // 2), s)
                     for name, s in cases}
    dbg, _, _ = measure("debug", n, opts.repeats)
    print(f"{n:,} steps x 3 floats, first call -> finished and fsynced "
          f"(fresh process, median of {opts.repeats})")
    print(f"{'case':<34}{'us/step':>10}{'bytes/value':>13}{'vs naive':>10}{'finish ms':>11}")
    print(f"{'naive JSON lines (baseline)':<34}{naive / n * 1e6:>10.2f}"
          f"{naive_size / n / 3:>13.1f}{1:>10.2f}{'-':>11}")
    for name, (secs, fin, size) in rows.items():
        print(f"{name:<34}{secs / n * 1e6:>10.2f}{size / n / 3:>13.1f}{secs / naive:>10.2f}"
              f"{fin * 1e3:>11.1f}")
    print(f"{'flowillower debug() log call':<34}{dbg / n * 1e6:>10.3f}{'-':>13}{'-':>10}")
    print(f"\nfw.finish() after {10 * n:,} steps (x3 floats), fresh process, ms:",
          ", ".join(f"{name.strip()} {fin * 1e3:.1f}" for name, (_, fin, _) in
                    long_rows.items()))
    calls = per_call(opts.baseline)
    print("\nHot path, Run.log_metrics(3 floats, step=i), one process, alternating "
          "blocks of 5,000 calls (us of thread CPU time per call):")
    for name, times in calls.items():
        print(f"  {name:<10} min {min(times) * 1e6:.3f}  median "
              f"{statistics.median(times) * 1e6:.3f}")
    if "previous" in calls:
        ratio = min(calls["this"]) / min(calls["previous"])
        med = statistics.median(calls["this"]) / statistics.median(calls["previous"])
        pairs = statistics.median(t / p for t, p in zip(calls["this"], calls["previous"]))
        print(f"  this / previous: {ratio:.3f} (min), {med:.3f} (median), "
              f"{pairs:.3f} (median of adjacent blocks)")
    growth = block_growth()
    print("\nNo growth: us/step per block of 10,000 steps:",
          " ".join(f"{b / 10_000 * 1e6:.2f}" for b in growth),
          f"(10th/1st = {growth[-1] / growth[0]:.2f})")
    print(f"import flowillower: {import_time() * 1000:.0f} ms over bare interpreter start")


if __name__ == "__main__":
    main()
