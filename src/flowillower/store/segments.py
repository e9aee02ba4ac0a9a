"""Segments of a run: one frame file per continuation (`fw.init(resume=...)`).

A run's first stretch writes `data.fwl`; each resumed stretch writes a new file
`data.seg<N>.fwl` (N = 2, 3, ...), so a run stays append-only and no file is ever
merged or rewritten. Rank files follow the same rule (`data.rank1.seg2.fwl`).

Rewinding: a resumed script usually restarts from a checkpoint, so its first position
may be before the last one already recorded. A segment's *rewind points* are, for its
metric values logged outside any loop, their lowest step (>= 0), and for those logged
inside loops, per outermost loop, the lowest index of that loop. Every value of an earlier
segment at or past a later segment's rewind point (the same kind of position: a step, or
an index of the same outermost loop) is superseded: readers leave it out, the file keeps
it. Args are never superseded (the last value logged wins as always); values without a
step (-1) and system values (charted against wall time) are never superseded either.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DATA_FILE = re.compile(r"data(?:\.rank(\d+))?(?:\.seg(\d+))?\.fwl\Z")
# Roles whose values a later segment supersedes (keyed by the training step).
STEPPED_ROLES = frozenset({"metric", "watch"})
NO_CUTOFF = 2**63 - 1
RUN_LEVEL = ""  # the rewind point of values outside loops (steps); else a loop's name


def segment_number(name: str) -> int:
    """The segment a frame file belongs to (1: `data.fwl` / `data.rank<R>.fwl`); 0 for
    a name that is not a run's frame file."""
    match = DATA_FILE.match(name)
    if match is None:
        return 0
    return int(match.group(2)) if match.group(2) else 1


def data_file_name(rank: int, segment: int) -> str:
    """The frame file of `rank` in `segment` (1: the run's first stretch)."""
    name = "data" if rank == 0 else f"data.rank{rank}"
    return f"{name}.fwl" if segment <= 1 else f"{name}.seg{segment}.fwl"


def segment_files(run_dir: Path) -> list[tuple[Path, int]]:
    """The run's frame files with their segment, in segment order (ranks by name)."""
    found = []
    for path in Path(run_dir).glob("data*.fwl"):
        seg = segment_number(path.name)
        if seg:
            found.append((path, seg))
    found.sort(key=lambda item: (item[1], item[0].name))
    return found


def segment_count(run_dir: Path) -> int:
    """How many stretches the run has (1 for a run never resumed, 0 without data)."""
    return max((seg for _path, seg in segment_files(run_dir)), default=0)


def next_segment(run_dir: Path) -> int:
    """The segment number a continuation of the run writes next."""
    return segment_count(run_dir) + 1


def cutoffs(rewinds: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    """Per segment, the first position later segments supersede, per kind of position
    (`RUN_LEVEL`: steps; else an outermost loop's index). `rewinds`: every segment ->
    its own rewind points (empty: it has no stepped values)."""
    out: dict[int, dict[str, int]] = {}
    lowest: dict[str, int] = {}
    for seg in sorted(rewinds, reverse=True):
        out[seg] = dict(lowest)
        for kind, point in rewinds[seg].items():
            lowest[kind] = min(lowest.get(kind, NO_CUTOFF), point)
    return out


def file_rewinds(decoded: Any) -> dict[str, int]:
    """The rewind points of one decoded frame file (`reader.FileValues`), by the rule in
    this module's docstring: over every stepped key, for values inside loops the lowest
    index of their outermost loop, for the others their lowest step >= 0."""
    import numpy as np

    points: dict[str, int] = {}
    ids = [kid for kid, (_n, role) in decoded.keys.items() if role in STEPPED_ROLES]
    if not ids:
        return points
    wanted = np.array(ids, np.int64)
    for _events, blocks in decoded.frames:
        for block in blocks:
            sel = np.isin(block.key, wanted)
            if not sel.any():
                continue
            ctx, step = block.ctx[sel], block.step[sel]
            for c in np.unique(ctx).tolist():
                coords = decoded.contexts.get(c) or {}
                if coords:
                    kind, low = next(iter(coords.items()))
                else:
                    real = step[(ctx == c) & (step >= 0)]
                    if not len(real):
                        continue
                    kind, low = RUN_LEVEL, int(real.min())
                points[kind] = min(points.get(kind, NO_CUTOFF), int(low))
    return points


def still_read(cut: dict[str, int], coords: dict[str, int], step: int) -> bool:
    """Whether a stepped value of a segment whose cutoffs are `cut` (see `cutoffs`) is
    read, not superseded: its outermost loop's index, else its step, below the cutoff
    (values without a step are always read)."""
    if coords:
        loop, index = next(iter(coords.items()))
        return index < cut.get(loop, NO_CUTOFF)
    return step < cut.get(RUN_LEVEL, NO_CUTOFF)
