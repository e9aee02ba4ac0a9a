"""Code snapshot of a 1,000-file repository with modified and untracked files.

Baseline measured in the same run: copying the working tree (shutil.copytree, skipping
.git), the simplest way to keep "the code as it was".
Run: python benchmarks/bench_snapshot.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from flowillower.gitops.snapshot import take_snapshot


def make_repo(root: Path, files: int = 1000) -> None:
    env_args = ["-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for i in range(files):
        path = root / f"pkg{i // 100}" / f"module_{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# module {i}\n" + "def f(x):\n    return x * 2\n" * 20)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", *env_args, "-C", str(root), "commit", "-qm", "init"], check=True)
    for i in range(0, files, 20):  # 50 modified files
        (root / f"pkg{i // 100}" / f"module_{i}.py").write_text(f"# changed {i}\n")
    for i in range(30):  # 30 untracked files
        (root / f"scratch_{i}.py").write_text(f"print({i})\n")


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo)
        store = Path(tmp) / "store" / "git"
        first = timed(lambda: take_snapshot(repo, store), repeats=1)  # cold: all blobs new
        warm = timed(lambda: take_snapshot(repo, store))
        info = take_snapshot(repo, store)
        counter = iter(range(100))

        def naive() -> None:
            shutil.copytree(repo, Path(tmp) / f"copy{next(counter)}",
                            ignore=shutil.ignore_patterns(".git"))

        copy = timed(naive)
    print(f"snapshot of {info['files']} files (50 modified, 30 untracked)")
    print(f"{'case':<40}{'seconds':>10}{'vs copytree':>13}")
    print(f"{'copytree of the working tree (baseline)':<40}{copy:>10.3f}{1:>13.2f}")
    print(f"{'flowillower snapshot, first':<40}{first:>10.3f}{first / copy:>13.2f}")
    print(f"{'flowillower snapshot, again':<40}{warm:>10.3f}{warm / copy:>13.2f}")


if __name__ == "__main__":
    main()
