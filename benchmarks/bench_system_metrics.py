"""What the system-metrics sampler costs: CPU time of a logging run with and without it.

Two runs in this process, one after the other, each for --seconds of wall time, log a
value every 10 ms from the main thread (a training loop's cadence); the second also
samples system metrics at the defaults (readings every 1 s, means logged every 10 s).
The baseline is the first run (no sampler) of the same invocation. Columns: process CPU
time over the run and as a share of one core; the sampler's own thread CPU time (its
cost, measured by the thread itself). Then the cost of one reading and of one logged
interval, timed in a loop, gives the share of one core at the defaults without the
noise of the rest of the process. GPUs are read when nvidia-ml-py finds a driver.
Target (issue 16): <= 0.5 % of one core.
Run: python benchmarks/bench_system_metrics.py [--seconds 30] [--reps 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("FLOWILLOWER_DIR", tempfile.mkdtemp(prefix="fw-bench-sys-"))

import flowillower as fw  # noqa: E402
from flowillower.sysmetrics import SystemSampler  # noqa: E402


def logging_run(seconds: float, sample: bool) -> tuple[float, float, float, int]:
    """(wall s, process CPU s, sampler thread CPU s, means logged) of one run."""
    run = fw.init(project="bench-sys", snapshot=False)
    fw.log("loss", 1.0, step=0)
    sampler = fw.system_metrics() if sample else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    step = 0
    while time.perf_counter() - wall0 < seconds:
        step += 1
        fw.log("loss", 1.0 / step, step=step)
        time.sleep(0.01)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    thread_cpu = sampler.cpu_seconds if sampler is not None else 0.0
    logged = sampler.logged if sampler is not None else 0
    run.finish()
    if sampler is not None:
        sampler.stop()
        thread_cpu = sampler.cpu_seconds
    return wall, cpu, thread_cpu, logged


def per_call_costs(reps: int) -> tuple[float, float, int]:
    """(µs per reading, µs per logged interval, GPUs read) at the default settings."""
    run = fw.init(project="bench-sys-calls", snapshot=False)
    fw.log("x", 1.0)
    sampler = SystemSampler(run)  # not started: its methods timed in this thread
    sampler.find_gpus()  # the same discovery the thread does first
    sampler.sample()
    t0 = time.thread_time()
    for _ in range(reps):
        sampler.sample()
    reading = (time.thread_time() - t0) / reps * 1e6
    before = sampler.counters()
    t0 = time.thread_time()
    for i in range(reps):
        after = sampler.counters()
        means = sampler.sample()
        means.update(sampler.rates(before, after, 10.0))
        run.log_metrics(means, step=i, role="sys")
    interval = (time.thread_time() - t0) / reps * 1e6 - reading
    gpus = len(sampler.gpus)
    run.finish()
    return reading, interval, gpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=300)
    args, _unknown = parser.parse_known_args()
    base = logging_run(args.seconds, sample=False)
    with_sampler = logging_run(args.seconds, sample=True)
    print(f"{'run (same process, --seconds ' + str(args.seconds) + ')':44} {'wall s':>8} "
          f"{'CPU s':>8} {'% core':>8} {'sampler CPU s':>14} {'means':>6}")
    for label, (wall, cpu, thread_cpu, logged) in (
            ("baseline: logging, no sampler", base),
            ("logging + sampler (1 s readings, 10 s means)", with_sampler)):
        print(f"{label:44} {wall:8.2f} {cpu:8.3f} {100 * cpu / wall:8.3f} "
              f"{thread_cpu:14.4f} {logged:6d}")
    extra = with_sampler[1] / with_sampler[0] - base[1] / base[0]
    own = with_sampler[2] / with_sampler[0]
    print(f"sampler's share of one core: {100 * own:.4f} % (its thread); process CPU "
          f"difference: {100 * extra:+.4f} % (noisy on a loaded box)")
    reading, interval, gpus = per_call_costs(args.reps)
    share = (reading * 1.0 + interval / 10.0) / 1e6
    print(f"one reading: {reading:.0f} µs; one logged interval: {interval:.0f} µs "
          f"({gpus} GPU(s) read); at the defaults: {100 * share:.4f} % of one core "
          f"(target <= 0.5 %)")


if __name__ == "__main__":
    main()
