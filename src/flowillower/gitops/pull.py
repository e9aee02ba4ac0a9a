"""Pull: teammates' runs arrive as checked data, next to yours, and nothing of yours changes.

Run refs are fetched into `refs/flowillower/incoming/`, code refs into
`refs/flowillower/incoming-code/` (a code ref is adopted only if its name is the id of the
commit it points to). Each run commit is then checked entry by entry (`incoming`): what a
run may not hold is reported and never written. A new run is assembled aside and renamed
into `runs/` whole; a run already here only gains files it lacks, and a record file
(`*.fwl`) grows only when the incoming copy extends the local one byte for byte. Every run
a pull brings is remembered as pulled (`store.provenance`), with its remote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.provenance import is_pulled, mark_pulled
from .incoming import content_refusal, entry_refusal, read_run_json, valid_run_id
from .maintenance import store_lock
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


def pull(store_root: Path, remote: str, run_ids: list[str] | None = None) -> dict[str, Any]:
    """Fetch runs (and their code snapshots) from `remote` into the store.

    `run_ids` fetches only those runs' refs, no code refs (a push catching up with runs
    another machine changed meanwhile).

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
        # --no-prune: a user's fetch.prune=true must not delete our local code refs.
        if run_ids is None:
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
        todo: dict[str, tuple[str, list[Any], list[Any]]] = {}
        for ref, commit in sorted(list_refs(git_dir, INCOMING_PREFIX).items()):
            run_id = ref.removeprefix(INCOMING_PREFIX)
            if run_ids is not None and run_id not in wanted:
                continue
            if not valid_run_id(run_id):
                result["runs_refused"].append([run_id[:200], "not a valid run id"])
                store_git(git_dir, ["update-ref", "-d", ref])
                continue  # never let a remote ref name escape runs/
            target = runs_dir / run_id
            if target.exists() and before.get(ref) == commit:
                continue  # nothing new since the last pull
            todo[run_id] = (commit, *_entries(git_dir, commit))
        metas = _run_metas(git_dir, {run_id: entries for run_id, (_c, entries, _r)
                                     in todo.items()})
        for run_id, (commit, entries, refused) in todo.items():
            meta, why = metas[run_id]
            if meta is None:
                result["runs_refused"].append([run_id, why])
            else:
                _pull_run(store_root, git_dir, (commit, run_id, meta), entries, refused,
                          origin, result)
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


def _pull_run(store_root: Path, git_dir: Path, run: tuple[str, str, dict[str, Any]],
              entries: list[tuple[bytes, str, str, int]], refused: list[tuple[bytes, str]],
              origin: dict[str, str], result: dict[str, Any]) -> None:
    """Bring one run whose run.json passed: its checked files, and its pull record."""
    commit, run_id, meta = run
    target = store_root / "runs" / run_id
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        result["runs_refused"].append([run_id, "the local run folder is not a folder"])
        return
    is_new = not target.exists()
    pulled_before = not is_new and is_pulled(store_root, run_id)
    added = _materialize(git_dir, entries, target, refused)
    if refused:
        result["refused"][run_id] = [[os.fsdecode(rel), reason] for rel, reason in refused]
    result["files_added"] += added
    if is_new and target.exists():
        result["runs_added"] += 1
    elif added:
        result["runs_updated"] += 1
    # A run made here that gains a teammate's note stays ours; a pulled one stays pulled.
    if (is_new and target.exists()) or pulled_before:
        mark_pulled(store_root, run_id, origin["remote"], url=origin["url"], commit=commit,
                    author=meta.get("user"), host=meta.get("host"))


