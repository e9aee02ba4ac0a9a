"""Run folders recorded as run commits, many at once and only when they changed.

Every run is a commit on `refs/flowillower/runs/<run id>` whose tree is the run folder
(without `checkpoints/`, and without large artifacts unless asked). Its parents are the
run's previous version here and the version last pulled from a remote, minus one the
other already contains; a folder whose tree equals its only parent's keeps that commit.

For a push of thousands of runs the cost is what changed: a run whose fingerprint
(`pushstate`) matches the one recorded with its current commit is not read at all; the
others are hashed here, their parents' trees asked in one `cat-file`, the commits that
are really new written by one `fast-import`, and all refs moved in one `update-ref`
transaction.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from ..errors import GitError
from .fastimport import RunCommit, existing, hash_files, import_commits, object_format, tree_id
from .incoming import LARGE_ARTIFACT
from .pushstate import load_commits, save_commits, scan_run
from .refs import INCOMING_PREFIX, RUN_REF_PREFIX, list_refs
from .repo import store_git

__all__ = ["Recorded", "commit_runs", "is_ancestor", "lost_changes"]

Recorded = tuple[str, list[list[Any]], str | None]  # (commit, large left out, snapshot)


def _snapshot_of(run_dir: Path) -> str | None:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    sha = (meta.get("git") or {}).get("snapshot") if isinstance(meta, dict) else None
    return sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def is_ancestor(git_dir: Path, maybe_ancestor: str, commit: str) -> bool:
    """Whether `commit` contains `maybe_ancestor` (one `git merge-base --is-ancestor`)."""
    return store_git(git_dir, ["merge-base", "--is-ancestor", maybe_ancestor, commit],
                     check=False).returncode == 0


def _parents(git_dir: Path, own: str | None, pulled: str | None) -> list[str]:
    """Our last version and the last version pulled, minus one the other contains.

    Pulled files were added to the folder, so the folder's tree is the union of both.
    """
    parents = [c for c in (own, pulled) if c]
    if len(parents) == 2:
        # both refs exist and differ only for a run changed on two machines: rare, so one
        # ancestry check per such run is fine
        if parents[0] == parents[1] or is_ancestor(git_dir, parents[1], parents[0]):
            return parents[:1]
        if is_ancestor(git_dir, parents[0], parents[1]):
            return parents[1:]
    return parents


def _changed(git_dir: Path, old: str | None, new: str) -> dict[str, bytes]:
    """{path: status} of files `new` changed from `old` (every file when `old` is None)."""
    if old is None:
        out = store_git(git_dir, ["ls-tree", "-r", "-z", "--name-only", new]).stdout
        return {p.decode("utf-8", "replace"): b"A" for p in out.split(b"\0") if p}
    out = store_git(git_dir, ["diff-tree", "-r", "-z", "--no-renames", "--name-status",
                              old, new]).stdout.split(b"\0")
    return {p.decode("utf-8", "replace"): st for st, p in zip(out[0::2], out[1::2]) if p}


def lost_changes(git_dir: Path, base: str | None, theirs: str, ours: str
                 ) -> list[list[str]]:
    """Files the remote's version `theirs` changed since `base` that `ours` does not keep:
    a join of the two would silently drop another machine's change. A record file
    (`.fwl`) ours extends is kept (theirs is its prefix)."""
    there = _changed(git_dir, base, theirs)
    lost = []
    for path, status in _changed(git_dir, theirs, ours).items():
        if path in there and (status == b"D" or not path.endswith(".fwl")):
            lost.append([path, "changed here and on the remote (kept both sides apart: "
                               "neither was pushed over the other)"])
    return lost


def _drop_lost_joins(git_dir: Path, jobs: list[RunCommit], targets: dict[str, str],
                     pulled_of: dict[str, tuple[str | None, str]],
                     conflicts: dict[str, list[list[str]]]) -> None:
    """Versions built on a pulled version whose changes they would drop are written again
    on our own version alone (the push is then refused and the conflict reported) —
    never a fast-forward over a teammate's change."""
    redo = []
    for job in jobs:
        if job.run_id not in pulled_of or job.run_id not in targets:
            continue
        own, pulled = pulled_of[job.run_id]
        if pulled not in job.parents:
            continue
        base = None
        if own:
            found = store_git(git_dir, ["merge-base", own, pulled], check=False)
            base = found.stdout.decode().strip() or None
        lost = lost_changes(git_dir, base, pulled, targets[job.run_id])
        if lost:
            conflicts[job.run_id] = lost
            redo.append(dataclasses.replace(job, parents=[own] if own else []))
    targets.update(import_commits(git_dir, redo, set()))


