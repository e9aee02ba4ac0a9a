"""Code snapshot of a 1,000-file repository with modified and untracked files.

Baselines measured in the same run:
* copying the working tree with shutil.copytree (skipping .git): the simplest way to keep
  "the code as it was", with no dedupe and no ignore rules;
* the straightforward git way: `git add -A` into a throw-away index of a separate
  repository (`--git-dir=<store> --work-tree=<repo>`), then write-tree + commit-tree.
  It hashes every file and writes each new blob as a loose object.

Run: python benchmarks/bench_snapshot.py [--files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from flowillower.gitops.snapshot import take_snapshot

_ID = ["-c", "user.name=b", "-c", "user.email=b@b"]


def make_repo(root: Path, files: int) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for i in range(files):
        path = root / f"pkg{i // 100}" / f"module_{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# module {i}\n" + "def f(x):\n    return x * 2\n" * 20)
    (root / ".gitignore").write_text("*.ckpt\n")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", *_ID, "-C", str(root), "commit", "-qm", "init"], check=True)
    for i in range(0, files, 20):  # 5 % modified
        (root / f"pkg{i // 100}" / f"module_{i}.py").write_text(f"# changed {i}\n")
    for i in range(30):  # 30 untracked files, and an ignored checkpoint
        (root / f"scratch_{i}.py").write_text(f"print({i})\n")
    (root / "model.ckpt").write_bytes(os.urandom(1 << 20))


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_git(repo: Path, store: Path) -> str:
    """`git add -A` into a temporary index of another repository, then a commit."""
    if not store.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        base = ["git", f"--git-dir={store}", f"--work-tree={repo}"]
        subprocess.run([*base, "add", "-A"], env=env, check=True)
        tree = subprocess.run([*base, "write-tree"], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()
    return subprocess.run(["git", *_ID, f"--git-dir={store}", "commit-tree", tree, "-m", "s"],
                          check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo, args.files)
        counter = iter(range(1000))
        rows = []

        def copy() -> None:
            shutil.copytree(repo, Path(tmp) / f"copy{next(counter)}",
                            ignore=shutil.ignore_patterns(".git"))

        rows.append(("baseline: shutil.copytree of the tree", timed(copy)))
        rows.append(("baseline: git add -A, new store (cold)",
                     timed(lambda: naive_git(repo, Path(tmp) / f"naive{next(counter)}.git"),
                           repeats=3)))
        warm_store = Path(tmp) / "naive-warm.git"
        naive_git(repo, warm_store)
        rows.append(("baseline: git add -A, same store (warm)",
                     timed(lambda: naive_git(repo, warm_store))))

        rows.append(("flowillower, new store (cold)",
                     timed(lambda: take_snapshot(repo, Path(tmp) / f"s{next(counter)}" / "git"),
                           repeats=3)))
        store = Path(tmp) / "store" / "git"
        info = take_snapshot(repo, store)
        rows.append(("flowillower, same code again (warm)", timed(lambda: take_snapshot(repo, store))))

        def edit_and_snapshot() -> None:
            n = next(counter)
            for i in range(5):
                (repo / f"pkg{i}" / f"module_{i * 100 + 1}.py").write_text(f"# edit {n} {i}\n")
            take_snapshot(repo, store)

        rows.append(("flowillower, after editing 5 files", timed(edit_and_snapshot)))
    base = rows[0][1]
    print(f"snapshot of {info['files']} files ({args.files} tracked, 5% modified, "
          f"30 untracked, 1 ignored); median seconds")
    print(f"{'case':<44}{'seconds':>9}{'vs copytree':>13}")
    for name, secs in rows:
        print(f"{name:<44}{secs:>9.3f}{secs / base:>13.2f}")


if __name__ == "__main__":
    main()
