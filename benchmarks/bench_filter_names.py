"""What resolving filter names against the runs costs: 10,000 run rows (20 dotted args, 10
metrics each), one filter compiled and applied to all of them.

Baseline measured in the same run: `parse_filter`, the per-run lookup the CLI and UI used
before (no resolution, no error for unknown names). Also timed: `example_filter`, the
placeholder the runs table shows (cached per store generation by the server).
Run: python benchmarks/bench_filter_names.py [--runs 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import time

from flowillower.queries.filters import compile_filter, example_filter, parse_filter


def rows_like_a_sweep(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        args = {f"group{g}.param_{k}": rng.choice([0.1, 0.2, 0.3]) for g in range(4)
                for k in range(5)}
        args["training.learning_rate"] = [0.001, 0.003, 0.01][i % 3]
        metrics = {f"val/metric_{m}": {"last": rng.random(), "min": 0.0, "max": 1.0}
                   for m in range(9)}
        metrics["lr"] = {"last": 5e-7, "min": 5e-7, "max": 1e-3}
        rows.append({"id": f"r{i}", "name": f"run-{i}", "status": "success", "tags": [],
                     "notes": "", "args": args, "metrics": metrics})
    return rows


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    rows = rows_like_a_sweep(opts.runs)
    text = "learning_rate < 0.002 and metric_3 > 0.5"
    resolved = "`args.training.learning_rate` < 0.002 and `metrics.val/metric_3` > 0.5"
    compiled = compile_filter(text, rows)
    kept = [r["id"] for r in rows if compiled.predicate(r)]
    assert kept == [r["id"] for r in rows if parse_filter(resolved)(r)] and kept

    def ours() -> int:
        c = compile_filter(text, rows)
        return sum(1 for r in rows if c.predicate(r))

    def baseline() -> int:  # the old engine, given the explicit spellings it needs
        p = parse_filter(resolved)
        return sum(1 for r in rows if p(r))

    t_ours, t_base = best_of(ours, opts.repeats), best_of(baseline, opts.repeats)
    t_example = best_of(lambda: example_filter(rows), opts.repeats)
    print(f"{opts.runs:,} runs, filter {text!r} ({len(kept):,} kept), best of {opts.repeats}")
    print(f"{'case':<44}{'seconds':>10}")
    print(f"{'compile_filter (names resolved) + apply':<44}{t_ours:>10.4f}")
    print(f"{'baseline: parse_filter (per-run lookup)':<44}{t_base:>10.4f}")
    print(f"{'example_filter (the placeholder)':<44}{t_example:>10.4f}")
    print(f"resolution overhead: {t_ours / t_base:.2f}x the baseline")


if __name__ == "__main__":
    main()
