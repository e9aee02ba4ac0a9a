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

A second table (`filter_pull_table`) is about `pull --runs FILTER` on runs of realistic
size: N runs (1,000; 10,000 with --full) of ~1 MB of logged values (`--run-mb`) and three
30 KB images each, 16 of them in the project the filter asks for. Pulled into a fresh
store by this package, which goes by the remote's run catalog, against the same pull from
the same remote with its catalog ref removed (the full fetch of every run ref that a
filtered pull made before the catalog, and still makes from a remote an older version
pushed), the same pull from a second remote the same runs were first pushed to by the
package before big blobs went whole (`WHOLE_REV`, `fastimport.WHOLE_ABOVE`: its
fast-import stored each record file and image as a delta of another run's, so the remote
must rebuild and search deltas for the runs it sends; skipped with --no-baseline), and
plain `git fetch` of the 16 matching refs (the floor): seconds and bytes fetched, the
first push of both, and the remote's MB per run for both. With it, what the catalog costs a push: its share of the first push and of a
push of one new run, and its bytes on the remote.

Run: python benchmarks/bench_sync.py [--runs N] [--full] [--no-baseline]
         [--filter-runs N] [--run-mb MB] [--only-filter | --no-filter]
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
WHOLE_REV = "5984204~1"  # the last commit before big blobs were stored and pushed whole

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


FILTERED = 16  # runs of the project the filter asks for


def big_frame(count: int, seed: int) -> bytes:
    """A record frame of `count` values of a metric: noisy mantissas as training values
    have, so it compresses about as much as real ones (~10 bytes a value)."""
    from array import array

    from flowillower.store.format import encode_frame

    raw = bytearray(os.urandom(8 * count))
    raw[7::8] = b"\x3f" * count  # values in [0.5, 1): the exponent is shared
    raw[6::8] = b"\xe0" * count
    values = array("d")
    values.frombytes(bytes(raw))
    return encode_frame(keys={901: ("loss_curve", "metric")},
                        call_cols=[array("I", bytes(4 * count)), array("q", range(count)),
                                   array("d", [1.7e9 + seed + i * 0.01 for i in range(count)]),
                                   array("I", [1]) * count],
                        float_cols=[array("I", [901]) * count, values])


def make_big_run(template: Path, runs_dir: Path, run_id: str, project: str, values: int,
                 seed: int) -> None:
    """A finished run of ~`values` x 10 bytes of record data and three 30 KB images."""
    target = runs_dir / run_id
    (target / "media" / "img").mkdir(parents=True)
    for name in ("run.json", "summary.json"):
        doc = json.loads((template / name).read_text())
        doc["id"] = run_id
        if name == "run.json":
            doc["project"] = project
        (target / name).write_text(json.dumps(doc, indent=1))
    (target / "data.fwl").write_bytes((template / "data.fwl").read_bytes()
                                      + big_frame(values, seed))
    for i in range(3):
        (target / "media" / "img" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n"
                                                           + os.urandom(30_000))
    past = time.time() - 60
    for path in target.rglob("*"):
        os.utime(path, (past, past))


def git_bytes(git_dir: Path) -> int:
    return folder_bytes(git_dir / "objects")[0] if git_dir.is_dir() else 0


