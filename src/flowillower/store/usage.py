"""Store size: where the bytes are (`flowillower du`) and pruning media and checkpoints
(`flowillower gc --keep-last N --older-than DAYS`).

Sizes are counted from `lstat`, never following a link (a link counts as itself, and
nothing outside the store is ever measured or deleted). Pruning works on whole
`media/` and `checkpoints/` folders of a run, never on its values: a checkpoint may share
tensors with an earlier one of the same run, so a run keeps all of its checkpoints or
none. Running runs are never pruned.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "RunUsage", "StoreUsage", "measure", "PruneCandidate", "plan_prune",
           "prune"]

# The kinds a run's bytes are counted under; "other" is run.json, notes, lineage, ...
KINDS = ("values", "media", "artifacts", "checkpoints", "other")
PRUNABLE = ("media", "checkpoints")
_DAY = 86400.0


def _kind(rel_top: str, name: str) -> str:
    """The kind of a file directly in a run (`rel_top` is its first path part)."""
    if rel_top in ("media", "artifacts", "checkpoints"):
        return rel_top
    if rel_top == "replays" or (rel_top == name and name.endswith(".fwl")):
        return "values"
    return "other"


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path`, by lstat, without following any link."""
    total = files = 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            else:
                total += st.st_size
                files += 1
    return total, files


@dataclass
class RunUsage:
    """Bytes of one run folder by kind."""

    id: str
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


@dataclass
class StoreUsage:
    """Bytes of a store: per run and kind, plus the store-wide parts."""

    runs: list[RunUsage]
    snapshots: int  # the git repository: code snapshots and pushable run commits
    index: int  # index.sqlite and its journal: derived, rebuilt by `reindex`
    local: int  # this machine's records (pulled runs, checkpoint digests)
    trash: int  # half-finished deletes
    store: int = 0  # the rest: registry, saved views, .gitignore, ...

    def by_kind(self) -> dict[str, int]:
        """Every run's bytes summed per kind, and the store-wide kinds."""
        totals = dict.fromkeys(KINDS, 0)
        for run in self.runs:
            for kind, size in run.kinds.items():
                totals[kind] += size
        return {**totals, "snapshots": self.snapshots, "index": self.index,
                "local": self.local, "trash": self.trash, "store": self.store}

    @property
    def total(self) -> int:
        return sum(self.by_kind().values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: totals by kind and each run's (largest first)."""
        return {"total": self.total, "by_kind": self.by_kind(),
                "runs": [{"id": r.id, "total": r.total, **r.kinds}
                         for r in sorted(self.runs, key=lambda r: (-r.total, r.id))]}


def _run_usage(run_dir: Path) -> RunUsage:
    usage = RunUsage(run_dir.name)
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return usage
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        kind = _kind(entry.name, entry.name)
        if stat.S_ISDIR(st.st_mode):
            usage.kinds[kind] += tree_bytes(Path(entry.path))[0]
        else:
            usage.kinds[kind] += st.st_size
    return usage


def _run_dirs(root: Path) -> list[Path]:
    """Real run folders directly in `runs/` (links and hidden entries skipped)."""
    try:
        entries = list(os.scandir(root / "runs"))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries
                  if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


def _not_runs(runs: Path) -> int:
    """Bytes of the entries in `runs/` that are no run: hidden ones, links, files."""
    total = 0
    for entry in os.scandir(runs):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            is_dir = entry.is_dir(follow_symlinks=False)
            total += tree_bytes(Path(entry.path))[0] if is_dir else \
                entry.stat(follow_symlinks=False).st_size
    return total


_STORE_PARTS = {"git": "snapshots", "local": "local", ".trash": "trash"}


def measure(root: Path) -> StoreUsage:
    """The store at `root`, measured: every file under it counted once."""
    parts = dict.fromkeys(("snapshots", "index", "local", "trash", "store"), 0)
    runs: list[RunUsage] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        entries = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if entry.name == "runs" and is_dir:
            runs = [_run_usage(d) for d in _run_dirs(root)]
            parts["store"] += _not_runs(Path(entry.path))
            continue
        kind = "index" if entry.name.startswith("index.sqlite") else \
            _STORE_PARTS.get(entry.name, "store")
        parts[kind] += tree_bytes(Path(entry.path))[0] if is_dir else st.st_size
    return StoreUsage(runs=runs, **parts)


@dataclass
class PruneCandidate:
    """A run whose media and / or checkpoints a prune would remove."""

    id: str
    created: float
    bytes: dict[str, int]  # kind -> bytes (only kinds present)
    files: dict[str, int]


def plan_prune(rows: list[dict[str, Any]], root: Path, keep_last: int | None,
               older_than_days: float | None, now: float | None = None
               ) -> list[PruneCandidate]:
    """Runs whose media and checkpoints go: not among the `keep_last` newest runs and
    started over `older_than_days` ago (each test only when given; at least one must be).
    Running runs are always kept. `rows` are the store's run rows (newest first)."""
    if keep_last is None and older_than_days is None:
        raise ValueError("give --keep-last N, --older-than DAYS or both")
    if (keep_last is not None and keep_last < 0) or (
            older_than_days is not None and older_than_days < 0):
        raise ValueError("--keep-last and --older-than take numbers >= 0")
    now = time.time() if now is None else now
    ordered = sorted(rows, key=lambda r: r.get("created") or 0, reverse=True)
    out = []
    for rank, row in enumerate(ordered):
        if keep_last is not None and rank < keep_last:
            continue
        created = float(row.get("created") or 0)
        if older_than_days is not None and now - created < older_than_days * _DAY:
            continue
        if row.get("status") == "running":
            continue  # still writing media, maybe replaying from its checkpoints
        run_dir = root / "runs" / row["id"]
        if os.path.islink(run_dir) or not run_dir.is_dir():
            continue
        sizes, counts = {}, {}
        for kind in PRUNABLE:
            folder = run_dir / kind
            if folder.is_symlink() or not folder.is_dir():
                continue
            sizes[kind], counts[kind] = tree_bytes(folder)
        if sizes:
            out.append(PruneCandidate(row["id"], created, sizes, counts))
    return out


def prune(root: Path, candidates: list[PruneCandidate]) -> int:
    """Remove the candidates' media and checkpoint folders; bytes freed. Each folder is
    first renamed into the store's trash (a half-done prune never leaves half a folder
    under the run) and the trash copy is removed without following links."""
    trash_root = root / ".trash"
    trash_root.mkdir(exist_ok=True)
    freed = 0
    for cand in candidates:
        run_dir = root / "runs" / cand.id
        if os.path.islink(run_dir):
            continue
        for kind in cand.bytes:
            folder = run_dir / kind
            if folder.is_symlink() or not folder.is_dir():
                continue
            trash = trash_root / f"{cand.id}-{kind}-{os.urandom(4).hex()}"
            os.replace(folder, trash)  # renames the entry itself, never what a link names
            if trash.is_symlink():  # swapped for a link since the check: drop the link only
                trash.unlink()
            else:
                shutil.rmtree(trash, ignore_errors=True)
            freed += cand.bytes[kind]
    return freed
