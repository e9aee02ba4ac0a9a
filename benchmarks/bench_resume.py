"""What resuming costs a reader: `RunReader.load` of a run written in one segment against
the same run killed and resumed (two segment files, the second rewinding 10 % of the
steps, whose superseded values the reader leaves out), and the cost of a fork's copy.

Prints a table; the one-segment read is the same-run baseline.

    python benchmarks/bench_resume.py [--steps 200000] [--keys 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import flowillower as fw
from flowillower import api
from flowillower.store.reader import RunReader


def _log(steps: range, keys: int, offset: float = 0.0) -> None:
    names = [f"m{k}" for k in range(keys)]
    for step in steps:
        fw.log_metrics({name: offset + step for name in names}, step=step)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    n, keys = opts.steps, opts.keys
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".flowillower"
        os.environ["FLOWILLOWER_DIR"] = str(store)
        fw.init(id="whole", snapshot=False)
        _log(range(n), keys)
        fw.finish()
        cut = int(n * 0.6)
        fw.init(id="resumed", snapshot=False)
        _log(range(int(n * 0.7)), keys)
        fw.finish("killed")
        fw.init(id="resumed", resume="must", snapshot=False)
        _log(range(cut, n), keys, offset=0.5)
        fw.finish()
        whole, resumed = RunReader(store / "runs" / "whole"), RunReader(store / "runs" / "resumed")
        assert len(resumed.load().series["m0"].values) == n  # each step once
        t_whole = _best(whole.load, opts.repeats)
        t_resumed = _best(resumed.load, opts.repeats)
        api._current = None
        t_fork = _best(lambda: (fw.init(fork_from=("resumed", n // 2), snapshot=False),
                                fw.finish()), 1)
    values = n * keys
    print(f"bench_resume: {n} steps x {keys} keys ({values} values), best of "
          f"{opts.repeats}")
    print(f"{'read':<44}{'seconds':>10}{'ns/value':>10}")
    print(f"{'one segment (baseline)':<44}{t_whole:>10.4f}{t_whole / values * 1e9:>10.1f}")
    rows = [("two segments, 10 % rewound (superseded)", t_resumed),
            ("fork at the middle (copy of half the values)", t_fork)]
    for label, t in rows:
        print(f"{label:<44}{t:>10.4f}{t / values * 1e9:>10.1f}")
    print(f"resumed / baseline: {t_resumed / t_whole:.2f}x")


if __name__ == "__main__":
    main()
