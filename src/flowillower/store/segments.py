"""Segments of a run: one frame file per continuation (`fw.init(resume=...)`).

A run's first stretch writes `data.fwl`; each resumed stretch writes a new file
`data.seg<N>.fwl` (N = 2, 3, ...), so a run stays append-only and no file is ever
merged or rewritten. Rank files follow the same rule (`data.rank1.seg2.fwl`).

Rewinding: a resumed script usually restarts from a checkpoint, so its first step may be
lower than the last step already recorded. The *rewind point* of a segment is the lowest
step (>= 0) of its metric values; every value of an earlier segment at that step or later
is superseded: readers leave it out, the file keeps it. Args are run-level (step 0) and
never superseded: the last value logged wins as always. Values without a step (-1) and
system values (charted against wall time) are never superseded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

DATA_FILE = re.compile(r"data(?:\.rank(\d+))?(?:\.seg(\d+))?\.fwl\Z")
# Roles whose values a later segment supersedes (keyed by the training step).
STEPPED_ROLES = frozenset({"metric", "watch"})
NO_CUTOFF = 2**63 - 1


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


def cutoffs(rewinds: dict[int, int | None]) -> dict[int, int]:
    """Per segment, the first step superseded by a later segment (`NO_CUTOFF`: none).
    `rewinds`: every segment -> its rewind point (None: it has no stepped values)."""
    out: dict[int, int] = {}
    lowest = NO_CUTOFF
    for seg in sorted(rewinds, reverse=True):
        out[seg] = lowest
        point = rewinds[seg]
        if point is not None:
            lowest = min(lowest, point)
    return out


def rewind_point(steps: Iterable[int]) -> int | None:
    """The lowest real step (>= 0) of a segment's stepped values, None without any."""
    real = [s for s in steps if s >= 0]
    return min(real) if real else None
