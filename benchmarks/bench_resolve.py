"""Run references: `Store.resolve` / `Store.run_dir` per call on a store of 1,000 runs,
the previous package vs this one (issue 13's store boundary), in one run.

Every reference kind a user types: a full id (the folder exists: now also checked to be a
real run folder, not a link, inside `runs/`), a unique id prefix, the id's random suffix
and a run name (these look the index up after syncing it with the run folders, which is
most of their cost). "first lookup" is `Store(...)` plus one name lookup on a store whose
index was never built (it indexes the 1,000 runs). The naive floor is
`os.path.isdir(runs/<id>)`, the least any lookup by full id can do.

Each version runs in fresh processes (`--rounds` each) on its own store (the index schema
may differ), the versions alternating; the previous package is `git archive BASELINE_REV`
unpacked in a temporary folder (benchmarks/_baseline.py). Best of `--repeats` passes over
the 1,000 ids, of half as many over 10 references of each other kind (each call syncs
the index).
Run: python benchmarks/bench_resolve.py [--runs 1000] [--repeats 5] [--rounds 2]
     [--baseline REV]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _baseline import check_imported_from, env_running, previous_package

# The last commit before issue 13's work (see bench_checkpoint_trust.py); store/resolve.py
# came after it.
BASELINE_REV = "501d721"
SAMPLE = 10  # references of each index-lookup kind per pass (each call syncs the index)


def run_id(i: int) -> str:
    """Ids shaped like flowillower's: date-time-random; the times differ, so the first 15
    characters are a unique prefix, and the random part is a unique suffix."""
    when = f"{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}"
    return f"20260101-{when}-{hashlib.sha256(str(i).encode()).hexdigest()[:8]}"


def make_store(root: Path, n: int) -> list[str]:
    """`n` finished runs: a run.json and a summary.json each (what the index and the
    resolver read; a run without a summary counts as running and is re-checked at
    every index sync)."""
    ids = [run_id(i) for i in range(n)]
    assert len({i[-8:] for i in ids}) == n and len({i[:15] for i in ids}) == n
    for i, rid in enumerate(ids):
        folder = root / "runs" / rid
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(
            {"id": rid, "name": f"name-{i}", "project": "bench", "created": 1.7e9 + i}))
        (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    return ids


def per_call(fn: Callable[[str], Any], refs: list[str], repeats: int) -> float:
    """Best CPU seconds (user + system) per call over `repeats` passes: the lookups are
    CPU and cached-metadata work, and CPU time is steadier than wall time on a shared
    machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for ref in refs:
            fn(ref)
        best = min(best, (time.process_time() - t0) / len(refs))
    return best


def measure(n: int, repeats: int) -> dict[str, Any]:
    """All rows for the imported version, in this process."""
    from flowillower.store.catalog import Store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / ".flowillower"
        ids = make_store(root, n)
        pick = ids[:: max(1, n // SAMPLE)][:SAMPLE]
        t0 = time.perf_counter()
        store = Store(root)
        assert store.resolve("name-7") == ids[7]
        first = time.perf_counter() - t0
        kinds = {"full id": ids, "id prefix": [i[:15] for i in pick],
                 "id suffix": [i[-8:] for i in pick],
                 "name": [f"name-{ids.index(i)}" for i in pick]}
        for refs in kinds.values():  # every kind must find its run, in both versions
            assert [store.run_dir(r).name for r in refs[:3]] == [
                store.resolve(r) for r in refs[:3]]
        rows = {}
        for kind, refs in kinds.items():
            passes = repeats if kind == "full id" else max(1, repeats // 2)
            rows[kind] = (per_call(store.resolve, refs, passes),
                          per_call(store.run_dir, refs, passes))
        runs = root / "runs"
        floor = per_call(lambda r: os.path.isdir(runs / r), ids, repeats)
    return {"rows": rows, "first": first, "floor": floor}


def in_child(src: Path | None, n: int, repeats: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", str(src) if src else "-",
                          "--runs", str(n), "--repeats", str(repeats)],
                         capture_output=True, text=True, env=env_running(src))
    if out.returncode:
        raise SystemExit(f"child ({src or 'this package'}) failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per version")
    parser.add_argument("--baseline", default=BASELINE_REV)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    if opts.child:
        check_imported_from(None if opts.child == "-" else Path(opts.child))
        print(json.dumps(measure(opts.runs, opts.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = previous_package(opts.baseline, Path(tmp))
        versions: list[tuple[str, Path | None]] = [("this", None)]
        if src is None:
            print(f"(no baseline: cannot read {opts.baseline} from git)")
        else:
            versions.insert(0, (f"previous ({opts.baseline})", src))
        got: dict[str, dict[str, Any]] = {}
        for r in range(opts.rounds):  # versions alternating, in both orders; keep the best
            for name, s in versions if r % 2 == 0 else versions[::-1]:
                res = in_child(s, opts.runs, opts.repeats)
                best = got.setdefault(name, res)
                best["rows"] = {k: [min(a, b) for a, b in zip(best["rows"][k], v)]
                                for k, v in res["rows"].items()}
                best["first"] = min(best["first"], res["first"])
                best["floor"] = min(best["floor"], res["floor"])
    print(f"Store.resolve / Store.run_dir on {opts.runs:,} runs, CPU us per call "
          f"(best of {opts.repeats} passes x {opts.rounds} processes per version)")
    names = list(got)
    print(f"{'reference':<12}" + "".join(f"{'resolve ' + n.split()[0]:>18}"
                                         f"{'run_dir ' + n.split()[0]:>18}" for n in names)
          + ("" if len(names) < 2 else f"{'run_dir this/prev':>19}"))
    for kind in got[names[-1]]["rows"]:
        cells = [got[n]["rows"][kind] for n in names]
        line = f"{kind:<12}" + "".join(f"{r * 1e6:>18.1f}{d * 1e6:>18.1f}" for r, d in cells)
        if len(cells) == 2:
            line += f"{cells[1][1] / cells[0][1]:>19.2f}"
        print(line)
    print(f"{'first lookup':<12}" + "".join(f"{got[n]['first'] * 1e6:>36.0f}" for n in names)
          + "   (wall: Store() + one name, index built from scratch)")
    print(f"naive floor, os.path.isdir(runs/<id>): {got[names[-1]]['floor'] * 1e6:.1f} us")


if __name__ == "__main__":
    main()
