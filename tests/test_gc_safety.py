"""`flowillower gc` never removes what a starting run still needs, and still cleans up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowillower.errors import GitError
from flowillower.gitops.maintenance import collect_garbage, store_lock
from flowillower.gitops.repo import store_git
from flowillower.gitops.snapshot import take_snapshot
from flowillower.store.layout import process_start_ticks
from tests.conftest_git import git, isolate_home, make_repo

RUN_ALIVE = "20261123-120000-aaaaaaaa"
RUN_GONE = "20261123-120500-bbbbbbbb"
RUN_PULLED = "20261123-121000-cccccccc"


def _gc(store: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "flowillower", "gc", "--dir", str(store)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _exists(git_dir: Path, sha: str) -> bool:
    return store_git(git_dir, ["cat-file", "-e", sha], check=False).returncode == 0


def _complete(git_dir: Path, commit: str) -> bool:
    """Whether the commit and every object it reaches are in the repository."""
    return store_git(git_dir, ["rev-list", "--objects", commit], check=False).returncode == 0


def _loose(git_dir: Path, sha: str) -> Path:
    return git_dir / "objects" / sha[:2] / sha[2:]


@pytest.fixture
def project(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "main")
    (repo / ".flowillower" / "runs").mkdir(parents=True)
    return repo


def _make_run(store: Path, run_id: str, snapshot: str | None) -> None:
    run_dir = store / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"id": run_id, "git": {"snapshot": snapshot}}))


def test_fresh_unreferenced_objects_survive_gc(project):
    store = project / ".flowillower"
    git_dir = store / "git"
    take_snapshot(project, git_dir)  # creates the repository
    # What a snapshot being taken right now has written: objects, no ref yet.
    blob = store_git(git_dir, ["hash-object", "-w", "--stdin"],
                     input=b"written by a run that is starting\n").stdout.decode().strip()
    assert _loose(git_dir, blob).is_file()
    out = _gc(store)
    assert _exists(git_dir, blob)
    assert "two hours" in out
    # Once it is past the grace period, an unreachable object does go.
    old = time.time() - 3 * 3600
    os.utime(_loose(git_dir, blob), (old, old))
    _gc(store)
    assert not _exists(git_dir, blob)


def test_refs_of_gone_runs_go_and_the_rest_stay(project):
    store = project / ".flowillower"
    git_dir = store / "git"
    snap_used = take_snapshot(project, git_dir)["snapshot"]
    (project / "train.py").write_text("# another version\n")
    snap_fresh = take_snapshot(project, git_dir)["snapshot"]  # a starting run's, unnamed
    (project / "train.py").write_text("# a third version\n")
    snap_old = take_snapshot(project, git_dir)["snapshot"]  # nobody's, and old
    old = time.time() - 3 * 3600
    os.utime(git_dir / "refs/flowillower/code" / snap_old, (old, old))
    _make_run(store, RUN_ALIVE, snap_used)
    _make_run(store, RUN_PULLED, snap_used)
    for run_id, ns in ((RUN_ALIVE, "runs"), (RUN_GONE, "runs"), (RUN_PULLED, "incoming"),
                       (RUN_GONE, "incoming")):
        store_git(git_dir, ["update-ref", f"refs/flowillower/{ns}/{run_id}", snap_used])

    result = collect_garbage(store)

    refs = set(git(store, f"--git-dir={git_dir}", "for-each-ref",
                   "--format=%(refname)").split())
    assert sorted(result["refs_removed"]) == sorted([
        f"refs/flowillower/runs/{RUN_GONE}", f"refs/flowillower/incoming/{RUN_GONE}",
        f"refs/flowillower/code/{snap_old}"])
    assert refs == {f"refs/flowillower/runs/{RUN_ALIVE}",
                    f"refs/flowillower/incoming/{RUN_PULLED}",
                    f"refs/flowillower/code/{snap_used}",
                    f"refs/flowillower/code/{snap_fresh}"}
    assert result["kept_fresh"] == 1
    assert _complete(git_dir, snap_used) and _complete(git_dir, snap_fresh)


def test_gc_waits_for_a_snapshot_holding_the_lock(project):
    store = project / ".flowillower"
    take_snapshot(project, store / "git")
    with store_lock(store / "git"), pytest.raises(GitError, match="busy"):
        collect_garbage(store, timeout=0.2)
    assert collect_garbage(store, timeout=0.2)["refs_removed"] == []  # free again


def test_snapshots_taken_while_gc_runs_are_whole(project):
    store = project / ".flowillower"
    git_dir = store / "git"
    take_snapshot(project, git_dir)
    commits: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def snapshots() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                (project / "lib" / "model.py").write_text(f"WIDTH = {i}\n" + "x" * i)
                (project / f"untracked_{i}.py").write_text(f"N = {i}\n")
                commits.append(take_snapshot(project, git_dir)["snapshot"])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=snapshots)
    worker.start()
    try:
        for _ in range(4):
            _gc(store)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    assert len(commits) >= 4
    missing = [c for c in commits if not _complete(git_dir, c)]
    assert missing == []
    fsck = store_git(git_dir, ["fsck", "--connectivity-only", "--no-dangling"], check=False)
    assert fsck.returncode == 0, fsck.stderr


def test_gc_checkpoints_spares_running_runs_and_links(project, tmp_path):
    store = project / ".flowillower"
    take_snapshot(project, store / "git")
    live, done = "20261123-130000-11111111", "20261123-130500-22222222"
    for run_id in (live, done):
        _make_run(store, run_id, None)
        (store / "runs" / run_id / "checkpoints").mkdir()
        (store / "runs" / run_id / "checkpoints" / "c.pt").write_bytes(b"\0" * 2048)
    # This very process is the live run: same host, our pid and its start time.
    meta = {"id": live, "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": process_start_ticks(os.getpid()), "git": {"snapshot": None}}
    (store / "runs" / live / "run.json").write_text(json.dumps(meta))
    (store / "runs" / done / "summary.json").write_text('{"status": "success"}')
    # A run folder that is a link to somewhere outside the store.
    outside = tmp_path / "elsewhere"
    (outside / "checkpoints").mkdir(parents=True)
    (outside / "checkpoints" / "mine.pt").write_bytes(b"not the store's")
    (outside / "run.json").write_text(json.dumps({"id": "x"}))
    (store / "runs" / "20261123-131000-33333333").symlink_to(outside)

    proc = subprocess.run([sys.executable, "-m", "flowillower", "gc", "--checkpoints",
                           "--dir", str(store)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (store / "runs" / live / "checkpoints" / "c.pt").is_file()
    assert not (store / "runs" / done / "checkpoints").exists()
    assert (outside / "checkpoints" / "mine.pt").is_file()
    assert f"kept the checkpoints of 1 running run(s): {live}" in proc.stdout
