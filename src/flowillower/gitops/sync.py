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

import random
import time
from pathlib import Path
from typing import Any

from ..errors import GitError
from .catalogpush import update_catalog
from .fastimport import whole_blobs
from .incoming import LARGE_ARTIFACT, valid_run_id
from .maintenance import store_lock
from .pull import pull
from .refs import (
    BEHIND_REASONS,
    CATALOG_REF,
    INCOMING_PREFIX,
    RUN_REF_PREFIX,
    list_refs,
    project_dirs,
)
from .repo import ensure_store_ignored, redact, resolve_remote, store_git
from .runcommits import commit_runs, is_ancestor
from .snapshot import SNAPSHOT_REF_PREFIX

__all__ = ["push", "pull", "commit_run", "RUN_REF_PREFIX", "LARGE_ARTIFACT", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 10  # pushes per call: the first, then retries after fetching what changed
_CHUNK = 1000  # refspecs per `git push` command line


def commit_run(store_root: Path, run_id: str, include_large: bool = False
               ) -> tuple[str, list[list[Any]]]:
    """Record one run folder as (a new version of) its run commit.

    Returns (commit sha, large artifacts left out). An unchanged folder reuses the
    previous commit.
    """
    store_root = Path(store_root)
    with store_lock(store_root / "git"):
        commit, large, _snapshot = commit_runs(store_root, [run_id], include_large,
                                               LARGE_ARTIFACT)[run_id]
    return commit, large


def _selected(base: Path, run_ids: list[str] | None) -> list[str]:
    if run_ids is None:
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and (p / "run.json").exists()) if base.is_dir() else []
    for run_id in run_ids:
        # Only real run folders inside runs/: never a link or a path leading elsewhere.
        folder = base / str(run_id)
        if not valid_run_id(str(run_id)) or folder.is_symlink() or not folder.is_dir():
            raise GitError(f"no run {str(run_id)[:80]!r} in {base} (only run folders of "
                           "this store are pushed)")
    return list(dict.fromkeys(run_ids))


def _remote_refs(git_dir: Path, url: str) -> dict[str, str]:
    """{ref: commit} of the remote's run, code and catalog refs (one `ls-remote`)."""
    proc = store_git(git_dir, ["ls-remote", url, RUN_REF_PREFIX + "*",
                               SNAPSHOT_REF_PREFIX + "*", CATALOG_REF],
                     transport=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(redact(f"push to {url} failed: {err}"))
    refs = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref] = sha
    return refs


def _code_refs(git_dir: Path, snapshots: set[str]) -> list[str]:
    """The snapshot commits we have, each named by a code ref here (one transaction)."""
    if not snapshots:
        return []
    listing = store_git(git_dir, ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
                        input="".join(f"{sha}\n" for sha in sorted(snapshots)).encode())
    have = sorted(line.split()[0] for line in listing.stdout.decode().splitlines()
                  if line.endswith(" commit"))
    if have:
        store_git(git_dir, ["update-ref", "--stdin"], input="".join(
            f"update {SNAPSHOT_REF_PREFIX}{sha} {sha}\n" for sha in have).encode())
    return have


def _send(git_dir: Path, url: str, refs: list[str], all_runs: bool, whole: bool
          ) -> dict[str, tuple[str, str]]:
    """`git push` of `refs` (same name there); {ref: (porcelain flag, summary)}.

    git matches each named refspec against every local ref (quadratic in thousands of
    runs), so `all_runs` (every local run ref is to be pushed) sends the run refs as one
    pattern; otherwise refspecs go in chunks (a command line has a length limit).
    `whole`: big blobs go whole, never as deltas of another run's (`whole_blobs`).
    """
    config = whole_blobs() if whole else []
    specs = [f"{ref}:{ref}" for ref in refs
             if not (all_runs and ref.startswith(RUN_REF_PREFIX))]
    if all_runs:
        specs.insert(0, f"{RUN_REF_PREFIX}*:{RUN_REF_PREFIX}*")
    status: dict[str, tuple[str, str]] = {}
    for start in range(0, len(specs), _CHUNK):
        proc = store_git(git_dir, [*config, "push", "--porcelain", "--no-verify", url,
                                   *specs[start:start + _CHUNK]], transport=True, check=False)
        found: dict[str, tuple[str, str]] = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and ":" in parts[1]:
                found[parts[1].split(":")[0]] = (parts[0], parts[2] if len(parts) > 2 else "")
        if proc.returncode != 0 and not any(flag == "!" for flag, _s in found.values()):
            err = proc.stderr.decode(errors="replace").strip()
            raise GitError(redact(f"push to {url} failed: {err}"))
        status.update(found)
    return status


