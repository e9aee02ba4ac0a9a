"""What keeping the summary's last values costs the writer thread: `LatestValues.remember`
of this code (containers copied) vs the previous one (kept by reference), one process,
alternating blocks so both see the same machine load.

Batches as the writer gets them: 1,000 calls of 3 floats (scalar logging), and 1,000
calls each logging a small list and a small dict (objects).
Run: python benchmarks/bench_latest.py [--baseline REV] [--rounds 41]
"""

from __future__ import annotations

import argparse
import statistics
import time
from array import array

from _baseline import previous_module

# The commit before the copy (issue 16 item 2): its latest.py keeps values by reference.
BASELINE_REV = "09313d3"


def float_batch(calls: int = 1000, t0: float = 0.0) -> dict:
    """`calls` calls of 3 floats each, times in order (one thread)."""
    return {"ints": [], "objects": [],
            "call_cols": [array("I", [0] * calls), array("q", range(calls)),
                          array("d", [t0 + i * 1e-4 for i in range(calls)]),
                          array("I", [3] * calls)],
            "float_cols": [array("I", [1, 2, 3] * calls),
                           array("d", [0.1, 0.2, 0.3] * calls)]}


def object_batch(calls: int = 1000, t0: float = 0.0) -> dict:
    """`calls` calls each logging a list of 8 numbers and a dict of 3 entries."""
    rows = []
    for i in range(calls):
        t = t0 + i * 1e-4
        rows.append((4, 0, i, t, [0.5] * 8))
        rows.append((5, 0, i, t, {"a": 1, "b": [1, 2], "c": "x"}))
    batch = float_batch(0)
    batch["objects"] = rows
    return batch


def time_blocks(classes: dict, make, rounds: int, per_block: int = 20) -> dict[str, list]:
    """Thread CPU seconds per `remember` call of each class, alternating blocks."""
    out: dict[str, list[float]] = {name: [] for name in classes}
    latest = {name: cls() for name, cls in classes.items()}
    t = 0.0
    for r in range(rounds):
        order = list(latest.items())
        for name, obj in order if r % 2 else order[::-1]:
            batches = [make(t0=t + i) for i in range(per_block)]
            start = time.thread_time()
            for batch in batches:
                obj.remember(batch)
            out[name].append((time.thread_time() - start) / per_block)
        t += per_block
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE_REV)
    parser.add_argument("--rounds", type=int, default=41)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    from flowillower.store.latest import LatestValues

    classes = {"this": LatestValues}
    old = previous_module(opts.baseline, "store/latest.py", "flowillower.store.latest_prev")
    if old is not None:
        classes = {"previous": old.LatestValues, **classes}
    print("LatestValues.remember per batch of 1,000 calls, us of thread CPU time "
          f"(median of {opts.rounds} alternating blocks; previous = {opts.baseline})")
    print(f"{'batch':<34}{'previous':>10}{'this':>10}{'this/previous':>15}")
    for label, make in (("3 floats per call (scalars)", float_batch),
                        ("a list + a dict per call", object_batch)):
        times = time_blocks(classes, make, opts.rounds)
        this = statistics.median(times["this"])
        if "previous" in times:
            prev = statistics.median(times["previous"])
            pairs = statistics.median(t / p for t, p in zip(times["this"], times["previous"]))
            print(f"{label:<34}{prev * 1e6:>10.1f}{this * 1e6:>10.1f}{pairs:>15.3f}")
        else:
            print(f"{label:<34}{'-':>10}{this * 1e6:>10.1f}{'-':>15}")


if __name__ == "__main__":
    main()
