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
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError
from .repo import (
    abandon,
    batch_read,
    ensure_store_ignored,
    finish,
    redact,
    resolve_remote,
    store_git,
    store_popen,
)
from .snapshot import SNAPSHOT_REF_PREFIX

__all__ = ["push", "pull", "commit_run", "RUN_REF_PREFIX", "LARGE_ARTIFACT"]

RUN_REF_PREFIX = "refs/flowillower/runs/"
INCOMING_PREFIX = "refs/flowillower/incoming/"
LARGE_ARTIFACT = 50 * 2**20  # GitHub warns at 50 MB and refuses files over 100 MB
_LOCAL_ONLY = ("checkpoints/",)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GROWING = (".fwl",)  # append-only record files: a longer remote copy may extend ours


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


def _project_dirs(store_root: Path) -> list[Path]:
    """Where a remote *name* is looked up: the project holding the store, then cwd."""
    return list(dict.fromkeys([store_root.parent, Path.cwd()]))


def push(store_root: Path, remote: str, run_ids: list[str] | None = None,
         include_large: bool = False) -> dict[str, Any]:
    """Push runs (all, or `run_ids`) with their code snapshots to `remote`.

    `remote` is a remote name of the user's repository, a path or a URL. Returns
    `{"remote", "runs" (runs now on the remote), "pushed" (runs sent or updated),
    "up_to_date", "rejected" (ids changed on the remote meanwhile: pull, then push again),
    "skipped_large" ([run id, path, size] of artifacts left behind)}`.
    """
    store_root = Path(store_root).resolve()
    url = resolve_remote(remote, _project_dirs(store_root), push=True)
    base = _runs_dir(store_root)
    if run_ids is None:
        run_ids = sorted(p.name for p in base.iterdir()
                         if p.is_dir() and (p / "run.json").exists()) if base.is_dir() else []
    result: dict[str, Any] = {"remote": redact(url), "runs": 0, "pushed": 0, "up_to_date": 0,
                              "rejected": [], "skipped_large": []}
    if not run_ids:
        return result
    ensure_store_ignored(store_root)
    git_dir = store_root / "git"
    refspecs = []
    for run_id in run_ids:
        if not _RUN_ID.match(run_id):
            raise GitError(f"not a run id: {run_id!r}")
        _commit, large = commit_run(store_root, run_id, include_large)
        result["skipped_large"] += [[run_id, *item] for item in large]
        refspecs.append(f"{RUN_REF_PREFIX}{run_id}:{RUN_REF_PREFIX}{run_id}")
        snapshot = _snapshot_of(base / run_id)
        if snapshot and _ref(git_dir, snapshot):
            ref = SNAPSHOT_REF_PREFIX + snapshot
            store_git(git_dir, ["update-ref", ref, snapshot])
            refspecs.append(f"{ref}:{ref}")
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


def pull(store_root: Path, remote: str) -> dict[str, Any]:
    """Fetch runs (and their code snapshots) from `remote` into the store.

    New runs appear whole (written aside, then renamed into `runs/`); runs already here
    only gain the files they lack. Returns `{"remote", "runs_added", "runs_updated",
    "files_added"}`.
    """
    store_root = Path(store_root).resolve()
    url = resolve_remote(remote, _project_dirs(store_root))
    _runs_dir(store_root).mkdir(parents=True, exist_ok=True)
    ensure_store_ignored(store_root)
    git_dir = store_root / "git"
    before = _list_refs(git_dir, INCOMING_PREFIX)
    # --no-prune: a user's fetch.prune=true must not delete our local code refs.
    proc = store_git(git_dir, ["fetch", "--quiet", "--no-tags", "--no-prune",
                               "--no-recurse-submodules", url,
                               f"+{RUN_REF_PREFIX}*:{INCOMING_PREFIX}*",
                               f"+{SNAPSHOT_REF_PREFIX}*:{SNAPSHOT_REF_PREFIX}*"],
                     transport=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(redact(f"fetching runs from {url} failed: {err}"))
    result: dict[str, Any] = {"remote": redact(url), "runs_added": 0, "runs_updated": 0,
                              "files_added": 0}
    for ref, commit in _list_refs(git_dir, INCOMING_PREFIX).items():
        run_id = ref.removeprefix(INCOMING_PREFIX)
        if not _RUN_ID.match(run_id):
            continue  # never let a remote ref name escape runs/
        target = _runs_dir(store_root) / run_id
        if target.exists() and before.get(ref) == commit:
            continue  # nothing new since the last pull
        is_new = not target.exists()
        added = _materialize(git_dir, commit, target)
        result["files_added"] += added
        if is_new:
            result["runs_added"] += 1
        elif added:
            result["runs_updated"] += 1
    return result


def _list_refs(git_dir: Path, prefix: str) -> dict[str, str]:
    listing = store_git(git_dir, ["for-each-ref", "--format=%(refname) %(objectname)",
                                  prefix]).stdout.decode()
    return dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)


def _safe_rel(rel: bytes) -> bool:
    return not rel.startswith(b"/") and all(
        p not in (b"", b".", b"..") and b"\\" not in p for p in rel.split(b"/"))


def _add_file(path: Path, data: bytes) -> int:
    """Write a pulled file unless ours differs (a prefix of it may be extended)."""
    if path.exists() and not data.startswith(path.read_bytes()):
        return 0  # a diverged copy: keep ours untouched
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.pull.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # whole files only, even if interrupted
    return 1


def _materialize(git_dir: Path, commit: str, target: Path) -> int:
    """Write the files of a run commit that `target` lacks; returns how many.

    Existing files are never overwritten, with one exception that is still only an
    addition: a record file (`*.fwl`, append-only) whose local copy is a prefix of the
    remote one (pushed while the run was still going) is extended.
    """
    raw = store_git(git_dir, ["ls-tree", "-r", "-z", "-l", "--full-tree", commit]).stdout
    wanted: list[tuple[bytes, str, int]] = []
    for record in raw.split(b"\0"):
        if not record:
            continue
        meta, _, rel = record.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        if kind != "blob" or mode == "120000" or not _safe_rel(rel):
            continue
        local = target / os.fsdecode(rel)
        if local.is_symlink() or local.is_dir():
            continue
        if local.exists():
            grows = local.name.endswith(_GROWING) and local.stat().st_size < int(size)
            if not grows:
                continue
        wanted.append((rel, sha, int(size)))
    if not wanted:
        return 0
    is_new = not target.exists()
    # A new run is assembled aside and renamed in whole: readers never see half a run.
    dest = Path(tempfile.mkdtemp(prefix=f".pull-{target.name}-", dir=target.parent)) \
        if is_new else target
    targets: dict[str, list[bytes]] = {}
    for rel, sha, _size in wanted:
        targets.setdefault(sha, []).append(rel)
    added = 0
    try:
        reader = store_popen(git_dir, ["cat-file", "--batch"])
        try:
            # Streamed: one blob in memory at a time, whatever the size of the run.
            for sha, data in batch_read(reader, list(targets)):
                for rel in targets[sha] if data is not None else ():
                    added += _add_file(dest / os.fsdecode(rel), data)
        except BaseException:
            abandon(reader)
            raise
        finish(reader)
        if is_new:
            os.rename(dest, target)
    finally:
        if is_new and dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
    return added