def _conflicts(git_dir: Path, run_id: str, theirs: str, ours: str) -> list[list[str]]:
    """Files of the remote's version of a run that our new version would drop or change
    (a record file we extend is fine: theirs is its prefix)."""
    proc = store_git(git_dir, ["diff-tree", "-r", "-z", "--no-renames", "--name-status",
                               theirs, ours])
    fields = proc.stdout.split(b"\0")
    found = []
    for status, path in zip(fields[0::2], fields[1::2]):
        name = path.decode("utf-8", "replace")
        if status == b"D" or (status == b"M" and not name.endswith(".fwl")):
            found.append([name, "changed here and on the remote (kept both sides apart: "
                                "neither was pushed over the other)"])
    return found


def _catch_up(store_root: Path, remote: str, behind: list[str], include_large: bool,
              result: dict[str, Any]) -> dict[str, str]:
    """Runs that changed on the remote meanwhile: pull their new files (checked as any
    pull), record each run again with both versions as parents. {run id: new commit} for
    the runs that can now be pushed; the others go to `result["conflicts"]`."""
    got = pull(store_root, remote, run_ids=behind)
    git_dir = store_root / "git"
    refused: dict[str, list[list[str]]] = {rid: list(items)
                                           for rid, items in got["refused"].items()}
    for rid, why in got["runs_refused"]:
        refused.setdefault(rid, []).append(["<run>", why])
    lost: dict[str, list[list[str]]] = {}
    with store_lock(git_dir):
        recorded = commit_runs(store_root, [rid for rid in behind if rid not in refused],
                               include_large, LARGE_ARTIFACT, conflicts=lost)
    theirs = dict(line.split(" ", 1)[::-1] for line in store_git(git_dir, [
        "for-each-ref", "--format=%(objectname) %(refname)", INCOMING_PREFIX]
    ).stdout.decode().splitlines())
    ready = {}
    for rid in behind:
        commit = recorded[rid][0] if rid in recorded else ""
        other = theirs.get(INCOMING_PREFIX + rid)
        if rid in lost:
            refused[rid] = lost[rid]
        elif commit and other and rid not in refused and not is_ancestor(git_dir, other, commit):
            refused[rid] = _conflicts(git_dir, rid, other, commit) or [
                ["<run>", "the remote's version is not part of ours"]]
        if refused.get(rid):
            result["conflicts"][rid] = refused[rid]
        else:
            ready[rid] = commit
    return ready


