"""Push and pull runs through any git remote, merge-free.

Every run is a commit on its own ref, `refs/flowillower/runs/<run id>`, whose tree is the
run folder without `checkpoints/` (and without large artifacts unless asked). Run commits
have a fixed date, and as parents the run's previous version(s), so:

* the same folder pushed from two machines is the same commit (no conflict);
* a run that gained files (a replay, a note) becomes a new commit on top of the old one,
  a fast-forward;
* if two machines both added files, the push of the second is rejected; `pull` adds the
  other's files, and the next push makes a commit with both versions as parents, whose
  tree is the union (run files are never edited, only added, so there is nothing to merge).

Code travels too: each run's snapshot commit (`run.json` -> `git.snapshot`) is pushed on
`refs/flowillower/code/<sha>`. Pulls fetch into `refs/flowillower/incoming/` and only ever
*add* files to the local store (a record file that grew is extended, never rewritten).
Nothing happens in the user's repository: a remote name is only looked up in its config.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError
from .incoming import LARGE_ARTIFACT, valid_run_id
from .maintenance import store_lock
from .pull import pull
from .refs import INCOMING_PREFIX, RUN_REF_PREFIX, project_dirs
from .repo import ensure_store_ignored, redact, resolve_remote, store_git
from .snapshot import SNAPSHOT_REF_PREFIX

__all__ = ["push", "pull", "commit_run", "RUN_REF_PREFIX", "LARGE_ARTIFACT"]

_LOCAL_ONLY = ("checkpoints/",)


def _runs_dir(store_root: Path) -> Path:
    return store_root / "runs"


def _run_files(run_dir: Path, include_large: bool) -> tuple[list[str], list[list[Any]]]:
    """(files that travel, [path, size] of large artifacts left behind)."""
    files, large = [], []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if rel.startswith(_LOCAL_ONLY) or path.name.endswith(".tmp") or path.is_dir():
            continue
        if not path.is_symlink() and not path.is_file():
            continue
        if rel.startswith("artifacts/") and not include_large:
            size = path.lstat().st_size
            if size > LARGE_ARTIFACT:
                large.append([rel, size])
                continue
        files.append(rel)
    return files, large


def _ref(git_dir: Path, ref: str) -> str | None:
    proc = store_git(git_dir, ["rev-parse", "--verify", "-q", ref + "^{commit}"], check=False)
    return proc.stdout.decode().strip() or None


def _is_ancestor(git_dir: Path, maybe_ancestor: str, commit: str) -> bool:
    return store_git(git_dir, ["merge-base", "--is-ancestor", maybe_ancestor, commit],
                     check=False).returncode == 0


def commit_run(store_root: Path, run_id: str, include_large: bool = False
               ) -> tuple[str, list[list[Any]]]:
    """Record a run folder as (a new version of) its run commit.

    Returns (commit sha, large artifacts left out). An unchanged folder reuses the
    previous commit.
    """
    git_dir = store_root / "git"
    run_dir = _runs_dir(store_root) / run_id
    if not (run_dir / "run.json").is_file():
        raise GitError(f"no run {run_id!r} in {store_root} (no run.json); nothing to push")
    files, large = _run_files(run_dir, include_large)
    with tempfile.TemporaryDirectory(prefix="fw-run-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        store_git(git_dir, [f"--work-tree={run_dir}", "update-index", "--add", "-z", "--stdin"],
                  cwd=run_dir, env=env, input=b"".join(os.fsencode(f) + b"\0" for f in files))
        tree = store_git(git_dir, ["write-tree"], env=env).stdout.decode().strip()
    ref = RUN_REF_PREFIX + run_id
    # Parents: our last version and the last version pulled, minus one the other contains.
    # Pulled files were added to the folder, so this tree is already the union of both.
    parents = [c for c in (_ref(git_dir, ref), _ref(git_dir, INCOMING_PREFIX + run_id)) if c]
    if len(parents) == 2:
        if parents[0] == parents[1] or _is_ancestor(git_dir, parents[1], parents[0]):
            parents = parents[:1]
        elif _is_ancestor(git_dir, parents[0], parents[1]):
            parents = parents[1:]
    if len(parents) == 1:
        old_tree = store_git(git_dir, ["rev-parse", parents[0] + "^{tree}"]
                             ).stdout.decode().strip()
        if old_tree == tree:
            store_git(git_dir, ["update-ref", ref, parents[0]])
            return parents[0], large
    args = ["commit-tree", tree, "-m", f"flowillower run {run_id}"]
    for parent in parents:
        args += ["-p", parent]
    commit = store_git(git_dir, args).stdout.decode().strip()
    store_git(git_dir, ["update-ref", ref, commit])
    return commit, large


def _snapshot_of(run_dir: Path) -> str | None:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    sha = (meta.get("git") or {}).get("snapshot")
    return sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def push(store_root: Path, remote: str, run_ids: list[str] | None = None,
         include_large: bool = False, *, no_code: bool = False) -> dict[str, Any]:
    """Push runs (all, or `run_ids`) with their code snapshots to `remote`.

    `remote` is a remote name of the user's repository, a path or a URL. `no_code` sends
    run data only, no code snapshots. Returns `{"remote", "runs" (runs now on the remote),
    "pushed" (runs sent or updated), "up_to_date", "rejected" (ids changed on the remote
    meanwhile: pull, then push again), "skipped_large" ([run id, path, size] of artifacts
    left behind), "code" (snapshots sent along)}`.
    """
    store_root = Path(store_root).resolve()
    url = resolve_remote(remote, project_dirs(store_root), push=True)
    base = _runs_dir(store_root)
    if run_ids is None:
        run_ids = sorted(p.name for p in base.iterdir()
                         if p.is_dir() and (p / "run.json").exists()) if base.is_dir() else []
    for run_id in run_ids:
        # Only real run folders inside runs/: never a link or a path leading elsewhere.
        folder = base / str(run_id)
        if not valid_run_id(str(run_id)) or folder.is_symlink() or not folder.is_dir():
            raise GitError(f"no run {str(run_id)[:80]!r} in {base} (only run folders of "
                           "this store are pushed)")
    result: dict[str, Any] = {"remote": redact(url), "runs": 0, "pushed": 0, "up_to_date": 0,
                              "rejected": [], "skipped_large": [], "code": 0}
    if not run_ids:
        return result
    ensure_store_ignored(store_root)
    git_dir = store_root / "git"
    refspecs, code = [], set()
    store_git(git_dir, ["rev-parse", "--git-dir"])  # creates the repository if needed
    with store_lock(git_dir):  # gc waits while run commits reuse objects already there
        for run_id in run_ids:
            _commit, large = commit_run(store_root, run_id, include_large)
            result["skipped_large"] += [[run_id, *item] for item in large]
            refspecs.append(f"{RUN_REF_PREFIX}{run_id}:{RUN_REF_PREFIX}{run_id}")
            snapshot = None if no_code else _snapshot_of(base / run_id)
            if snapshot and _ref(git_dir, snapshot):
                ref = SNAPSHOT_REF_PREFIX + snapshot
                store_git(git_dir, ["update-ref", ref, snapshot])
                refspecs.append(f"{ref}:{ref}")
                code.add(snapshot)
    result["code"] = len(code)
    proc = store_git(git_dir, ["push", "--porcelain", "--no-verify", url,
                               *sorted(set(refspecs))], transport=True, check=False)
    for line in proc.stdout.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or ":" not in parts[1]:
            continue
        flag, local = parts[0], parts[1].split(":")[0]
        if not local.startswith(RUN_REF_PREFIX):
            continue
        run_id = local.removeprefix(RUN_REF_PREFIX)
        if flag == "!":
            result["rejected"].append(run_id)
        elif flag == "=":
            result["up_to_date"] += 1
        else:
            result["pushed"] += 1
    if proc.returncode != 0 and not result["rejected"]:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(redact(f"push to {url} failed: {err}"))
    result["runs"] = len(run_ids) - len(result["rejected"])
    return result
