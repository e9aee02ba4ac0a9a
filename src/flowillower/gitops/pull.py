"""Pull: teammates' runs arrive as checked data, next to yours, and nothing of yours changes.

Run refs are fetched into `refs/flowillower/incoming/`, code refs into
`refs/flowillower/incoming-code/` (a code ref is adopted only if its name is the id of the
commit it points to). Each run commit is then checked entry by entry (`incoming`): what a
run may not hold is reported and never written. A new run is assembled aside and renamed
into `runs/` whole; a run already here only gains files it lacks, and a record file
(`*.fwl`) grows only when the incoming copy extends the local one byte for byte; a newer
version of a pulled run left unchanged here also replaces what its run rewrites
(`pullrefresh`: run.json, a summary set aside by a resume). Every run
a pull brings is remembered as pulled (`store.provenance`), with its remote.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.provenance import compact_pulled, runs_missing_media
from .catalogpull import fetch_code, plan_fetch
from .incoming import read_run_json, valid_run_id
from .maintenance import store_lock
from .pullrefresh import refreshable
from .pullselect import RunSelection, select_commits
from .pulltrees import read_entries
from .pullwrite import RunPlan, plan_run, write_runs
from .refs import (
    INCOMING_CODE_PREFIX,
    INCOMING_PREFIX,
    RUN_REF_PREFIX,
    list_refs,
    project_dirs,
)
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

__all__ = ["pull"]

_CODE_PREFIX = "refs/flowillower/code/"
_MAX_RUN_JSON = 16 * 2**20  # a run's metadata is kilobytes; never parse gigabytes of it
# fsck still checks every fetched object, but tree entry *names* (`..`, `.git`, `a/b`)
# only warn: a run holding one is refused entry by entry below (and snapshot checkouts
# refuse them too) instead of one hostile run failing the whole pull.
_PATH_CHECKS_WARN = [arg for check in ("hasDot", "hasDotdot", "hasDotgit", "fullPathname",
                                       "emptyName", "badFilemode", "duplicateEntries")
                     for arg in ("-c", f"fetch.fsck.{check}=warn")]


def pull(store_root: Path, remote: str, run_ids: list[str] | None = None, *,
         runs: RunSelection | None = None, no_media: bool = False,
         media_only: bool = False) -> dict[str, Any]:
    """Fetch runs (and their code snapshots) from `remote` into the store.

    `run_ids` fetches only those runs' refs, no code refs (a push catching up with runs
    another machine changed meanwhile; a run's media fetched on demand), and looks at
    each again even when its ref did not move. `runs` writes only the runs it selects
    (`pullselect`). `no_media` leaves `media/` and `artifacts/` files on the remote; the
    pull record counts them (`media_left`) and a later pull without it brings them;
    `media_only` writes nothing else (a run's media fetched when it is opened).

    Returns `{"remote", "runs_added", "runs_updated", "files_added", "refused"
    ({run id: [[path, reason], ...]}), "runs_refused" ([[run id, reason], ...]: runs not
    written at all), "snapshots_refused" (code refs whose name lies about their commit)}`.
    """
    store_root = Path(store_root).resolve()
    url = resolve_remote(remote, project_dirs(store_root))
    runs_dir = store_root / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    ensure_store_ignored(store_root)
    git_dir = store_root / "git"
    result: dict[str, Any] = {"remote": redact(url), "runs_added": 0, "runs_updated": 0,
                              "files_added": 0, "refused": {}, "runs_refused": [],
                              "snapshots_refused": 0}
    store_git(git_dir, ["rev-parse", "--git-dir"])  # creates the repository if needed
    with store_lock(git_dir):  # gc waits: fetched objects are not referenced by runs yet
        before = list_refs(git_dir, INCOMING_PREFIX)
        wanted = set(run_ids or ())
        catalog = None
        # --no-prune: a user's fetch.prune=true must not delete our local code refs.
        if run_ids is None and runs is not None and runs.ids is None:
            catalog = plan_fetch(git_dir, url, runs)  # only what the catalog may match
            specs = catalog.specs
        elif run_ids is None and runs is not None and runs.ids is not None:
            specs = [f"+{RUN_REF_PREFIX}{rid}:{INCOMING_PREFIX}{rid}" for rid in runs.ids]
            specs.append(f"+{_CODE_PREFIX}*:{INCOMING_CODE_PREFIX}*")
        elif run_ids is None:
            specs = [f"+{RUN_REF_PREFIX}*:{INCOMING_PREFIX}*",
                     f"+{_CODE_PREFIX}*:{INCOMING_CODE_PREFIX}*"]
        else:
            specs = [f"+{RUN_REF_PREFIX}{rid}:{INCOMING_PREFIX}{rid}" for rid in run_ids
                     if valid_run_id(rid)]
        # Refspecs on stdin: thousands of them never meet a command-line length limit.
        proc = store_git(git_dir, [*_PATH_CHECKS_WARN, "fetch", "--quiet", "--no-tags",
                                   "--no-prune", "--no-recurse-submodules", "--stdin", url],
                         input="".join(f"{spec}\n" for spec in specs).encode(),
                         transport=True, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise GitError(redact(f"fetching runs from {url} failed: {err}"))
        result["snapshots_refused"] = _adopt_code_refs(git_dir)
        origin = {"remote": redact(remote), "url": redact(url)}
        commits: dict[str, str] = {}
        media_left = runs_missing_media(store_root) if not no_media else set()
        for ref, commit in sorted(list_refs(git_dir, INCOMING_PREFIX).items()):
            run_id = ref.removeprefix(INCOMING_PREFIX)
            if run_ids is not None and run_id not in wanted:
                continue
            if not valid_run_id(run_id):
                result["runs_refused"].append([run_id[:200], "not a valid run id"])
                store_git(git_dir, ["update-ref", "-d", ref])
                continue  # never let a remote ref name escape runs/
            target = runs_dir / run_id
            if run_ids is None and target.exists() and before.get(ref) == commit \
                    and run_id not in media_left:
                continue  # nothing new since the last pull
            commits[run_id] = commit
        if runs is not None:
            offered = len(commits)
            commits = select_commits(git_dir, commits, runs)
            result["runs_not_selected"] = offered - len(commits)
        if catalog is not None:  # runs the catalog left out were never fetched
            result["runs_not_selected"] += catalog.report["skipped"]
            result["catalog"] = catalog.report
            if fetch_code(git_dir, url, catalog, commits):
                result["snapshots_refused"] += _adopt_code_refs(git_dir)
        todo = {}
        for run_id, (entries, refused, broken) in read_entries(git_dir, commits).items():
            if broken:
                result["runs_refused"].append([run_id, broken])
            else:
                todo[run_id] = (commits[run_id], entries, refused)
        metas = _run_metas(git_dir, {run_id: entries for run_id, (_c, entries, _r)
                                     in todo.items()})
        plans = []
        # a newer version of a pulled run, unchanged here, may replace rewritten files
        fresh = {} if media_only else refreshable(
            git_dir, store_root, origin["url"], before,
            {run_id: commit for run_id, (commit, _e, _r) in todo.items()})
        for run_id, (commit, entries, refused) in todo.items():
            meta, why = metas[run_id]
            plan = plan_run(store_root, (commit, run_id, meta), entries, refused,
                            no_media=no_media, media_only=media_only,
                            refresh=fresh.get(run_id)) \
                if meta is not None else why
            if isinstance(plan, RunPlan):
                plans.append(plan)
            else:
                result["runs_refused"].append([run_id, plan])
        write_runs(git_dir, store_root, plans, origin, result)
        if plans and not media_only:  # the index learns of them now, not at the first look
            result["runs_indexed"] = _index(store_root, [plan.run_id for plan in plans])
        if media_only:  # the rest of a newer version is not here: the next pull writes it
            _restore_refs(git_dir, before, list(commits))
        result["media_left"] = sum(plan.record.get("media_left", 0) for plan in plans)
        compact_pulled(store_root)  # under the lock: one merger at a time
    return result


def _run_metas(git_dir: Path, listed: dict[str, list[tuple[bytes, str, str, int]]]
               ) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """Every run's checked run.json, read in one `cat-file --batch` for all runs."""
    metas: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    wanted: dict[str, list[str]] = {}
    for run_id, entries in listed.items():
        found = [(sha, size) for rel, _m, sha, size in entries if rel == b"run.json"]
        if not found:
            metas[run_id] = (None, "no run.json (or not a plain file)")
        elif found[0][1] > _MAX_RUN_JSON:
            metas[run_id] = (None, f"run.json is {found[0][1]} bytes")
        else:
            wanted.setdefault(found[0][0], []).append(run_id)
    if wanted:
        reader = store_popen(git_dir, ["cat-file", "--batch"])
        try:
            for sha, data in batch_read(reader, list(wanted)):
                for run_id in wanted[sha]:  # parsed at once: one blob in memory at a time
                    metas[run_id] = read_run_json(data, run_id)
        except BaseException:
            abandon(reader)
            raise
        finish(reader)
    return metas


def _restore_refs(git_dir: Path, before: dict[str, str], run_ids: list[str]) -> None:
    """Point incoming refs of `run_ids` back to what they were before this pull."""
    lines = [f"update {INCOMING_PREFIX}{rid} {before[INCOMING_PREFIX + rid]}\n"
             for rid in run_ids if INCOMING_PREFIX + rid in before]
    if lines:
        store_git(git_dir, ["update-ref", "--stdin"], input="".join(lines).encode())


def _adopt_code_refs(git_dir: Path) -> int:
    """Keep fetched code refs whose name is their commit's id; drop the staging refs."""
    staged = list_refs(git_dir, INCOMING_CODE_PREFIX)
    if not staged:
        return 0
    listing = store_git(git_dir, ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
                        input="".join(f"{sha}\n" for sha in staged.values()).encode())
    commits = {line.split()[0] for line in listing.stdout.decode().splitlines()
               if line.endswith(" commit")}
    lines, refused = [], 0
    for ref, sha in staged.items():
        name = ref.removeprefix(INCOMING_CODE_PREFIX)
        if name == sha and sha in commits:
            lines.append(f"update {_CODE_PREFIX}{sha} {sha}\n")
        else:
            refused += 1  # a lying ref could repoint one of our snapshots' names
        lines.append(f"delete {ref}\n")
    store_git(git_dir, ["update-ref", "--stdin"], input="".join(lines).encode())
    return refused


def _index(store_root: Path, run_ids: list[str]) -> int:
    """Index the pulled runs; a failure only leaves them to the first reader's scan."""
    from ..store.index import Index

    try:
        return Index(store_root).add_runs(run_ids)
    except Exception as exc:  # e.g. a locked or damaged index: readers rebuild it
        print(f"flowillower: pulled runs not indexed yet ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 0