def push(store_root: Path, remote: str, run_ids: list[str] | None = None,
         include_large: bool = False, *, no_code: bool = False) -> dict[str, Any]:
    """Push runs (all, or `run_ids`) with their code snapshots to `remote`.

    Only runs whose commit the remote lacks are offered; a run changed on the remote
    meanwhile (another machine's push) is pulled, joined and pushed again, a few times
    at most, with a random pause. `remote` is a remote name of the user's repository, a
    path or a URL; `no_code` sends run data only. Returns `{"remote", "runs" (runs now on
    the remote), "new", "updated", "up_to_date", "pushed" (new + updated), "rejected"
    (ids not pushed), "conflicts" ({run id: [[path, why], ...]}: runs changed both here
    and there in ways that cannot be joined), "skipped_large" ([run id, path, size] of
    artifacts left behind), "code" (code snapshots the remote now has for these runs),
    "attempts" (pushes made), "catalog" (the remote's run catalog brought up to date
    for these runs, `catalogpush.update_catalog`: {"rows", "attempts", "seconds",
    "error"})}`.
    """
    store_root = Path(store_root).resolve()
    url = resolve_remote(remote, project_dirs(store_root), push=True)
    run_ids = _selected(store_root / "runs", run_ids)
    result: dict[str, Any] = {"remote": redact(url), "runs": 0, "new": 0, "updated": 0,
                              "up_to_date": 0, "pushed": 0, "rejected": [], "conflicts": {},
                              "skipped_large": [], "code": 0, "attempts": 0}
    if not run_ids:
        return result
    ensure_store_ignored(store_root)
    git_dir = store_root / "git"
    store_git(git_dir, ["rev-parse", "--git-dir"])  # creates the repository if needed
    with store_lock(git_dir):  # gc waits while run commits reuse objects already there
        recorded = commit_runs(store_root, run_ids, include_large, LARGE_ARTIFACT,
                               conflicts=result["conflicts"])
        code = [] if no_code else _code_refs(git_dir, {snap for _c, _l, snap
                                                       in recorded.values() if snap})
    for run_id in run_ids:
        result["skipped_large"] += [[run_id, *item] for item in recorded[run_id][1]]
    # A run whose folder would drop a change pulled from the remote is not offered.
    pending = {RUN_REF_PREFIX + rid: rec[0] for rid, rec in recorded.items()
               if rid not in result["conflicts"]}
    selected = set(pending)
    code_refs = {SNAPSHOT_REF_PREFIX + sha: sha for sha in code}
    result["code"] = len(code_refs)
    landed: dict[str, str] = {}  # run id -> the commit the remote now has
    there: dict[str, str] = {}
    for attempt in range(MAX_ATTEMPTS):
        there = _remote_refs(git_dir, url)
        for ref in [ref for ref, sha in pending.items() if there.get(ref) == sha]:
            landed[ref.removeprefix(RUN_REF_PREFIX)] = pending.pop(ref)
            result["up_to_date"] += 1
        code_refs = {ref: sha for ref, sha in code_refs.items() if there.get(ref) != sha}
        if not pending and not code_refs:
            break
        result["attempts"] += 1
        # Many runs to send: one pattern for the run refs, when it matches exactly the runs
        # being pushed (a few named refs are cheaper: the pattern makes git look at all).
        all_runs = (attempt == 0 and len(pending) > _CHUNK // 4
                    and set(list_refs(git_dir, RUN_REF_PREFIX)) <= selected)
        # Only new runs: their big blobs go whole (a remote then serves any subset of runs
        # without searching deltas again). A run the remote has an older version of keeps
        # git's delta search: its grown record file goes as a delta of that version.
        whole = not any(ref in there for ref in pending)
        status = _send(git_dir, url, sorted(pending) + sorted(code_refs), all_runs, whole)
        behind = []
        for ref in list(pending):
            flag, summary = status.get(ref, ("!", "not reported"))
            if flag != "!":
                result["updated" if ref in there else "new"] += 1
                landed[ref.removeprefix(RUN_REF_PREFIX)] = pending.pop(ref)
            elif any(word in summary for word in BEHIND_REASONS):
                behind.append(ref.removeprefix(RUN_REF_PREFIX))
        code_refs = {ref: sha for ref, sha in code_refs.items()
                     if status.get(ref, ("!",))[0] == "!"}
        if (not pending and not code_refs) or attempt == MAX_ATTEMPTS - 1:
            break
        # Another machine pushed meanwhile: wait a random while, so pushers that collided
        # do not collide again in lockstep, then join what changed.
        time.sleep(min(3.0, random.uniform(0.05, 0.3) * 1.6 ** attempt))
        if behind:
            ready = _catch_up(store_root, remote, behind, include_large, result)
            for rid in behind:
                if rid in ready:
                    pending[RUN_REF_PREFIX + rid] = ready[rid]
                else:
                    del pending[RUN_REF_PREFIX + rid]
    result["rejected"] = sorted({*result["conflicts"],
                                 *(ref.removeprefix(RUN_REF_PREFIX) for ref in pending)})
    result["pushed"] = result["new"] + result["updated"]
    result["runs"] = len(run_ids) - len(result["rejected"])
    # A local working clone is a staging repository (a Space deploy's), whose own `git
    # push` forwards the run refs to the host: a catalog started there could not
    # fast-forward the host's, so none is written (the host's stays as it is).
    staging = Path(url).is_dir() and (Path(url) / ".git").exists()
    result["catalog"] = update_catalog(git_dir, url, landed, there) if not staging else {
        "rows": 0, "attempts": 0, "seconds": 0.0, "error": None}
    return result