def commit_runs(store_root: Path, run_ids: list[str], include_large: bool = False,
                large_limit: int = LARGE_ARTIFACT,
                conflicts: dict[str, list[list[str]]] | None = None) -> dict[str, Recorded]:
    """Record each run folder as (a new version of) its run commit; the caller holds the
    store lock. Artifacts over `large_limit` bytes stay out unless `include_large`.
    Returns {run id: (commit, [[path, size] of large artifacts left out],
    code snapshot named by run.json or None)}. Runs whose folder would drop a change of
    the version last pulled go to `conflicts` ({run id: [[path, why], ...]}).
    """
    conflicts = {} if conflicts is None else conflicts
    pulled_of: dict[str, tuple[str | None, str]] = {}
    git_dir = store_root / "git"
    runs_dir = store_root / "runs"
    refs = list_refs(git_dir, "refs/flowillower/")
    state = load_commits(store_root)
    done: dict[str, Recorded] = {}
    jobs: list[RunCommit] = []
    fresh: dict[str, tuple[str, bool, str | None]] = {}  # run id -> (fp, settled, snapshot)
    algo = ""
    for run_id in run_ids:
        run_dir = runs_dir / run_id
        if not (run_dir / "run.json").is_file():
            raise GitError(f"no run {run_id!r} in {store_root} (no run.json); nothing to push")
        scan = scan_run(run_dir, include_large, large_limit)
        own, pulled = refs.get(RUN_REF_PREFIX + run_id), refs.get(INCOMING_PREFIX + run_id)
        if pulled and pulled != own:
            pulled_of[run_id] = (own, pulled)
        fingerprint = f"{scan.fingerprint}:{pulled or ''}"
        known = state.get(run_id)
        if known and own and known["fp"] == fingerprint and known["commit"] == own:
            done[run_id] = (own, scan.large, known.get("snapshot") or None)
            continue
        algo = algo or object_format(git_dir)
        blobs = hash_files(scan.files, algo)
        jobs.append(RunCommit(run_id, scan.files, blobs, tree_id(scan.files, blobs, algo),
                              _parents(git_dir, own, pulled)))
        fresh[run_id] = (fingerprint, scan.settled, _snapshot_of(run_dir))
        done[run_id] = ("", scan.large, fresh[run_id][2])
    if jobs:
        found = existing(git_dir, [f"{job.parents[0]}^{{tree}}" for job in jobs
                                   if len(job.parents) == 1]
                         + [blob for job in jobs for blob in job.blobs])
        targets: dict[str, str] = {}
        writes = []
        for job in jobs:
            if len(job.parents) == 1 and found.get(f"{job.parents[0]}^{{tree}}") == job.tree:
                targets[job.run_id] = job.parents[0]  # unchanged folder: the same commit
            else:
                writes.append(job)
        targets.update(import_commits(git_dir, writes, set(found.values())))
        _drop_lost_joins(git_dir, writes, targets, pulled_of, conflicts)
        moves = "".join(f"update {RUN_REF_PREFIX}{run_id} {commit}\n"
                        for run_id, commit in targets.items()
                        if refs.get(RUN_REF_PREFIX + run_id) != commit)
        if moves:
            store_git(git_dir, ["update-ref", "--stdin"], input=moves.encode())
        for run_id, commit in targets.items():
            _old, large, snapshot = done[run_id]
            done[run_id] = (commit, large, snapshot)
            fingerprint, settled, _snap = fresh[run_id]
            if settled:
                state[run_id] = {"fp": fingerprint, "commit": commit, "snapshot": snapshot or ""}
            else:
                state.pop(run_id, None)  # still being written: look again next time
        save_commits(store_root, {rid: entry for rid, entry in state.items()
                                  if (runs_dir / rid).is_dir()})  # deleted runs go
    return done
