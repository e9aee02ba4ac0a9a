"""Splitting a callback-captured run's epochs among several replay workers.

A run recorded through a framework callback (Lightning's `FlowillowerCheckpoint`) has no
`fw.loop`: its worker re-executes the whole script. When a replayed statement makes
every epoch train again (one in `training_step`), the epochs can still be shared: a
worker given the range [a, b) restores the capture of epoch a-1 where its first epoch's
batches would start, trains epochs a..b-1 and stops; the driver keeps each worker's
values of its own epochs only. A range may only start right after a captured epoch.

This module holds the cost model of such ranges (the planner's `schedule` decides how
many pay: each worker pays the process set-up again); it imports nothing of the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .callback_captures import Skips, ranges

__all__ = ["EpochSplit"]


@dataclass
class EpochSplit:
    """How a callback-captured run's epochs may be shared among workers."""

    loop: str  # the recorder's loop coordinate ("epoch")
    times: list[float]  # recorded wall seconds of each epoch, 0..total-1
    entries: set[int]  # epochs a worker may start at (the one before it was captured)
    fixed: float  # what every worker pays besides its epochs (set-up, the rest, exit)
    restore: float  # loading one capture

    @property
    def total(self) -> int:
        return len(self.times)

    def cost(self, first: int, stop: int) -> float:
        """Estimated seconds of a worker training epochs [first, stop)."""
        return (self.fixed + sum(self.times[first:stop])
                + (self.restore if first > 0 else 0.0))

    def note(self) -> str:
        """The schedule's note: where a worker's share of the epochs may start."""
        return (f"with several workers, the {self.loop}s may be shared among them: a worker "
                f"restores the capture of the {self.loop} before its first (it may start at "
                f"{self.loop}s {ranges(sorted(self.entries))}) and trains its {self.loop}s "
                f"only; each one's values are kept from the worker that trained it")

    def cut(self, first: int, stop: int) -> int | None:
        """The entry epoch inside (first, stop) that halves [first, stop)'s recorded
        time most evenly; None when no epoch there may start a worker."""
        half = sum(self.times[first:stop]) / 2
        best, gap = None, float("inf")
        for e in range(first + 1, stop):
            if e in self.entries:
                off = abs(sum(self.times[first:e]) - half)
                if off < gap:
                    best, gap = e, off
        return best

    @classmethod
    def of(cls, skips: Skips, whole_s: float, restore_s: float) -> EpochSplit | None:
        """The ranges open to a run whose recorder's captures are `skips` (before any
        statement blocked them) and whose single worker takes `whole_s`; None when no
        epoch after the first may start a worker."""
        times = [skips.times.get(i, 0.0) for i in range(skips.total)]
        entries = {i + 1 for i in skips.indices if 0 <= i < len(times) - 1}
        if not entries:
            return None
        return cls(skips.loop, times, entries, max(0.0, whole_s - sum(times)), restore_s)

    def split_task(self, task: Any) -> tuple[Any, Any] | None:
        """`task` (a planner TaskPlan: the whole run, or a range of it) cut in two at
        `cut`: the first part keeps no value outside its epochs, the second keeps what
        `task` kept after them (the end of the run, when `task` reached it)."""
        first, stop = (task.first, task.stop) if task.stop > task.first else (0, self.total)
        at = self.cut(first, stop)
        if at is None:
            return None
        head = replace(task, first=first, stop=at, emit_from=first, skip=[],
                       restore_first=first > 0, post_loop=False, restore_final=False,
                       emit_run_level=False, estimate=self.cost(first, at), loop=self.loop)
        tail = replace(task, first=at, stop=stop, emit_from=at, skip=[], restore_first=True,
                       restore_final=False, estimate=self.cost(at, stop), loop=self.loop)
        return head, tail
