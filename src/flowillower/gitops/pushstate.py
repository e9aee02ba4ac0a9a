"""What a push remembers, so the next push costs what changed, not what exists.

A finished run never changes, so once its folder was recorded as a run commit, that commit
can be reused as long as the folder is the same. "The same" is judged by a cheap
fingerprint: every travelling file's path, size, mtime (ns) and mode, plus what else
decides the commit (large artifacts in or out, the version last pulled from a remote).

The record lives in `<store>/local/push/commits.json` (`local/` is never pushed), written
atomically. It is only ever a hint: an entry is used when its fingerprint matches *and*
its commit is still what the run's ref names; anything else (a missing, corrupt or stale
file, a run that changed) means "build the commit again", which gives the same commit for
the same folder. A fingerprint is not recorded while any file is younger than
`SETTLE_SECONDS`, so a file rewritten within one mtime tick is never mistaken for the
same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.provenance import local_dir
from .incoming import LARGE_ARTIFACT

__all__ = ["RunFiles", "scan_run", "load_commits", "save_commits", "SETTLE_SECONDS",
           "load_catalog_seen", "save_catalog_seen"]

SETTLE_SECONDS = 2.0
# Never sent: checkpoints (loading one runs code) and the run's own index row, which is
# derived from its files and stamped with this machine's inode and ctime (worthless
# anywhere else; a pull would refuse it).
_LOCAL_ONLY = ("checkpoints", "index-row.json")
_STATE_VERSION = 1


@dataclass
class RunFiles:
    """The files of one run folder that travel, as found by `scan_run`."""

    files: list[tuple[str, str, str]] = field(default_factory=list)  # (rel, mode, path)
    large: list[list[Any]] = field(default_factory=list)  # [rel, size] left behind
    fingerprint: str = ""
    settled: bool = True  # no file changed in the last SETTLE_SECONDS


def _mode(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "120000"
    return "100755" if st.st_mode & stat.S_IXUSR else "100644"


def scan_run(run_dir: Path, include_large: bool, limit: int = LARGE_ARTIFACT) -> RunFiles:
    """The travelling files of `run_dir` (not `checkpoints/`, not `index-row.json`, not
    `*.tmp`, no folders, large artifacts only with `include_large`), in git's path
    order, with a fingerprint.

    Only `lstat` is used: nothing is read, so scanning thousands of runs is cheap.
    """
    found = RunFiles()
    rows: list[tuple[str, int, int, str]] = []
    now = time.time()
    stack = [(os.fspath(run_dir), "")]  # plain strings: thousands of runs, no Path objects
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = prefix + entry.name
            if rel in _LOCAL_ONLY or entry.name.endswith(".tmp"):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, rel + "/"))
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue  # a fifo or socket is no run file
            if (stat.S_ISLNK(st.st_mode) and os.path.isdir(entry.path)):
                continue  # a link to a folder is skipped, as git's index would
            if rel.startswith("artifacts/") and not include_large and st.st_size > limit:
                found.large.append([rel, st.st_size])
                continue
            mode = _mode(st)
            found.files.append((rel, mode, entry.path))
            rows.append((rel, st.st_size, st.st_mtime_ns, mode))
            if now - st.st_mtime_ns / 1e9 < SETTLE_SECONDS:
                found.settled = False
    found.files.sort(key=lambda item: item[0].encode("utf-8", "surrogateescape"))
    found.large.sort()
    rows.sort()
    digest = hashlib.sha1(repr((include_large, limit, rows)).encode("utf-8", "surrogateescape"))
    found.fingerprint = digest.hexdigest()
    return found


def _state_path(store_root: Path) -> Path:
    return local_dir(store_root) / "push" / "commits.json"


def load_commits(store_root: Path) -> dict[str, dict[str, str]]:
    """{run id: {"fp", "commit", "snapshot"}} from the last pushes; {} when unreadable."""
    try:
        raw = json.loads(_state_path(store_root).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != _STATE_VERSION:
        return {}
    runs = raw.get("runs")
    if not isinstance(runs, dict):
        return {}
    return {run_id: entry for run_id, entry in runs.items()
            if isinstance(entry, dict) and isinstance(entry.get("fp"), str)
            and isinstance(entry.get("commit"), str)}


def save_commits(store_root: Path, runs: dict[str, dict[str, str]]) -> None:
    """Write the record atomically (a crash leaves the old file or the new, never half).

    A failure to write (full disk, read-only store) only costs speed next time.
    """
    _save(_state_path(store_root), {"version": _STATE_VERSION, "runs": runs})


def _seen_path(store_root: Path, key: str) -> Path:
    return local_dir(store_root) / "push" / f"catalog-{key}.json"


def load_catalog_seen(store_root: Path, key: str) -> tuple[str, dict[str, str]] | None:
    """(catalog commit, {run id: commit its row describes}) as this store last wrote or
    read the catalog of remote `key`; None when unknown or unreadable. A hint like the
    rest: it is only used while the remote's catalog is still that very commit."""
    try:
        raw = json.loads(_seen_path(store_root, key).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("version") != _STATE_VERSION \
            or not isinstance(raw.get("catalog"), str) or not isinstance(raw.get("rows"), dict):
        return None
    return raw["catalog"], {rid: sha for rid, sha in raw["rows"].items()
                            if isinstance(sha, str)}


def save_catalog_seen(store_root: Path, key: str, catalog: str, rows: dict[str, str]) -> None:
    """Remember what catalog commit `catalog` of remote `key` describes (atomically)."""
    _save(_seen_path(store_root, key), {"version": _STATE_VERSION, "catalog": catalog,
                                        "rows": rows})


def _save(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
