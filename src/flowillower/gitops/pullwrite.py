"""Writing pulled runs: checked files only, added, never replacing one of yours.

All runs of a pull are written from one `cat-file --batch` (a fresh pull of thousands of
runs starts one reader, not one per run). A new run is assembled aside and renamed into
`runs/` whole, so readers never see half a run; a run already here only gains files it
lacks, and a record file (`*.fwl`) grows only when the incoming copy extends the local one
byte for byte. A pulled run that a newer version may update (`pullrefresh`) also has its
rewritten files (run.json, a summary set aside by a resume, notes) replaced atomically,
each only if it is still the file that was checked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.provenance import is_pulled, mark_pulled_many
from .fastimport import hash_files
from .incoming import content_refusal, read_run_json
from .pullrefresh import SUMMARY, Refresh, identity_refusal, replace_refusal, set_aside_as
from .pulltrees import Entry
from .repo import abandon, batch_read, finish, store_popen

__all__ = ["RunPlan", "plan_run", "write_runs"]


HEARTBEAT = b"heartbeat.json"  # a live run rewrites it (heartbeat.py)
MEDIA_DIRS = (b"media/", b"artifacts/")  # what `pull --no-media` leaves for later


@dataclass
class RunPlan:
    """One pulled run to write: where, which blobs to which paths, what was refused."""

    run_id: str
    commit: str
    meta: dict[str, Any]
    target: Path
    is_new: bool
    pulled_before: bool
    wanted: dict[str, list[bytes]] = field(default_factory=dict)
    refused: list[tuple[bytes, str]] = field(default_factory=list)
    dest: Path | None = None
    added: int = 0
    record: dict[str, Any] = field(default_factory=dict)  # extra pull-record fields
    replacing: dict[bytes, str] = field(default_factory=dict)  # path -> our blob id
    remove: dict[bytes, str] = field(default_factory=dict)  # set-aside summaries
    kept_as: dict[bytes, bytes] = field(default_factory=dict)  # summary -> its set-aside
    algo: str = "sha1"


def plan_run(store_root: Path, run: tuple[str, str, dict[str, Any]], entries: list[Entry],
             refused: list[tuple[bytes, str]], no_media: bool = False,
             media_only: bool = False, refresh: Refresh | None = None) -> RunPlan | str:
    """What to write of one run whose run.json passed; a reason when the run cannot be
    written at all. `no_media`: files under media/ and artifacts/ are left out and
    counted in the pull record (`media_left`); `media_only`: nothing else is written;
    `refresh`: the run is a newer version of a pulled run (`pullrefresh.refreshable`)."""
    commit, run_id, meta = run
    target = store_root / "runs" / run_id
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        return "the local run folder is not a folder"
    is_new = not target.exists()
    plan = RunPlan(run_id, commit, meta, target, is_new,
                   not is_new and is_pulled(store_root, run_id), refused=refused)
    left, later = 0, []
    if refresh is not None:
        plan.algo = refresh.algo
        names = {rel for rel, _m, _s, _z in entries}
        for rel, ours in refresh.local.items():
            kept = set_aside_as(rel, ours, entries) if SUMMARY.match(rel) else None
            if kept is not None:
                plan.kept_as[rel] = kept
                if rel not in names:  # running again: the incoming run has no summary
                    plan.remove[rel] = ours
    for rel, _mode, sha, size in entries:
        local = target / os.fsdecode(rel)
        if no_media and rel.startswith(MEDIA_DIRS):
            left += not local.exists()  # what this run still lacks here
            continue
        if media_only and not rel.startswith(MEDIA_DIRS):
            continue
        if not is_new:
            if _blocked(target, rel) or local.is_symlink() or local.is_dir():
                refused.append((rel, "the local path is a link or a folder"))
                continue
            if refresh is not None and rel != HEARTBEAT and local.exists():
                ours = refresh.local.get(rel)
                if ours is None or ours == sha:
                    continue  # the same file
                why = None if rel.endswith(b".fwl") else replace_refusal(rel, ours, entries)
                if why:
                    refused.append((rel, why))
                elif not rel.endswith(b".fwl"):
                    plan.replacing[rel] = ours
                    later.append((sha, rel))  # after the files it adds (a set-aside summary)
                else:
                    plan.wanted.setdefault(sha, []).append(rel)  # grows, or is refused
                continue
            if local.exists() and not (rel.endswith(b".fwl") and local.stat().st_size < size) \
                    and not (plan.pulled_before and rel == HEARTBEAT):
                continue  # ours already: never overwritten
        plan.wanted.setdefault(sha, []).append(rel)
    for sha, rel in later:
        plan.wanted.setdefault(sha, []).append(rel)
    plan.record["media_left"] = left
    return plan


def write_runs(git_dir: Path, store_root: Path, plans: list[RunPlan],
               origin: dict[str, str], result: dict[str, Any]) -> None:
    """Write every plan's files from one `cat-file --batch`, finishing each run (rename,
    counts, pull record) as soon as its last file is written."""
    requests = [(plan, sha) for plan in plans for sha in plan.wanted]
    left = {id(plan): len(plan.wanted) for plan in plans}
    # Every run that may arrive is recorded as pulled BEFORE any is renamed in, in one
    # file: a pull killed half-way leaves runs that still read as a teammate's (a record
    # of a run that then never arrived only keeps that id untrusted: the safe side).
    # A run made here that gains a teammate's note stays ours; a pulled one stays pulled.
    mark_pulled_many(store_root, [
        {"run": plan.run_id, "remote": origin["remote"], "url": origin["url"],
         "commit": plan.commit, "author": plan.meta.get("user"),
         "host": plan.meta.get("host"), **plan.record}
        for plan in plans if (plan.is_new and plan.wanted) or plan.pulled_before])
    try:
        for plan in plans:
            if not plan.wanted:
                _finish(plan, result)
        if not requests:
            return
        reader = store_popen(git_dir, ["cat-file", "--batch"])
        try:
            # Streamed: one blob in memory at a time, whatever the size of the pull.
            shas = [sha for _plan, sha in requests]
            for index, (sha, data) in enumerate(batch_read(reader, shas)):
                plan = requests[index][0]
                if plan.dest is None:
                    plan.dest = Path(tempfile.mkdtemp(prefix=f".pull-{plan.run_id}-",
                                                      dir=plan.target.parent)) \
                        if plan.is_new else plan.target
                for rel in plan.wanted[sha] if data is not None else ():
                    if rel in plan.replacing:
                        reason = content_refusal(rel, data) or _replace(plan, rel, data)
                    elif rel == HEARTBEAT and plan.pulled_before and not plan.is_new:
                        reason = content_refusal(rel, data) or _refresh(plan.dest, rel, data)
                    else:
                        reason = content_refusal(rel, data) or _write(plan.dest, rel, data,
                                                                      plan.is_new)
                    if reason:
                        plan.refused.append((rel, reason))
                    else:
                        plan.added += 1
                left[id(plan)] -= 1
                if not left[id(plan)]:
                    _finish(plan, result)
        except BaseException:
            abandon(reader)
            raise
        finish(reader)
    finally:
        for plan in plans:  # an aside folder of a run not renamed in (an error) goes
            if plan.is_new and plan.dest is not None and plan.dest.exists():
                shutil.rmtree(plan.dest, ignore_errors=True)


def _finish(plan: RunPlan, result: dict[str, Any]) -> None:
    """Rename a new run in, drop summaries a resume set aside, count what was written."""
    removed = 0
    for rel, ours in plan.remove.items():
        if _holds(plan.target / os.fsdecode(rel), ours, plan.algo) and _kept(plan, rel, ours):
            (plan.target / os.fsdecode(rel)).unlink()
            removed += 1
    if plan.is_new and plan.added and plan.dest is not None:
        try:
            os.rename(plan.dest, plan.target)
        except OSError:
            plan.refused.append((b"<run>", "a run of this id appeared here during the pull"))
            plan.added = 0
    if plan.refused:
        result["refused"][plan.run_id] = [[os.fsdecode(rel), reason]
                                          for rel, reason in plan.refused]
    result["files_added"] += plan.added
    arrived = plan.is_new and plan.added > 0
    if arrived:
        result["runs_added"] += 1
    elif plan.added or removed:
        result["runs_updated"] += 1


def _blocked(target: Path, rel: bytes) -> bool:
    """Whether a folder on the way to `rel` inside `target` is a link or not a folder."""
    node = target
    for part in rel.split(b"/")[:-1]:
        node = node / os.fsdecode(part)
        if node.is_symlink() or (node.exists() and not node.is_dir()):
            return True
    return False


def _refresh(dest: Path, rel: bytes, data: bytes) -> str | None:
    """Replace a file of a pulled run with the remote's newer one, atomically: its
    heartbeat, or a file `pullrefresh` let a newer version replace (never a run of ours:
    only runs that arrived by pull get here)."""
    path = dest / os.fsdecode(rel)
    if path.is_symlink():
        return "the local path is a link (kept it)"
    tmp = path.with_name(f".{path.name}.pull.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"cannot be written here ({exc.strerror or exc})"
    return None


def _holds(path: Path, blob: str, algo: str) -> bool:
    """Whether `path` is a plain file whose blob id is `blob` (checked just before it is
    replaced or removed: a file changed here meanwhile is kept)."""
    try:
        return not path.is_symlink() and path.is_file() and \
            hash_files([("", "100644", str(path))], algo)[0] == blob
    except OSError:
        return False


def _kept(plan: RunPlan, rel: bytes, ours: str) -> bool:
    """Whether a summary about to be replaced or dropped is here as its set-aside copy
    (never lose a summary because that copy was refused)."""
    kept = plan.kept_as.get(rel)
    return kept is None or _holds(plan.target / os.fsdecode(kept), ours, plan.algo)


def _replace(plan: RunPlan, rel: bytes, data: bytes) -> str | None:
    """Replace one file of a refreshable run with its newer version, atomically."""
    path = plan.target / os.fsdecode(rel)
    if rel == b"run.json":
        theirs, why = read_run_json(data, plan.run_id)
        ours, _ = read_run_json(path.read_bytes() if path.is_file() else None, plan.run_id)
        why = why or ("run.json here is not this run's (kept yours)" if ours is None
                      else identity_refusal(ours, theirs or {}))
        if why:
            return why
    if not _holds(path, plan.replacing[rel], plan.algo):
        return "changed here during the pull (kept yours)"
    if not _kept(plan, rel, plan.replacing[rel]):
        return "its set-aside copy did not arrive (kept yours)"
    return _refresh(plan.target, rel, data)


def _write(dest: Path, rel: bytes, data: bytes, aside: bool = False) -> str | None:
    """Add one file without ever replacing or shortening a local one; why not, or None.

    `aside`: `dest` is a new run's private folder, which no reader sees until it is
    renamed in whole, so the file is written in place.
    """
    path = dest / os.fsdecode(rel)
    try:
        if aside:
            if b"/" in rel:  # the run's own folder exists: no system call for top files
                path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as fh:  # exclusive: a duplicate path keeps the first
                fh.write(data)
            return None
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
