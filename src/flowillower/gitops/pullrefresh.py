"""Pulled live runs stay current: when a newer version of a pulled run may update it.

Pull adds files a run lacks and grows record files that the incoming copy extends. A run
pulled while it was running also rewrites a few files later (run.json when its set-up
finishes or it resumes, summary.json when it ends or is set aside by a resume). Such a
file may replace ours only when all of this holds:

* the run arrived by pull, from this very remote (its pull record names the same URL),
  never a run made here;
* the incoming commit descends from the version we have (the commit of our incoming ref
  before this pull): a newer version of the same run, not another history;
* our copy was not changed here: every local file a run may hold is, byte for byte, the
  file of the version we have (or already the incoming one). A local note, a replay, a
  resumed segment make the run ours too: it is then only joined, never overwritten.

Even then values are never rewritten (`*.fwl` only grow), media and artifacts are written
once, a finished run's summary is replaced only when the newer version keeps it set aside
as `summary.seg<N>.json` (a resume), and run.json cannot change who made the run or when.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..store.provenance import pulled_info
from .fastimport import hash_files, object_format
from .incoming import entry_refusal
from .pulltrees import Entry, read_entries, read_objects
from .refs import INCOMING_PREFIX
from .runcommits import is_ancestor

__all__ = ["Refresh", "refreshable", "replace_refusal", "set_aside_as", "identity_refusal",
           "SUMMARY", "SET_ASIDE"]

HEARTBEAT = b"heartbeat.json"
SUMMARY = re.compile(rb"^summary(\.rank\d+)?\.json$")
SET_ASIDE = re.compile(rb"^summary(\.rank\d+)?\.seg\d+\.json$")
_REPLACEABLE = (b"run.json", b"notes/", b"inputs/", b"model/")
_IDENTITY = ("id", "user", "host", "created")


@dataclass
class Refresh:
    """A pulled run a newer version may update: blob ids of our files and of theirs."""

    local: dict[bytes, str]  # our files (those a run may hold): path -> blob id
    algo: str  # the store repository's hash ('sha1' or 'sha256')


def refreshable(git_dir: Path, store_root: Path, url: str, before: dict[str, str],
                commits: dict[str, str]) -> dict[str, Refresh]:
    """{run id: Refresh} of the runs in `commits` ({run id: incoming commit}) that this
    pull from `url` (redacted, as pull records keep it) may update in place; `before`:
    the incoming refs as they were before the fetch."""
    maybe: dict[str, str] = {}
    for run_id, commit in commits.items():
        base = before.get(INCOMING_PREFIX + run_id)
        folder = store_root / "runs" / run_id
        if base is None or base == commit or folder.is_symlink() or not folder.is_dir():
            continue
        record = pulled_info(store_root, run_id)
        if not record or "error" in record or record.get("url") != url:
            continue  # made here, unreadable record or another remote: join only
        maybe[run_id] = base
    bodies = read_objects(git_dir, [commits[rid] for rid in maybe])
    bases: dict[str, str] = {}
    for run_id, base in maybe.items():
        # a push makes the new version a child of the last one: its parents say so, in
        # the one read above; anything else is asked of git, run by run (rare)
        head = (bodies.get(commits[run_id]) or b"").split(b"\n\n", 1)[0]
        if f"parent {base}".encode() in head.split(b"\n") or \
                is_ancestor(git_dir, base, commits[run_id]):
            bases[run_id] = base
    if not bases:
        return {}
    algo = object_format(git_dir)
    listed = read_entries(git_dir, bases)
    incoming = read_entries(git_dir, {rid: commits[rid] for rid in bases})
    out = {}
    for run_id in bases:
        base_entries, _refused, broken = listed[run_id]
        new_entries, _r, new_broken = incoming[run_id]
        if broken or new_broken:
            continue
        local = _unchanged(store_root / "runs" / run_id, base_entries, new_entries, algo)
        if local is not None:
            out[run_id] = Refresh(local, algo)
    return out


def _unchanged(folder: Path, base: list[Entry], new: list[Entry], algo: str
               ) -> dict[bytes, str] | None:
    """Blob ids of the run's local files when each is the file of the version we have or
    of the incoming one; None when the run was changed here."""
    known: dict[bytes, set[str]] = {}
    for rel, _mode, sha, _size in (*base, *new):
        known.setdefault(rel, set()).add(sha)
    files = []
    for top, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(top, name)
            if os.path.islink(path):
                return None  # a link was put here: ours, keep away
        for name in names:
            path = os.path.join(top, name)
            rel = os.fsencode(os.path.relpath(path, folder).replace(os.sep, "/"))
            if rel == HEARTBEAT:
                continue  # refreshed on every pull anyway
            if entry_refusal(rel, "100644", "blob", os.path.getsize(path)) is not None:
                continue  # never travels (checkpoints/, index-row.json...): not run data
            if rel not in known:
                return None  # a file the run never had there: a note, a replay, ...
            files.append((rel.decode("utf-8", "surrogateescape"), "100644", path))
    ids = hash_files(files, algo)
    local = {}
    for (rel, _m, _p), blob in zip(files, ids):
        key = rel.encode("utf-8", "surrogateescape")
        if blob not in known[key]:
            return None  # edited here
        local[key] = blob
    return local


def replace_refusal(rel: bytes, local: str, incoming: list[Entry]) -> str | None:
    """Why a refreshable run's local file (blob id `local`) may not be replaced by the
    incoming version (`incoming`: its entries), or None. Record files only grow (the
    writer checks that they extend ours)."""
    if SUMMARY.match(rel):
        if set_aside_as(rel, local, incoming) is not None:
            return None  # resumed: our summary is kept as summary.seg<N>.json
        return "the summary of a finished run is final (kept yours)"
    if SET_ASIDE.match(rel):
        return "a set-aside summary is final (kept yours)"
    if rel.startswith((b"media/", b"artifacts/")):
        return "media and artifacts are written once (kept yours)"
    if rel == b"run.json" or rel.startswith(_REPLACEABLE[1:]):
        return None
    return "not a file a newer version may replace (kept yours)"


def set_aside_as(rel: bytes, local: str, incoming: list[Entry]) -> bytes | None:
    """The `summary.seg<N>.json` of `incoming` that keeps our summary `rel` (blob id
    `local`) as a resume sets it aside, or None."""
    stem = rel[:-len(b".json")]
    for other, _m, sha, _s in incoming:
        if sha == local and SET_ASIDE.match(other) and other.rsplit(b".seg", 1)[0] == stem:
            return other
    return None


def identity_refusal(ours: dict, theirs: dict) -> str | None:
    """Why a newer run.json may not replace ours: it changes who made the run or when."""
    changed = [key for key in _IDENTITY if ours.get(key) != theirs.get(key)]
    if changed:
        return f"run.json changes who made the run or when ({', '.join(changed)}; kept yours)"
    return None