def _entries(git_dir: Path, commit: str
             ) -> tuple[list[tuple[bytes, str, str, int]], list[tuple[bytes, str]]]:
    """(entries that may be written: (path, mode, blob id, size), refused (path, why))."""
    raw = store_git(git_dir, ["ls-tree", "-r", "-z", "-l", "--full-tree", commit]).stdout
    ok, refused = [], []
    seen: set[bytes] = set()
    for record in raw.split(b"\0"):
        if not record:
            continue
        meta, _, rel = record.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        nbytes = int(size) if size.isdigit() else 0
        # a hand-made tree may name one path twice (or twice but for case): first one wins
        reason = "a duplicate entry" if rel.lower() in seen else \
            entry_refusal(rel, mode, kind, nbytes)
        seen.add(rel.lower())
        if reason:
            refused.append((rel, reason))
        else:
            ok.append((rel, mode, sha, nbytes))
    return ok, refused


def _blocked(target: Path, rel: bytes) -> bool:
    """Whether a folder on the way to `rel` inside `target` is a link or not a folder."""
    node = target
    for part in rel.split(b"/")[:-1]:
        node = node / os.fsdecode(part)
        if node.is_symlink() or (node.exists() and not node.is_dir()):
            return True
    return False


def _materialize(git_dir: Path, entries: list[tuple[bytes, str, str, int]], target: Path,
                 refused: list[tuple[bytes, str]]) -> int:
    """Write the checked files that `target` lacks (or that extend a record file)."""
    wanted: dict[str, list[bytes]] = {}
    for rel, _mode, sha, size in entries:
        local = target / os.fsdecode(rel)
        if _blocked(target, rel) or local.is_symlink() or local.is_dir():
            refused.append((rel, "the local path is a link or a folder"))
            continue
        if local.exists() and not (rel.endswith(b".fwl") and local.stat().st_size < size):
            continue  # ours already: never overwritten
        wanted.setdefault(sha, []).append(rel)
    if not wanted:
        return 0
    is_new = not target.exists()
    # A new run is assembled aside and renamed in whole: readers never see half a run.
    dest = Path(tempfile.mkdtemp(prefix=f".pull-{target.name}-", dir=target.parent)) \
        if is_new else target
    added = 0
    try:
        reader = store_popen(git_dir, ["cat-file", "--batch"])
        try:
            # Streamed: one blob in memory at a time, whatever the size of the run.
            for sha, data in batch_read(reader, list(wanted)):
                for rel in wanted[sha] if data is not None else ():
                    reason = content_refusal(rel, data) or _write(dest, rel, data)
                    if reason:
                        refused.append((rel, reason))
                    else:
                        added += 1
        except BaseException:
            abandon(reader)
            raise
        finish(reader)
        if is_new and added:
            try:
                os.rename(dest, target)
            except OSError:
                refused.append((b"<run>", "a run of this id appeared here during the pull"))
                added = 0
    finally:
        if is_new and dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
    return added


def _write(dest: Path, rel: bytes, data: bytes) -> str | None:
    """Add one file without ever replacing or shortening a local one; why not, or None."""
    path = dest / os.fsdecode(rel)
    try:
        return _write_new_or_extend(path, rel, data)
    except OSError as exc:  # e.g. a file where the tree wants a folder: skip, say why
        return f"cannot be written here ({exc.strerror or exc})"


def _write_new_or_extend(path: Path, rel: bytes, data: bytes) -> str | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not rel.endswith(b".fwl"):
            return "a local file of this name exists (kept yours)"
        local = path.read_bytes()
        if not data.startswith(local):
            return "a record file that does not extend yours (kept yours)"
        with open(path, "ab") as fh:  # O_APPEND: the bytes already there are never touched
            if os.fstat(fh.fileno()).st_size != len(local):
                return "a record file that is being written here (kept yours)"
            fh.write(data[len(local):])
        return None
    tmp = path.with_name(f".{path.name}.pull.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite it
    except FileExistsError:
        return "a local file of this name appeared during the pull (kept yours)"
    except OSError:  # no hard links here: create exclusively instead
        try:
            with open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return "a local file of this name appeared during the pull (kept yours)"
    finally:
        tmp.unlink()
    return None
