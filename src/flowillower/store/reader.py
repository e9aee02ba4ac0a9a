"""Reading a run directory back: metadata, status and typed value series.

Only readers (query, index, UI, CLI) import numpy; the logging side never does.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..heartbeat import liveness
from .decode import Block, FileValues, decode_values
from .documents import read_meta, read_summary
from .layout import pid_alive
from .segments import (
    NO_CUTOFF,
    RUN_LEVEL,
    STEPPED_ROLES,
    cutoffs,
    file_rewinds,
    segment_files,
)

__all__ = ["STATUSES", "read_json", "Series", "RunData", "Block", "FileValues",
           "decode_values", "ContextTable", "RunReader"]

ARG_PREFIX, METRIC_PREFIX = "args.", "metrics."  # the filter engine's explicit spellings
# The order of statuses a run goes through; `killed` is inferred for dead writers.
STATUSES = ("running", "success", "failed", "killed", "lost")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when missing or half written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Series:
    """All values of one key in one run, in logging order.

    Logging order is the order of the log calls' times (one clock for every thread,
    rank and replay of the run); values logged at the same time keep the order they
    were written in, and within one frame a tie between kinds (float, int, JSON) goes
    to the lower step. Values of one kind from one thread are written in logging order
    already, so they need no sorting unless their times go backwards.
    """

    name: str
    role: str  # "arg" | "metric" | "sys"
    ctx: np.ndarray  # index into RunData.ctx_coords
    step: np.ndarray  # int64
    time: np.ndarray  # float64, unix seconds
    values: np.ndarray  # float64, int64 or object
    replayed: np.ndarray  # bool: produced by a hindsight replay
    kind: str = "float"  # "float" | "int" | "object"

    def last(self) -> Any:
        return _py(self.values[-1]) if len(self.values) else None


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class RunData:
    """Everything recorded in a run's frame files, merged across ranks and replays.

    `series` is keyed by name. An arg and a metric of one name (`fw.arg("lr", ...)` and
    `fw.log("lr", ...)`) are two series, whether loaded whole or by name: the metric
    under `lr`, the arg under `args.lr` (each Series keeps its own `name` and `role`, so
    read an arg's name from `Series.name`, not from its key); `load(["args.lr"])` or
    `load(["metrics.lr"])` asks for one role by the filter engine's spelling, and that
    series also comes under the spelling, named so (a column of that name)."""

    loop_names: list[str] = field(default_factory=list)
    ctx_coords: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.int64))
    series: dict[str, Series] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def _map_contexts(ctx: np.ndarray, local_ids: np.ndarray, global_ids: np.ndarray
                  ) -> np.ndarray:
    """Each local context id's global id (0 for an id no definition names)."""
    if not len(local_ids):
        return np.zeros(len(ctx), np.int64)
    pos = np.minimum(np.searchsorted(local_ids, ctx), len(local_ids) - 1)
    return np.where(local_ids[pos] == ctx, global_ids[pos], 0)


class ContextTable:
    """The loop coordinates of every context a run's files define, numbered run-wide
    (0: the run level, outside any loop); each file's local context ids map onto these."""

    def __init__(self) -> None:
        self.loop_names: list[str] = []
        self.coord_index: dict[tuple, int] = {(): 0}
        self.coords: list[tuple] = [()]  # run-wide id -> ((loop, index), ...)
        self._table: np.ndarray | None = None

    def id_of(self, coords: dict[str, int]) -> int:
        """The run-wide id of a context (its loops in nesting order), added when new."""
        key = tuple(coords.items())
        gid = self.coord_index.get(key)
        if gid is None:
            for loop in coords:
                if loop not in self.loop_names:
                    self.loop_names.append(loop)
            gid = self.coord_index[key] = len(self.coords)
            self.coords.append(key)
            self._table = None
        return gid

    def table(self) -> np.ndarray:
        """[id, loop column] -> index in that loop (-1: not inside it); cached."""
        if self._table is None:
            out = np.full((len(self.coords), len(self.loop_names)), -1, np.int64)
            col = {name: i for i, name in enumerate(self.loop_names)}
            for gid, key in enumerate(self.coords):
                for loop, idx in key:
                    out[gid, col[loop]] = idx
            self._table = out
        return self._table


class _Collector:
    """Accumulates decoded frames of several files into global numbering."""

    def __init__(self, wanted: set[str] | None) -> None:
        self.wanted = wanted
        # `args.lr` / `metrics.lr`: that role's values of `lr` (an arg and a metric of one
        # name are two series, see `RunData`)
        self.as_arg = {w[len(ARG_PREFIX):]: w for w in wanted or ()
                       if w.startswith(ARG_PREFIX)}
        self.as_metric = {w[len(METRIC_PREFIX):]: w for w in wanted or ()
                          if w.startswith(METRIC_PREFIX)}
        self.contexts = ContextTable()
        self.parts: dict[tuple[str, bool], list] = {}  # (name, is an arg) -> its parts
        self.roles: dict[tuple[str, bool], str] = {}
        self.events: list[dict[str, Any]] = []
        self.frame_seq = 0  # frames read so far, over all files: their writing order
        self.rewinds: dict[int, dict[str, int]] = {}  # segment -> its rewind points
        self.segment = 0  # of the file being added
        self.segmented = False  # whether the run has several segments (see `segments`)

    def add_file(self, path: Path, replayed: bool, segment: int = 0) -> None:
        """Add one frame file's values; `segment` (1, 2, ...; 0: a replay) places them
        in the run's continuations (see `segments`)."""
        try:
            data = path.read_bytes()
        except OSError:
            return
        decoded = decode_values(data)
        keys, contexts = decoded.keys, decoded.contexts
        if segment and self.segmented:  # a run never resumed pays nothing here
            self._note_rewind(decoded, segment)
        self.segment = segment
        # Local -> global context ids as two sorted arrays, not a table indexed by the
        # local id: a hostile file's id of 2**32-1 must not allocate gigabytes, and an
        # id no definition names maps to context 0 (the run level).
        local_ids = np.array(sorted(contexts), np.int64)
        global_ids = np.array([self.contexts.id_of(contexts[i]) for i in local_ids.tolist()],
                              np.int64)
        for events, blocks in decoded.frames:
            self.frame_seq += 1
            for ev in events:
                self.events.append({**ev, "replayed": replayed} if replayed else ev)
            for block in blocks:
                kcol = block.key
                kids, first = np.unique(kcol, return_index=True)
                if block.kind == "object":  # keys in order of first appearance
                    kids = kids[np.argsort(first)]
                for kid in kids:
                    if int(kid) not in keys:  # its definition was in a torn last frame
                        continue
                    name, role = keys[int(kid)]
                    if self.wanted is not None and name not in self.wanted and name not in (
                            self.as_arg if role == "arg" else self.as_metric):
                        continue
                    sel = kcol == kid
                    self._add(name, role, block.kind, replayed,
                              _map_contexts(block.ctx[sel], local_ids, global_ids),
                              block.step[sel], block.time[sel], block.values[sel])

    def _note_rewind(self, decoded: FileValues, segment: int) -> None:
        """The file's rewind points (see `segments`), over every key (not only the
        wanted ones: what a segment supersedes must not depend on the query)."""
        points = self.rewinds.setdefault(segment, {})
        for kind, low in file_rewinds(decoded).items():
            points[kind] = min(points.get(kind, NO_CUTOFF), low)

    def _add(self, name, role, kind, replayed, ctx, step, time, values) -> None:
        key = (name, role == "arg")  # an arg never merges with a metric: see `RunData`
        self.roles.setdefault(key, role)
        self.parts.setdefault(key, []).append(
            (kind, replayed, ctx, step, time, values, self.frame_seq, self.segment))

    def _superseded(self) -> None:
        """Leave out values a later segment rewound over (they stay in their file)."""
        cuts = cutoffs(self.rewinds)
        if not any(cuts.values()):
            return
        # Per global context: its outermost loop and index (run level: none, the step).
        outer = [key[0] if key else (RUN_LEVEL, -1) for key in self.contexts.coords]
        outer_idx = np.array([idx for _loop, idx in outer], np.int64)
        for name, parts in self.parts.items():  # name: (name, is an arg)
            if self.roles[name] not in STEPPED_ROLES:
                continue
            kept = []
            for part in parts:
                cut = cuts.get(part[7])
                if cut:
                    limit = np.array([cut.get(loop, NO_CUTOFF) for loop, _i in outer],
                                     np.int64)
                    ctx, step = part[2], part[3]
                    position = np.where(outer_idx[ctx] >= 0, outer_idx[ctx], step)
                    sel = position < limit[ctx]
                    if not sel.all():
                        part = (*part[:2], *(col[sel] for col in part[2:6]), *part[6:])
                kept.append(part)
            self.parts[name] = [p for p in kept if len(p[3])] or kept[:1]

    def finish(self) -> RunData:
        self._superseded()
        series = {}
        taken = {name for name, _ in self.parts}  # each name is some series' key
        for (name, is_arg), parts in self.parts.items():
            one = _merge(name, self.roles[name, is_arg], parts)
            key = name
            if is_arg and (name, False) in self.parts:
                # an arg sharing its name with a metric is `args.<name>`; the metric keeps
                # it (and a metric named `args.<name>` too: `args.args.<name>`, never lost)
                key = ARG_PREFIX + name
                while key in taken:
                    key = ARG_PREFIX + key
            series[key] = one
            asked = (self.as_arg if is_arg else self.as_metric).get(name)
            if asked is not None and not any((asked, a) in self.parts for a in (False, True)):
                # asked for by its explicit spelling (and no key is named so): under it
                series[asked] = dataclasses.replace(one, name=asked)
        return RunData(self.contexts.loop_names, self.contexts.table(), series, self.events)


def _merge(name: str, role: str, parts: list) -> Series:
    """One key's parts (one per frame and kind, in file and frame order) as a Series in
    logging order (see `Series`)."""
    kinds = {p[0] for p in parts}
    kind = "object" if "object" in kinds else ("float" if "float" in kinds else "int")
    if len(parts) == 1:
        _, rep, ctx, step, time, values, *_ = parts[0]
        replayed = np.full(len(step), rep)
    else:
        ctx = np.concatenate([p[2] for p in parts])
        step = np.concatenate([p[3] for p in parts])
        time = np.concatenate([p[4] for p in parts])
        replayed = np.concatenate([np.full(len(p[3]), p[1]) for p in parts])
        dtype = object if kind == "object" else (np.float64 if kind == "float" else np.int64)
        values = np.concatenate([p[5].astype(dtype) for p in parts])
    # File and frame order is logging order for one kind from one thread. Kinds are in
    # separate blocks of a frame, and threads, ranks and replays in separate buffers or
    # files, so their values interleave by time: sort only then (one pass to check).
    if len(kinds) > 1 or (len(time) > 1 and (time[1:] < time[:-1]).any()):
        seq = np.concatenate([np.full(len(p[3]), p[6]) for p in parts])
        # Ties in time: frame order, then (kinds of one frame) the lower step; a running
        # maximum keeps one part's own order among its tied values.
        tie = np.concatenate([np.maximum.accumulate(p[3]) for p in parts])
        order = np.lexsort((tie, seq, time))  # stable: last key first
        ctx, step, time, values, replayed = (a[order] for a in
                                             (ctx, step, time, values, replayed))
    return Series(name, role, ctx, step, time, values, replayed, kind)


class RunReader:
    """Read access to one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.id = self.dir.name

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.dir) or {"id": self.id}

    @property
    def summary(self) -> dict[str, Any] | None:
        return read_summary(self.dir)

    def data_files(self) -> list[tuple[Path, bool]]:
        """The run's frame files with a flag telling replayed ones apart."""
        files = [(p, False) for p, _seg in segment_files(self.dir)]
        replays = self.dir / "replays"
        if replays.is_dir():
            files += [(p, True) for p in sorted(replays.glob("*.fwl"))]
        return files

    @property
    def status(self) -> str:
        summary = self.summary
        if summary and summary.get("status"):
            return summary["status"]
        meta = self.meta
        if meta.get("host") == socket.gethostname() and not pid_alive(
                int(meta.get("pid", 0)), meta.get("pid_start")):
            return "killed"
        return liveness(self.dir, "running")  # another host's run, heartbeat stale: lost

    def load(self, names: list[str] | set[str] | None = None) -> RunData:
        """Decode the run's values; `names` restricts which keys are materialised."""
        collector = _Collector(set(names) if names is not None else None)
        segments = {p: seg for p, seg in segment_files(self.dir)}
        collector.segmented = len(set(segments.values())) > 1
        for path, replayed in self.data_files():
            collector.add_file(path, replayed, 0 if replayed else segments.get(path, 1))
        return collector.finish()

    @property
    def segments(self) -> int:
        """How many stretches the run has (resumed runs: more than 1)."""
        return max(1, max((seg for _p, seg in segment_files(self.dir)), default=1))
