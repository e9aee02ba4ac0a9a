"""Finish latency: `FrameWriter.close()` and `fw.finish()` after 60,000 logged values.

The baseline is the previous writer (before issue 13), loaded from git into a temporary
module and timed in the same process, alternating with the current one. The floor is a
bare write + fsync of the same frame's bytes (fsync time dominates and varies with load);
"in RAM" rows close on /dev/shm, where fsync is free: what is left is our own cost.
"Fresh process" rows time the first (and only) finish of a new Python process.
Run: python benchmarks/bench_finish.py [--repeats 15] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from types import ModuleType
from typing import Any

from _baseline import ROOT, previous_module

BASELINE_REV = "f4b0b39^"  # the commit before the I/O-fault / fast-finish writer
STEPS = 20_000  # x 3 floats = 60,000 values


def previous_writer(rev: str) -> ModuleType | None:
    """The writer module as of `rev`, importable next to today's `format`/`buffer`."""
    module = previous_module(rev, "store/writer.py", "flowillower.store.writer_baseline")
    if module is None:
        return None
    base = module.FrameWriter

    class FrameWriter(base):  # today's Run passes options the old writer did not take
        def __init__(self, path: Path, buffer: Any, interval: float = 0.5, **_: Any) -> None:
            super().__init__(path, buffer, interval)

    FrameWriter.__module__ = module.__name__
    module.FrameWriter = FrameWriter
    return module


class Queued:
    """A buffer stand-in whose `drain()` hands over one prepared batch (60,000 values)."""

    def __init__(self) -> None:
        self.batch: dict[str, Any] | None = None

    def fill(self) -> None:
        n = STEPS
        self.batch = {
            "call_cols": [array("I", [0] * n), array("q", range(n)),
                          array("d", [1.7e9 + i * 1e-3 for i in range(n)]), array("I", [3] * n)],
            "float_cols": [array("I", [0, 1, 2] * n),
                           array("d", [0.5 / (i + 1) for i in range(3 * n)])],
            "ints": [], "objects": [], "contexts": {}, "events": [],
            "keys": {0: ("loss", "metric"), 1: ("lr", "metric"), 2: ("acc", "metric")}}

    def drain(self) -> dict[str, Any] | None:
        batch, self.batch = self.batch, None
        return batch


def time_close(writer_cls: type, folder: Path, repeats: int) -> list[float]:
    """Seconds of close() with 60,000 values queued since the last periodic flush."""
    out = []
    for i in range(repeats):
        source = Queued()
        writer = writer_cls(folder / f"{writer_cls.__module__}.{i}.fwl", source, 0.5)
        time.sleep(0.05)  # the thread is asleep in its interval, as in a real run
        source.fill()
        t0 = time.perf_counter()
        writer.close()
        out.append(time.perf_counter() - t0)
    return out


def time_finish(writer_cls: type, folder: Path, repeats: int) -> list[float]:
    """Seconds of fw.finish() after 20,000 steps x 3 floats, with `writer_cls` in use."""
    import flowillower as fw
    import flowillower.run as run_module

    saved = run_module.FrameWriter
    run_module.FrameWriter = writer_cls
    out = []
    try:
        for _ in range(repeats):
            fw.init(project="bench", dir=str(folder), snapshot=False)
            for i in range(STEPS):
                fw.log_metrics({"loss": 0.5 / (i + 1), "lr": 0.1, "acc": float(i % 7)}, step=i)
            t0 = time.perf_counter()
            fw.finish()
            out.append(time.perf_counter() - t0)
    finally:
        run_module.FrameWriter = saved
    return out


def time_fresh(writer_cls: type, folder: Path, repeats: int) -> list[float]:
    """fw.finish() in a fresh process (what a script sees at its end), via --child."""
    which = "new" if writer_cls.__module__ == "flowillower.store.writer" else "old"
    out = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", which, str(folder)],
                              capture_output=True, text=True, check=True)
        out.append(float(proc.stdout.split()[-1]))
    return out


def child(which: str, folder: str, rev: str) -> None:
    from flowillower.store.writer import FrameWriter

    old = previous_writer(rev) if which == "old" else None
    cls = old.FrameWriter if old is not None else FrameWriter
    print(time_finish(cls, Path(folder), 1)[0])


def time_close_in_ram(writer_cls: type, _folder: Path, repeats: int) -> list[float]:
    """close() on /dev/shm (tmpfs): the same work with a free fsync, i.e. our own cost."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        return time_close(writer_cls, Path(tmp), repeats)


def time_floor(_cls: Any, folder: Path, repeats: int) -> list[float]:
    """A bare write + fsync of one frame's bytes (60,000 values, encoded as we do)."""
    from flowillower.store.format import encode_frame

    source = Queued()
    source.fill()
    batch = source.drain()
    assert batch is not None
    data = encode_frame(keys=batch["keys"], call_cols=batch["call_cols"],
                        float_cols=batch["float_cols"])
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        with open(folder / f"floor{i}.bin", "wb", buffering=0) as fh:
            fh.write(data)
            os.fsync(fh.fileno())
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline", default=BASELINE_REV)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    if opts.child:
        child(*opts.child, opts.baseline)
        return
    from flowillower.store.writer import FrameWriter

    old = previous_writer(opts.baseline)
    cases: list[tuple[str, Any, Any]] = []
    if old is not None:
        cases += [("close(), previous writer (baseline)", time_close, old.FrameWriter),
                  ("close(), this writer", time_close, FrameWriter),
                  ("fw.finish(), previous writer", time_finish, old.FrameWriter),
                  ("fw.finish(), this writer", time_finish, FrameWriter),
                  ("fw.finish(), fresh process, previous", time_fresh, old.FrameWriter),
                  ("fw.finish(), fresh process, this", time_fresh, FrameWriter)]
    else:
        print(f"(no baseline: cannot read {opts.baseline} from git)")
        cases += [("close(), this writer", time_close, FrameWriter),
                  ("fw.finish(), this writer", time_finish, FrameWriter)]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        if old is not None:
            cases.append(("close() in RAM, previous writer", time_close_in_ram,
                          old.FrameWriter))
        cases.append(("close() in RAM, this writer", time_close_in_ram, FrameWriter))
    cases.append(("write + fsync of the frame alone (floor)", time_floor, None))
    results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory(dir=ROOT.parent if os.access(ROOT.parent, os.W_OK)
                                     else None) as tmp:
        # Alternate the cases round by round so all see the same machine (and disk) load.
        for _ in range(opts.repeats):
            for name, timer, cls in cases:
                results[name] += timer(cls, Path(tmp), 1)
    base = statistics.median(results[cases[0][0]])
    print(f"finish latency after {STEPS * 3:,} values (median / max of {opts.repeats}, ms)")
    print(f"{'case':<40}{'median':>9}{'max':>9}{'vs first':>10}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<40}{med * 1e3:>9.2f}{max(times) * 1e3:>9.2f}{med / base:>10.2f}")


if __name__ == "__main__":
    main()
