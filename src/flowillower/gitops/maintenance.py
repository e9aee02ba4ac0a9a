"""Keeping the store's repository small without ever breaking a run that is starting.

Writers (a code snapshot, a push's run commit, a pull) write objects first and a ref
naming them last; an object that some earlier, since-deleted ref made unreachable may be
*reused* by a writer that found it present. `gc` therefore:

* holds `<store>/git/flowillower.lock` exclusively while writers hold it shared
  (`store_lock`), so nothing is pruned between a writer's "is it there?" and its ref;
* prunes only objects unreachable for longer than a grace period (`GRACE`), so objects of
  a process that does not take the lock (an older flowillower) survive too;
* deletes refs only of runs whose folder is gone, and code refs that no run names and that
  were not created or reused within the grace period (a starting run writes its run.json
  after its snapshot).

Every git command goes through `store_git` (isolated configuration, no hooks).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import GitError
from .fastimport import whole_blobs
from .repo import ensure_store_repo, store_git

__all__ = ["store_lock", "collect_garbage", "touch_ref", "GRACE", "LOCK_NAME"]

GRACE = 2 * 3600  # seconds an unreachable object or an unused fresh code ref is kept
LOCK_NAME = "flowillower.lock"
_RUNS = "refs/flowillower/runs/"
_INCOMING = "refs/flowillower/incoming/"
_CODE = "refs/flowillower/code/"


@contextlib.contextmanager
def store_lock(git_dir: Path, *, exclusive: bool = False, timeout: float | None = None
               ) -> Iterator[None]:
    """Hold the store repository's lock: shared for writers, exclusive for `gc`.

    Waits up to `timeout` seconds (forever when None), then raises GitError. Without
    `fcntl` (Windows) this is a no-op and the grace period alone protects writers.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    git_dir = ensure_store_repo(Path(git_dir))  # never a bare folder git cannot adopt
    fd = os.open(git_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:  # type: ignore[operator]
                    raise GitError(f"the store repository {git_dir} is busy (a snapshot, "
                                   "push or pull is running); try again later") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def touch_ref(git_dir: Path, ref: str, sha: str) -> None:
    """Mark `ref` (already pointing at `sha`) as used now, for `gc`'s grace period.

    A loose ref file gets its mtime refreshed; a ref that only exists packed gets a loose
    copy (git's own format, loose refs take precedence over packed ones).
    """
    path = Path(git_dir) / ref
    try:
        os.utime(path)
        return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(sha + "\n")
    os.replace(tmp, path)


def _snapshots_named(runs_dir: Path) -> set[str]:
    keep = set()
    for run_json in runs_dir.glob("*/run.json"):
        try:
            sha = (json.loads(run_json.read_text()).get("git") or {}).get("snapshot")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(sha, str):
            keep.add(sha)
    return keep


def _ref_age(git_dir: Path, ref: str, now: float) -> float:
    """Seconds since a ref was written; refs only found packed count as old."""
    try:
        return now - (git_dir / ref).stat().st_mtime
    except OSError:
        return float("inf")


def collect_garbage(store_root: Path, *, grace: float = GRACE, timeout: float = 120.0
                    ) -> dict[str, Any]:
    """Drop refs of deleted runs and unused code snapshots, then let git prune.

    Returns `{"refs_removed": [...], "kept_fresh": n}`. Holds the store lock exclusively
    (waiting up to `timeout` s for running snapshots, pushes and pulls).
    """
    store_root = Path(store_root)
    git_dir = store_root / "git"
    result: dict[str, Any] = {"refs_removed": [], "kept_fresh": 0}
    if not (git_dir / "HEAD").is_file():
        return result
    runs_dir = store_root / "runs"
    with store_lock(git_dir, exclusive=True, timeout=timeout):
        alive = {p.name for p in runs_dir.iterdir() if p.is_dir()} \
            if runs_dir.is_dir() else set()
        keep = _snapshots_named(runs_dir)
        listing = store_git(git_dir, ["for-each-ref", "--format=%(refname)",
                                      "refs/flowillower/"]).stdout.decode().split()
        now = time.time()
        doomed = []
        for ref in listing:
            if ref.startswith((_RUNS, _INCOMING)):
                if ref.rsplit("/", 1)[-1] not in alive:
                    doomed.append(ref)
            elif ref.startswith(_CODE) and ref[len(_CODE):] not in keep:
                if _ref_age(git_dir, ref, now) < grace:
                    result["kept_fresh"] += 1  # a starting run may not have named it yet
                else:
                    doomed.append(ref)
            # anything else under refs/flowillower/ is not ours to judge: kept
        if doomed:
            store_git(git_dir, ["update-ref", "--stdin"],
                      input="".join(f"delete {ref}\n" for ref in doomed).encode())
        result["refs_removed"] = doomed
        # gc.packRefs=false: loose refs keep their mtime, which the grace period reads.
        # Big blobs stay whole, as run commits wrote them (pushes reuse what gc packs).
        store_git(git_dir, [*whole_blobs(), "-c", "gc.packRefs=false", "gc", "--quiet",
                            f"--prune={max(int(grace), 0)}.seconds.ago"])
    return result
