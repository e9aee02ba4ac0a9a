"""Push and pull runs through any git remote, merge-free.

Every run is a commit on its own ref, `refs/flowillower/runs/<run id>`, whose tree is the
run folder (without checkpoints, and without large artifacts unless asked). Run commits
have a fixed date and their previous version as parent, so the same run pushed from two
machines is the same commit, and new replay files simply extend it. Code snapshots travel
on `refs/flowillower/code/<sha>`, content-addressed. Pulling fetches into
`refs/flowillower/incoming/` and only *adds* files that are missing locally.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.layout import ensure_store, runs_dir
from .repo import resolve_remote, store_git
from .snapshot import SNAPSHOT_REF_PREFIX

RUN_REF_PREFIX = "refs/flowillower/runs/"
INCOMING_PREFIX = "refs/flowillower/incoming/"
LARGE_ARTIFACT = 50 * 2**20
_LOCAL_ONLY = ("checkpoints/",)


def _run_files(run_dir: Path, include_large: bool) -> list[str]:
    files = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        rel = path.relative_to(run_dir).as_posix()
        if rel.startswith(_LOCAL_ONLY):
            continue
        if rel.startswith("artifacts/") and not include_large and \
                path.stat().st_size > LARGE_ARTIFACT:
            continue
        files.append(rel)
    return files


def _ref_commit(git_dir: Path, ref: str) -> str | None:
    proc = store_git(git_dir, ["rev-parse", "--verify", "-q", ref], check=False)
    return proc.stdout.decode().strip() or None


def commit_run(store_root: Path, run_id: str, include_large: bool = False) -> str:
    """Record the run folder as (a new version of) its run commit; returns the sha."""
    git_dir = store_root / "git"
    run_dir = runs_dir(store_root) / run_id
    files = _run_files(run_dir, include_large)
    with tempfile.TemporaryDirectory(prefix="fw-run-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        store_git(git_dir, [f"--work-tree={run_dir}", "update-index", "--add", "-z", "--stdin"],
                  cwd=run_dir, env=env, input="\0".join(files).encode())
        tree = store_git(git_dir, ["write-tree"], env=env).stdout.decode().strip()
    ref = RUN_REF_PREFIX + run_id
    # Parents: our last version and the last version pulled from a remote, minus any that
    # the other already contains. Pulled files are in the folder, so the tree is the union.
    parents = [c for c in (_ref_commit(git_dir, ref), _ref_commit(git_dir, INCOMING_PREFIX + run_id))
               if c]
    if len(parents) == 2:
        if parents[0] == parents[1] or _is_ancestor(git_dir, parents[1], parents[0]):
            parents = parents[:1]
        elif _is_ancestor(git_dir, parents[0], parents[1]):
            parents = parents[1:]
    if len(parents) == 1:
        old_tree = store_git(git_dir, ["rev-parse", parents[0] + "^{tree}"]).stdout.decode().strip()
        if old_tree == tree:
            store_git(git_dir, ["update-ref", ref, parents[0]])
            return parents[0]
    args = ["commit-tree", tree, "-m", f"flowillower run {run_id}"]
    for parent in parents:
        args += ["-p", parent]
    commit = store_git(git_dir, args).stdout.decode().strip()
    store_git(git_dir, ["update-ref", ref, commit])
    return commit


def _is_ancestor(git_dir: Path, maybe_ancestor: str, commit: str) -> bool:
    return store_git(git_dir, ["merge-base", "--is-ancestor", maybe_ancestor, commit],
                     check=False).returncode == 0


def _snapshot_of(run_dir: Path) -> str | None:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return (meta.get("git") or {}).get("snapshot")


def push(store_root: Path, remote: str, run_ids: list[str] | None = None,
         include_large: bool = False) -> dict[str, Any]:
    """Push runs (all, or `run_ids`) and their code snapshots to `remote`."""
    store_root = Path(store_root)
    url = resolve_remote(remote, store_root.parent)
    base = runs_dir(store_root)
    ids = run_ids if run_ids is not None else sorted(
        p.name for p in base.iterdir() if p.is_dir() and (p / "run.json").exists())
    if not ids:
        return {"remote": url, "runs": 0}
    git_dir = store_root / "git"
    refspecs = []
    for run_id in ids:
        commit_run(store_root, run_id, include_large)
        refspecs.append(f"{RUN_REF_PREFIX}{run_id}:{RUN_REF_PREFIX}{run_id}")
        snapshot = _snapshot_of(base / run_id)
        if snapshot and _ref_commit(git_dir, snapshot):
            ref = SNAPSHOT_REF_PREFIX + snapshot
            store_git(git_dir, ["update-ref", ref, snapshot])
            refspecs.append(f"{ref}:{ref}")
    proc = store_git(git_dir, ["push", "--porcelain", url, *sorted(set(refspecs))], check=False)
    text = proc.stdout.decode(errors="replace")
    rejected = [line.split("\t")[1].split(":")[0].removeprefix(RUN_REF_PREFIX)
                for line in text.splitlines() if line.startswith("!")]
    if proc.returncode != 0 and not rejected:
        raise GitError(f"push to {url} failed: {proc.stderr.decode(errors='replace').strip()}")
    return {"remote": url, "runs": len(ids) - len(rejected), "rejected": rejected}


def pull(store_root: Path, remote: str) -> dict[str, Any]:
    """Fetch runs from `remote`; add runs (and files of known runs) missing locally."""
    store_root = Path(store_root)
    ensure_store(store_root)
    url = resolve_remote(remote, store_root.parent)
    git_dir = store_root / "git"
    store_git(git_dir, ["fetch", "--quiet", "--no-tags", url,
                        f"+{RUN_REF_PREFIX}*:{INCOMING_PREFIX}*",
                        f"+{SNAPSHOT_REF_PREFIX}*:{SNAPSHOT_REF_PREFIX}*"])
    listing = store_git(git_dir, ["for-each-ref", "--format=%(refname) %(objectname)",
                                  INCOMING_PREFIX]).stdout.decode().split("\n")
    added_runs = added_files = 0
    base = runs_dir(store_root)
    for line in filter(None, listing):
        ref, commit = line.split()
        run_id = ref.removeprefix(INCOMING_PREFIX)
        if "/" in run_id or run_id.startswith("."):
            continue  # never let a remote ref name escape runs/
        target = base / run_id
        is_new = not target.exists()
        added_files += _add_missing_files(git_dir, commit, target)
        added_runs += is_new
    return {"remote": url, "runs_added": added_runs, "files_added": added_files}


def _add_missing_files(git_dir: Path, commit: str, target: Path) -> int:
    """Extract the files of a run commit that `target` lacks; never overwrite."""
    archive = store_git(git_dir, ["archive", "--format=tar", commit]).stdout
    added = 0
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                dest = target / member.name
                if dest.exists() or ".." in Path(member.name).parts:
                    continue
                data = tar.extractfile(member).read()
                tmp = staging / f"{added}.part"
                tmp.write_bytes(data)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)  # whole files only, even if interrupted
                added += 1
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
    return added
