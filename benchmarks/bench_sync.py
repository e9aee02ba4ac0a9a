"""Sharing many runs through one bare git remote: push and pull, first and incremental.

A store of N finished runs (50 steps of two metrics each) is pushed to a bare remote, then
one new run is added and pushed, a fresh store pulls everything, one more run is pushed
and the fresh store pulls it; another fresh store pulls 16 runs picked by an id prefix
(`pull --runs`). The runs are made quickly: one real run written through
the API (`fw.init` / `fw.log` / `fw.finish`) is copied N times with new ids (run.json and
summary.json name the new id) and each copy's record file gets one more intact frame with
a value of its own, so no two runs share a blob (a remote holding N identical files
would look smaller than it is).

Measured in the same run, each in a child process on its own copy of the store:
* this package;
* the package before this benchmark's changes (`git archive` of `--baseline-rev`,
  `_baseline.py`), which commits each run with a chain of git processes and offers
  every run on every push, and reads each pulled run with its own processes;
* the floor: plain `git push` / `git fetch` of the same run refs once they exist.

Also printed: bytes on the remote per run next to the store's own bytes per run.

Run: python benchmarks/bench_sync.py [--runs N] [--full] [--no-baseline]
(1,000 runs by default, 10,000 with --full.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _baseline import env_running, previous_package

BASELINE_REV = "739ba5f~1"  # the last commit before incremental push and batched pull

CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from _baseline import check_imported_from
src = None if sys.argv[2] == "-" else Path(sys.argv[2])
check_imported_from(src)
from flowillower.gitops.sync import pull, push
from bench_sync import add_run
store, remote, fresh = Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
times = {}
def timed(name, fn):
    t0 = time.perf_counter(); out = fn(); times[name] = time.perf_counter() - t0
    return out
timed("first push", lambda: push(store, remote))
add_run(store, "new-1")
pushed = timed("push of 1 new run", lambda: push(store, remote))
got = timed("fresh pull", lambda: pull(fresh, remote))
add_run(store, "new-2")
push(store, remote)
again = timed("pull of 1 new run", lambda: pull(fresh, remote))
try:  # pull --runs: 16 runs picked out of all by an id prefix (the previous package lacks it)
    from flowillower.gitops.pullselect import RunSelection
    picked = timed("pull --runs (16 runs)", lambda: pull(
        fresh.with_name("picked"), remote, runs=RunSelection.parse("20260101-000000-0000000")))
    times["runs added (pull --runs)"] = picked["runs_added"]
except ImportError:
    pass
times["pushed (incremental)"] = pushed["pushed"]
times["runs added (fresh pull)"] = got["runs_added"]
times["runs added (incremental pull)"] = again["runs_added"]
print(json.dumps(times))
"""


