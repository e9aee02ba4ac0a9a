"""A resumed run, or a fork, replayed stretch by stretch, each with its own code.

A run continued with `fw.init(resume=...)` has segments (`store.segments`), each written
by its own process, and the script may have been edited between a crash and the
restart: segment N's code snapshot is `segments_git[N-1]` in run.json (the last one's is
`git`), its command line `segments_env[N-1]`. A later segment rewinds the run from its
rewind point, so each segment still *owns* only its values below the cutoffs later
segments set. A fork's first segment holds values copied from its parent up to the fork
step: they were computed by the parent's code, so they are replayed with the parent's
own stretches (its code, its checkpoints), keeping what the fork inherited.

`stretches` lists what a run is replayed as (nothing for a run of one segment, which is
replayed as before); `stretch_info` is the planner's `RunInfo` of one stretch, from that
segment's files only; `Stretch.keeps` says which replayed values the run reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..store.continuation import SEGMENT_ENV
from ..store.documents import read_meta
from ..store.reader import RunReader, decode_values
from ..store.segments import NO_CUTOFF, cutoffs, file_rewinds, segment_files, still_read
from .ckpt_files import CKPT_DIRNAME, MANIFEST, segment_subdir
from .ckpt_store import CheckpointStore
from .iterations import iteration_span, outer_from_events, recorded_times
from .planner import RunInfo


@dataclass
class Stretch:
    """One segment of a run (or of a fork's parent), replayed with its own code."""

    run_id: str  # the run whose segment this is (a fork's parent for inherited values)
    run_dir: Path
    segment: int
    meta: dict[str, Any]  # run.json as that segment's process would have written it
    cuts: list[dict[str, int]] = field(default_factory=list)  # owned: below all of these
    max_step: int | None = None  # a fork's inherited values: steps up to the fork step
    checkpoints: bool = False  # this segment recorded checkpoints the replay may enter
    ckpt_subdir: str | None = None  # where: `seg<N>` under checkpoints/, None: the folder
    last: bool = False  # statements after the loops replay here (the run's last segment)
    label: str = ""

    def keeps(self, coords: dict[str, int], step: int) -> bool:
        """Whether the run reads a value this stretch's code logs at `coords`/`step`
        (not superseded by a later segment, within what a fork inherited)."""
        if self.max_step is not None and step > self.max_step:
            return False
        return all(still_read(cut, coords, step) for cut in self.cuts)

    def loop_end(self, outer: str | None) -> int:
        """The first outer iteration this stretch no longer owns."""
        if outer is None:
            return NO_CUTOFF
        return min((cut.get(outer, NO_CUTOFF) for cut in self.cuts), default=NO_CUTOFF)


class _SegmentReader(RunReader):
    """A run's reader limited to one segment's frame files (replays left out)."""

    def __init__(self, run_dir: Path, segment: int) -> None:
        super().__init__(run_dir)
        self.segment = segment

    def data_files(self) -> list[tuple[Path, bool]]:
        return [(p, False) for p, seg in segment_files(self.dir) if seg == self.segment]


def run_rewinds(run_dir: Path) -> dict[int, dict[str, int]]:
    """Every segment of the run -> its rewind points (all its rank files together)."""
    out: dict[int, dict[str, int]] = {}
    for path, seg in segment_files(run_dir):
        points = out.setdefault(seg, {})
        try:
            found = file_rewinds(decode_values(path.read_bytes()))
        except OSError:
            continue
        for kind, low in found.items():
            points[kind] = min(points.get(kind, NO_CUTOFF), low)
    return out


def segment_meta(meta: dict[str, Any], segment: int, count: int
                 ) -> tuple[dict[str, Any], list[str]]:
    """run.json as segment `segment` of `count` wrote it: its code snapshot and command
    line (the top-level fields are the last segment's). Lists are aligned from the end:
    a fork's copied first segment ran no process of its own."""
    if segment >= count:
        return meta, []
    back = count - segment  # 1: the segment before the last
    gits = meta.get("segments_git") if isinstance(meta.get("segments_git"), list) else []
    envs = meta.get("segments_env") if isinstance(meta.get("segments_env"), list) else []
    out = dict(meta)
    git = gits[-back] if back <= len(gits) else None
    out["git"] = git if isinstance(git, dict) else {
        "snapshot": None, "error": f"segment {segment} recorded no code snapshot"}
    env = envs[-back] if back <= len(envs) else None
    notes = []
    if isinstance(env, dict) and env:
        out.update({k: v for k, v in env.items() if k in SEGMENT_ENV})
    else:
        notes.append(f"segment {segment}: its command line was not recorded (run before "
                     "flowillower kept segments_env); replayed with the last segment's")
    return out, notes


def _segment_starts(run_dir: Path, count: int, created: float) -> dict[int, float]:
    """When each segment's process started (segment 1: the run's creation time; later
    ones: their `resume` event)."""
    starts = {1: created}
    for seg in range(2, count + 1):
        for ev in _SegmentReader(run_dir, seg).load([]).events:
            if ev.get("event") == "resume" and isinstance(ev.get("time"), (int, float)):
                starts[seg] = float(ev["time"])
                break
    return starts


def checkpoint_segment(run_dir: Path, count: int, created: float) -> int | None:
    """Which segment recorded the run's checkpoints/ (one recording per run: the first
    checkpointed loop's), from the manifest's start time; None without checkpoints."""
    store = CheckpointStore(run_dir)
    if not store.exists or not (store.dir / MANIFEST).is_file():
        return None
    assert store.meta is not None
    when = store.meta.get("time")
    if not isinstance(when, (int, float)):
        return 1 if count == 1 else None
    owner = None
    for seg, start in sorted(_segment_starts(run_dir, count, created).items()):
        if start <= when + 1e-3:
            owner = seg
    return owner


def own_checkpoints(run_dir: Path, segment: int) -> str | None:
    """The folder under checkpoints/ where a later segment recorded its own captures
    (an earlier segment had recorded the run's first), or None."""
    if segment < 2:
        return None
    subdir = segment_subdir(segment)
    return subdir if (run_dir / CKPT_DIRNAME / subdir / MANIFEST).is_file() else None


ParentFinder = Callable[[dict[str, Any]], "Path | None"]


def stretches(run_dir: Path, meta: dict[str, Any], find_parent: ParentFinder | None = None,
              seen: frozenset[str] = frozenset()) -> tuple[list[Stretch], list[str]]:
    """The stretches a run is replayed as, in order, and notes for the schedule; no
    stretches for a run of one segment that is not a fork (replayed as a whole).
    `find_parent`: a fork's run.json -> its parent's run folder when the parent's code
    may run here, else None (its inherited values are then left out, with a note); a
    parent that is a fork itself is followed the same way (`seen`: no cycles)."""
    count = max((seg for _p, seg in segment_files(run_dir)), default=0)
    fork = meta.get("fork_of") if isinstance(meta.get("fork_of"), dict) else None
    if count <= 1 and fork is None:
        return [], []
    parent_dir = find_parent(meta) if fork is not None and find_parent else None
    if parent_dir is not None and parent_dir.name in seen | {Path(run_dir).name}:
        parent_dir = None  # a hostile run.json naming a fork's own descendant
    cuts = cutoffs(run_rewinds(run_dir))
    created = meta.get("created") if isinstance(meta.get("created"), (int, float)) else 0.0
    owner = checkpoint_segment(run_dir, count, float(created))
    out: list[Stretch] = []
    notes: list[str] = []
    run_id = Path(run_dir).name
    for seg in range(1, count + 1):
        cut = cuts.get(seg, {})
        if seg == 1 and fork is not None:
            inherited, why = _inherited(fork, parent_dir, cut, find_parent,
                                        seen | {Path(run_dir).name})
            out += inherited
            if why:
                notes.append(why)
            continue
        seg_meta, seg_notes = segment_meta(meta, seg, count)
        notes += seg_notes
        subdir = own_checkpoints(Path(run_dir), seg) if owner != seg else None
        out.append(Stretch(run_id, Path(run_dir), seg, seg_meta, [cut] if cut else [],
                           checkpoints=owner == seg or subdir is not None,
                           ckpt_subdir=subdir, last=seg == count,
                           label=f"segment {seg} of {count}"))
    return out, notes


def _inherited(fork: dict[str, Any], parent_dir: Path | None, cut: dict[str, int],
               find_parent: ParentFinder | None, seen: frozenset[str]
               ) -> tuple[list[Stretch], str]:
    """A fork's copied values, replayed with its parent's stretches (or a note why not)."""
    parent, step = fork.get("run"), fork.get("step")
    if not isinstance(step, int):
        return [], "the fork's parent step was not recorded: its inherited values are not replayed"
    if parent_dir is None:
        return [], (f"the inherited values (steps up to {step}) were computed by run {parent} "
                    "(the fork's parent), which is not in this store or not trusted here: "
                    "they are left without the new values")
    meta = read_meta(parent_dir) or {}
    parts, notes = stretches(parent_dir, meta, find_parent, seen)
    if not parts:  # a parent of one segment
        store = CheckpointStore(parent_dir)
        parts = [Stretch(parent_dir.name, parent_dir, 1, meta, checkpoints=store.exists)]
    out = []
    for part in parts:
        where = f", its segment {part.segment}" if len(parts) > 1 else ""
        out.append(replace(
            part, cuts=[*part.cuts, *([cut] if cut else [])], last=False,
            max_step=step if part.max_step is None else min(step, part.max_step),
            label=part.label if part.label.startswith("inherited") else
            f"inherited from run {parent} (its code{where}, steps up to {step})"))
    return out, "; ".join(notes)


def stretch_info(stretch: Stretch, whole: RunInfo | None = None) -> RunInfo:
    """The planner's view of one stretch: its own events, timings, args and (when it
    recorded them) checkpoints; iterations it does not own are left out."""
    reader = _SegmentReader(stretch.run_dir, stretch.segment)
    data = reader.load()
    store = CheckpointStore(stretch.run_dir, stretch.ckpt_subdir)
    unrecorded, changed = store.keep_recorded()
    if not stretch.checkpoints:
        store.meta, store.ended = None, None
        store.entries.clear()
        store.iters.clear()
        unrecorded, changed = [], []
    outer = store.meta["outer"] if store.meta else outer_from_events(data.events)
    first, iter_times, inner_times = iteration_span(
        recorded_times(data, outer, store), stretch.loop_end(outer),
        store.ended if store.meta else None)
    end = len(iter_times)
    args = {s.name: s.last() for s in data.series.values() if s.role == "arg"}
    if whole is not None:
        args = {**whole.args, **args}
    setup = store.meta.get("setup_s") if store.meta else None
    if setup is None:
        setup = (whole.setup_s if whole is not None else
                 (1.5 if "torch" in (stretch.meta.get("packages") or {}) else 0.3))
    summary = reader.summary if stretch.last else None
    loop_ended = stretch.last and (store.ended is not None if store.meta else any(
        ev.get("event") == "loop_end" and ev.get("loop") == outer and ev.get("depth") == 1
        for ev in data.events) and bool(summary and summary.get("status") == "success"))
    present = {name for name, s in data.series.items() if s.role == "metric"}
    return RunInfo(stretch.run_id, stretch.run_dir, stretch.meta, summary,
                   reader.status if stretch.last else "ended", args, outer, end,
                   loop_ended, iter_times, inner_times, float(setup),
                   whole.teardown_s if whole is not None and stretch.last else 0.0,
                   store, present, unrecorded, changed, first=first, last=stretch.last,
                   no_checkpoints="" if stretch.checkpoints else (
                       "no checkpoints of its own (recorded before flowillower kept a "
                       "resumed segment's own, or its loop was not checkpointed): its script "
                       "is re-executed from the start with its recorded command line"))