def filter_pull_table(tmp: Path, template: Path, count: int, run_mb: float,
                      before_rev: str | None = WHOLE_REV) -> None:
    """The second table (see the module)."""
    from flowillower.gitops.pullselect import RunSelection
    from flowillower.gitops.sync import pull, push
    from flowillower.queries.filters import parse_filter

    store = tmp / "big" / "store"
    values = max(1, int(run_mb * 2**20 / 10.5))
    t0 = time.perf_counter()
    step = max(1, count // FILTERED)
    for i in range(count):
        project = "target" if i % step == 0 and i // step < FILTERED else "other"
        make_big_run(template, store / "runs", f"20260202-{i // 1000:06d}-{i:08x}", project,
                     values, i)
    size = folder_bytes(store / "runs")[0]
    print(f"\n{count} runs of {size / count / 2**20:.2f} MB made in "
          f"{time.perf_counter() - t0:.1f} s ({FILTERED} in project 'target')")
    remote = tmp / "big" / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    pushes = {}
    t0 = time.perf_counter()
    first = push(store, str(remote))
    pushes["first push"] = (time.perf_counter() - t0, first["catalog"])
    make_big_run(template, store / "runs", "20990101-000000-feedbeef", "other", values, -1)
    t0 = time.perf_counter()
    one = push(store, str(remote))
    pushes["push of 1 new run"] = (time.perf_counter() - t0, one["catalog"])
    catalog_bytes = _catalog_bytes(remote)
    selection = RunSelection.parse("project == 'target'", parse_filter)
    rows = {}

    def timed_pull(label: str, source: Path = remote) -> None:
        fresh = tmp / "big" / f"fresh-{len(rows)}"
        t0 = time.perf_counter()
        got = pull(fresh, str(source), runs=selection)
        rows[label] = (time.perf_counter() - t0, git_bytes(fresh / "git"), got["runs_added"])

    timed_pull("catalog (this package)")
    saved = subprocess.run(["git", f"--git-dir={remote}", "rev-parse",
                            "refs/flowillower/catalog"], capture_output=True, text=True,
                           check=True).stdout.strip()
    subprocess.run(["git", f"--git-dir={remote}", "update-ref", "-d",
                    "refs/flowillower/catalog"], check=True)
    timed_pull("baseline: full-ref fetch")
    subprocess.run(["git", f"--git-dir={remote}", "update-ref", "refs/flowillower/catalog",
                    saved], check=True)
    remote_bytes = {"this package": git_bytes(remote)}
    if before_rev:
        before = _pushed_before(store, tmp / "big" / "before", before_rev)
        if before is not None:
            pushes[f"first push, before ({before_rev})"] = (before[1], None)
            remote_bytes[f"before ({before_rev})"] = git_bytes(before[0])
            timed_pull(f"before ({before_rev})", before[0])
    floor_dir = tmp / "big" / "floor.git"
    subprocess.run(["git", "init", "-q", "--bare", str(floor_dir)], check=True)
    wanted = [line.split("\t")[1] for line in subprocess.run(
        ["git", f"--git-dir={store / 'git'}", "for-each-ref", "--format=%(objectname)\t%(refname)",
         "refs/flowillower/runs/"], capture_output=True, text=True, check=True
    ).stdout.splitlines()]
    matching = [ref for ref in wanted if json.loads((store / "runs" / ref.rsplit("/", 1)[1]
                                                     / "run.json").read_text())["project"]
                == "target"]
    t0 = time.perf_counter()
    subprocess.run(["git", f"--git-dir={floor_dir}", "fetch", "-q", str(remote),
                    *[f"{ref}:{ref}" for ref in matching]], check=True)
    rows["plain git fetch of the 16 refs"] = (time.perf_counter() - t0, git_bytes(floor_dir), None)
    print(f"\n{'pull --runs FILTER, ' + str(count) + ' runs':<34}{'seconds':>10}"
          f"{'MB fetched':>12}{'runs written':>14}")
    for label, (secs, got_bytes, written) in rows.items():
        print(f"{label:<34}{secs:>10.2f}{got_bytes / 2**20:>12.1f}"
              f"{written if written is not None else '-':>14}")
    print(f"\n{'push, ' + str(count) + ' runs':<34}{'seconds':>10}{'catalog s':>12}"
          f"{'rows':>14}")
    for label, (secs, report) in pushes.items():
        if report is None:
            print(f"{label:<34}{secs:>10.2f}{'-':>12}{'-':>14}")
        else:
            print(f"{label:<34}{secs:>10.2f}{report['seconds']:>12.2f}{report['rows']:>14}")
    print(f"catalog on the remote: {catalog_bytes / 1024:.0f} KB packed "
          f"({catalog_bytes / (count + 1):.0f} bytes per run)")
    print(f"the runs on the remote, MB per run (store's run folders: "
          f"{size / count / 2**20:.2f}): " + ", ".join(
              f"{label} {got / (count + 1) / 2**20:.3f}" for label, got in remote_bytes.items()))


def _pushed_before(store: Path, work: Path, rev: str) -> tuple[Path, float] | None:
    """The store's runs (hard links, no git state) first pushed to a new bare remote by
    the package as of `rev`, whose fast-import stored each big blob as a delta of the
    one before it (another run's): (that remote, seconds of the push). A filtered pull
    from it shows what a remote pays to rebuild and search those deltas again."""
    work.mkdir(parents=True)
    src = previous_package(rev, work)
    if src is None:
        return None
    copy = work / "store"
    shutil.copytree(store / "runs", copy / "runs", copy_function=os.link)
    remote = work / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    here = str(Path(__file__).parent)
    env = env_running(src)
    env["PYTHONPATH"] = os.pathsep.join([str(src), here, os.environ.get("PYTHONPATH", "")])
    code = ("import sys; from pathlib import Path; from _baseline import check_imported_from; "
            "check_imported_from(Path(sys.argv[1])); "
            "from flowillower.gitops.sync import push; push(Path(sys.argv[2]), sys.argv[3])")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(src), str(copy), str(remote)], env=env,
                   check=True, capture_output=True)
    return remote, time.perf_counter() - t0


def _catalog_bytes(remote: Path) -> int:
    """Bytes on disk of every object reachable from the remote's catalog ref."""
    objects = subprocess.run(["git", f"--git-dir={remote}", "rev-list", "--objects",
                              "refs/flowillower/catalog"], capture_output=True, text=True,
                             check=True).stdout
    sizes = subprocess.run(["git", f"--git-dir={remote}", "cat-file",
                            "--batch-check=%(objectsize:disk)"],
                           input="".join(line.split(" ")[0] + "\n"
                                         for line in objects.splitlines()),
                           capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in sizes.split())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="10,000 runs")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the previous package (minutes at 10,000 runs)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--filter-runs", type=int, default=1000,
                        help="runs of the pull --runs table (10,000 with --full)")
    parser.add_argument("--run-mb", type=float, default=1.0,
                        help="MB of logged values per run in the pull --runs table")
    parser.add_argument("--only-filter", action="store_true", help="only the second table")
    parser.add_argument("--no-filter", action="store_true", help="only the first table")
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    count = 10_000 if args.full else args.runs
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as name:
        tmp = Path(name)
        template = make_template(tmp / "template")
        if not args.no_filter:
            filter_pull_table(tmp, template, 10_000 if args.full else args.filter_runs,
                              args.run_mb, None if args.no_baseline else WHOLE_REV)
        if args.only_filter:
            return
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