def make_template(folder: Path) -> Path:
    """One real run through the API: 50 steps of loss and acc."""
    code = ("import flowillower as fw\n"
            "fw.init(project='bench', name='template')\n"
            "for s in fw.loop('step', range(50)):\n"
            "    fw.log('loss', 1 / (1 + s)); fw.log('acc', s / 50)\n"
            "fw.finish()\n")
    folder.mkdir(parents=True)
    env = {**os.environ, "FLOWILLOWER_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, check=True)
    return next((folder / ".flowillower" / "runs").iterdir())


def _seed_frame(seed: int) -> bytes:
    from array import array

    from flowillower.store.format import encode_frame

    return encode_frame(keys={900: ("bench_seed", "metric")},
                        call_cols=[array("I", [0]), array("q", [0]),
                                   array("d", [1.7e9 + seed]), array("I", [1])],
                        float_cols=[array("I", [900]), array("d", [float(seed)])])


def copy_run(template: Path, runs_dir: Path, run_id: str, seed: int) -> None:
    """`template`'s files under a new id, with a record frame of its own."""
    target = runs_dir / run_id
    target.mkdir(parents=True)
    for name in ("run.json", "summary.json"):
        doc = json.loads((template / name).read_text())
        doc["id"] = run_id
        (target / name).write_text(json.dumps(doc, indent=1))
    (target / "data.fwl").write_bytes((template / "data.fwl").read_bytes() + _seed_frame(seed))
    past = time.time() - 60  # finished a minute ago
    for path in target.iterdir():
        os.utime(path, (past, past))


def add_run(store: Path, suffix: str) -> None:
    """One more finished run in `store` (a copy of its first run)."""
    runs = store / "runs"
    template = min(p for p in runs.iterdir() if p.is_dir())
    copy_run(template, runs, f"20990101-000000-{suffix}", hash(suffix) % 10**6)


def make_store(template: Path, store: Path, count: int) -> None:
    for i in range(count):
        copy_run(template, store / "runs", f"20260101-{i // 1000:06d}-{i:08x}", i)


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(sum of file sizes, disk blocks in bytes) under `folder`."""
    size = blocks = 0
    for path in folder.rglob("*"):
        st = path.lstat()
        if path.is_file():
            size += st.st_size
            blocks += st.st_blocks * 512
    return size, blocks


def run_child(tmp: Path, label: str, src: Path | None, store: Path) -> dict[str, float]:
    work = tmp / label
    mine = work / "store"
    shutil.copytree(store, mine, symlinks=True)
    remote = work / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    here = str(Path(__file__).parent)
    env = env_running(src)
    env["PYTHONPATH"] = os.pathsep.join([*([str(src)] if src else []), here,
                                         os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD, here, str(src) if src else "-",
                          str(mine), str(remote), str(work / "fresh")],
                         env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["remote bytes"] = folder_bytes(remote)[0]
    return result


def floor(tmp: Path, store: Path) -> dict[str, float]:
    """Plain git: push the run refs a store already has to a new bare remote, fetch them."""
    remote = tmp / "floor.git"
    fresh = tmp / "floor-fresh.git"
    for repo in (remote, fresh):
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    spec = "refs/flowillower/runs/*:refs/flowillower/runs/*"
    t0 = time.perf_counter()
    subprocess.run(["git", f"--git-dir={store / 'git'}", "push", "-q", str(remote), spec],
                   check=True)
    t1 = time.perf_counter()
    subprocess.run(["git", f"--git-dir={fresh}", "fetch", "-q", str(remote), spec], check=True)
    return {"first push": t1 - t0, "fresh pull": time.perf_counter() - t1,
            "remote bytes": folder_bytes(remote)[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="10,000 runs")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the previous package (minutes at 10,000 runs)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    count = 10_000 if args.full else args.runs
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as name:
        tmp = Path(name)
        template = make_template(tmp / "template")
        store = tmp / "store"
        t0 = time.perf_counter()
        make_store(template, store, count)
        print(f"{count} runs made in {time.perf_counter() - t0:.1f} s "
              "(one real run copied with new ids, each with a frame of its own)")
        results = {"this package": run_child(tmp, "new", None, store)}
        if not args.no_baseline:
            (tmp / "baseline").mkdir()
            src = previous_package(args.baseline_rev, tmp / "baseline")
            if src is not None:
                results[f"before ({args.baseline_rev})"] = run_child(tmp, "old", src, store)
        results["plain git (floor)"] = floor(tmp, tmp / "new" / "store")
        store_size, store_blocks = folder_bytes(store / "runs")
        rows = ["first push", "push of 1 new run", "fresh pull", "pull of 1 new run",
                "pull --runs (16 runs)"]
        labels = list(results)
        print(f"\n{'seconds, ' + str(count) + ' runs':<26}" +
              "".join(f"{label:>22}" for label in labels))
        for row in rows:
            cells = [results[label].get(row) for label in labels]
            print(f"{row:<26}" + "".join(f"{c:>22.2f}" if c is not None else f"{'-':>22}"
                                         for c in cells))
        for check in ("pushed (incremental)", "runs added (fresh pull)",
                      "runs added (pull --runs)"):
            print(f"{check:<26}" + "".join(f"{results[label].get(check, '-'):>22}"
                                           for label in labels))
        print(f"\nbytes per run: store's run folders {store_size / count:.0f} "
              f"(on disk, in blocks: {store_blocks / count:.0f})")
        for label in labels:
            print(f"  remote, {label}: {results[label]['remote bytes'] / (count + 2):.0f}")


if __name__ == "__main__":
    main()
