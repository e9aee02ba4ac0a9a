"""A run's family for the run page: the run it was forked from, the forks of it (and of
them, as a tree), and, for a resumed run, its segments.

`fw.init(fork_from=(RUN, step))` writes `fork_of` into the child's run.json and a
continued run keeps one frame file per segment (`store.segments`). The index keeps each
run's parent (its `fork_of` / `fork_step` columns, in the rows as `fork_of`), recorded
with the run's index row at start, so the server finds a family in the rows it already
holds, reading no run.json. `ForkIndex` reads run.json itself, for folders without an
index (an export's runs): it re-reads one only when its size or mtime changed. Either
way the same check applies (`store.index_rows.fork_parent`; a pulled run may be
hostile): a malformed `fork_of` is no fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..store.documents import read_meta, read_summary
from ..store.index_rows import fork_parent
from ..store.segments import STEPPED_ROLES, segment_files

__all__ = ["ForkIndex", "family_doc", "has_family", "parse_fork", "segments_doc"]

MAX_NODES = 500  # a bigger family is cut (the page draws a small tree)
MAX_DEPTH = 100  # ancestors followed at most (a cycle of hostile run.json ends too)


def parse_fork(meta: Any) -> dict[str, Any] | None:
    """`fork_of` of a run.json (or an index row) as {"run", "step", "git"} when
    well-formed (`fork_parent`), else None."""
    link = fork_parent(meta)
    if link is None:
        return None
    git = meta["fork_of"].get("git")
    return {"run": link[0], "step": link[1], "git": git if isinstance(git, dict) else None}


class ForkIndex:
    """Each run's parent (`fork_of`), cached per run.json version; thread-safe."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def fork_of(self, run_dir: Path) -> dict[str, Any] | None:
        """The run's parent and fork step, or None (not a fork, or run.json unreadable)."""
        path = run_dir / "run.json"
        try:
            st = os.stat(path)
        except OSError:
            return None
        version = (st.st_size, st.st_mtime_ns)
        key = str(path)
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        fork = parse_fork(read_meta(run_dir))
        with self._lock:
            self._seen[key] = (version, fork)
        return fork

    def parents(self, runs_root: Path, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """{run id: its fork_of} of the forks among `ids`."""
        out = {}
        for run_id in ids:
            fork = self.fork_of(runs_root / run_id)
            if fork is not None:
                out[run_id] = fork
        return out


def _git_label(git: Any) -> dict[str, Any] | None:
    if not isinstance(git, dict):
        return None
    return {k: git.get(k) for k in ("head", "branch", "dirty", "snapshot")
            if isinstance(git.get(k), (str, bool))}


# (path, size, mtime_ns) -> what a segment file says; bounded (a run page reads a few).
_FILE_FACTS: dict[tuple[str, int, int], dict[str, Any]] = {}


def _file_facts(path: Path) -> dict[str, Any]:
    """Lowest and highest step of the file's stepped values, its first value's time and
    its `resume` events (decoded once per version of the file)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _FILE_FACTS:
        return _FILE_FACTS[key]
    import numpy as np

    from ..store.reader import decode_values

    try:
        decoded = decode_values(path.read_bytes())
    except OSError:
        return {}
    stepped = np.array([k for k, (_n, role) in decoded.keys.items() if role in STEPPED_ROLES],
                       np.int64)
    lo = hi = first_time = None
    resumes = []
    for events, blocks in decoded.frames:
        resumes += [e for e in events if e.get("event") in ("resume", "fork")]
        for block in blocks:
            if first_time is None and len(block.time):
                first_time = float(block.time.min())
            steps = block.step[np.isin(block.key, stepped) & (block.step >= 0)]
            if len(steps):
                a, b = int(steps.min()), int(steps.max())
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
    facts = {"lo": lo, "hi": hi, "first_time": first_time, "events": resumes}
    if len(_FILE_FACTS) > 256:
        _FILE_FACTS.clear()
    _FILE_FACTS[key] = facts
    return facts


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _rewind(first: int | None, earlier: list[dict[str, Any]]) -> int | None:
    """The step a segment restarted from when it went back over recorded steps (a
    restart from a checkpoint); None when it went on past them (or is the first)."""
    recorded = [s["last_step"] for s in earlier if s["last_step"] is not None]
    return first if first is not None and recorded and first <= max(recorded) else None


def segments_doc(run_dir: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's segments (empty for a run never resumed or forked), oldest first:
    index, first and last step (`rewind`: the step a resumed segment went back to, when
    it restarted before the last recorded step),
    code version, host, started, and how it ended."""
    files = [(p, s) for p, s in segment_files(run_dir) if _size(p)]  # claimed, never written
    count = max((seg for _p, seg in files), default=0)
    if count <= 1:
        return []
    fork = parse_fork(meta)
    gits = meta.get("segments_git") if isinstance(meta.get("segments_git"), list) else []
    # Hosts of earlier segments, where the continuation recorded them (run.json's
    # `segments_host`, as `segments_git`) or the segment's `resume` event names one.
    hosts = meta.get("segments_host") if isinstance(meta.get("segments_host"), list) else []
    out = []
    for seg in range(1, count + 1):
        facts = [_file_facts(p) for p, s in files if s == seg]
        los = [f["lo"] for f in facts if f.get("lo") is not None]
        his = [f["hi"] for f in facts if f.get("hi") is not None]
        events = [e for f in facts for e in f.get("events", [])
                  if e.get("event") == "resume" and e.get("segment") == seg]
        times = [f["first_time"] for f in facts if f.get("first_time") is not None]
        started = events[0].get("time") if events else (
            meta.get("created") if seg == 1 else min(times, default=None))
        if seg == count:
            git, host = meta.get("git"), meta.get("host")
        else:
            git = gits[seg - 1] if seg - 1 < len(gits) else (
                fork["git"] if fork and seg == 1 else None)
            host = hosts[seg - 1] if seg - 1 < len(hosts) else None
        if events and isinstance(events[0].get("host"), str):
            host = events[0]["host"]
        summary = read_summary(run_dir, "summary.json" if seg == count
                               else f"summary.seg{seg}.json") or {}
        out.append({
            "index": seg, "first_step": min(los, default=None), "last_step": max(his, default=None),
            "rewind": _rewind(min(los, default=None), out),
            "started": started if isinstance(started, (int, float)) else None,
            "ended": summary.get("ended") if isinstance(summary.get("ended"), (int, float))
            else None,
            "status": summary.get("status") if isinstance(summary.get("status"), str) else None,
            "git": _git_label(git), "host": host if isinstance(host, str) else None,
            "inherited": bool(fork) and seg == 1,  # a fork's copy of its parent's values
        })
    return out


def family_doc(run_id: str, parents: dict[str, dict[str, Any]],
               row_of: Callable[[str], dict[str, Any] | None],
               segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The family of `run_id`: the chain of runs it descends from (`ancestors`, oldest
    first, each with the step its child forked at), and the tree of forks under the
    oldest of them (`tree`: the run, its siblings and every fork below, recursively).
    `parents`: {run: fork_of} of the known forks; `row_of(id)`: a run's row (None when
    the run is not in this store or site)."""
    children: dict[str, list[str]] = {}
    for child, fork in parents.items():
        children.setdefault(fork["run"], []).append(child)

    def node(rid: str) -> dict[str, Any]:
        row = row_of(rid)
        fork = parents.get(rid)
        return {"id": rid, "name": row.get("name") if row else None,
                "status": row.get("status") if row else None,
                "created": row.get("created") if row else None,
                "step": fork["step"] if fork else None, "missing": row is None,
                "current": rid == run_id}

    chain = [run_id]
    while chain[-1] in parents and len(chain) < MAX_DEPTH:
        parent = parents[chain[-1]]["run"]
        if parent in chain:
            break  # a cycle (hostile run.json): stop where it closes
        chain.append(parent)
    # Each ancestor with the step its child on the way to `run_id` was forked at.
    ancestors = [{**node(chain[i]), "step": parents[chain[i - 1]]["step"]}
                 for i in range(len(chain) - 1, 0, -1)]
    count, cut = 0, False

    def tree(rid: str, seen: set[str]) -> dict[str, Any]:
        nonlocal count, cut
        count += 1
        out = node(rid)
        kids = sorted(children.get(rid, []),
                      key=lambda c: (parents[c]["step"], (row_of(c) or {}).get("created") or 0, c))
        out["children"] = []
        for kid in kids:
            if kid in seen:
                continue
            if count >= MAX_NODES:
                cut = True
                break
            out["children"].append(tree(kid, seen | {kid}))
        return out

    root = chain[-1]
    return {"run": run_id, "parent": ancestors[-1] if ancestors else None,
            "ancestors": ancestors, "tree": tree(root, {root}), "nodes": count, "cut": cut,
            "forks": len(children.get(run_id, [])), "segments": segments}


def has_family(doc: dict[str, Any]) -> bool:
    """Whether the page has anything to show: a parent, a fork, or several segments."""
    return bool(doc["parent"] or doc["tree"]["children"] or doc["segments"])
