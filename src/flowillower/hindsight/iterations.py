"""Which outer iterations a run (or one segment of it) ran, and how long each took.

Read from its checkpoint manifest and its `time/<loop>` values; a loop started at K by
`fw.loop(..., start=K)` (a resumed segment) spans K, K+1, ...
"""

from __future__ import annotations

from typing import Any

from .ckpt_store import CheckpointStore

__all__ = ["iteration_span", "outer_from_events", "recorded_times"]


def outer_from_events(events: list[dict[str, Any]]) -> str | None:
    """The outermost `fw.loop` a run entered (its first depth-1 loop_start)."""
    for ev in events:
        if ev.get("event") == "loop_start" and ev.get("depth") == 1:
            return ev.get("loop")
    return None


def recorded_times(data: Any, outer: str | None, store: CheckpointStore
                   ) -> dict[int, tuple[float, float]]:
    """Outer index -> (wall, inner-loop) seconds of each iteration the run completed:
    the checkpoint manifest's, else the `time/<outer>` values (`data`: `RunData`). A
    killed process may have lost the manifest's last lines but flushed its values."""
    times: dict[int, tuple[float, float]] = {}
    if outer is not None and f"time/{outer}" in data.series:
        series = data.series[f"time/{outer}"]
        col = data.loop_names.index(outer)
        for c, v in zip(data.ctx_coords[series.ctx], series.values):
            if c[col] >= 0 and (c >= 0).sum() == 1:
                times[int(c[col])] = (float(v), 0.0)
    if store.meta is not None:
        times.update({i: (e["t"], e["inner"]) for i, e in store.iters.items()})
    return times


def iteration_span(times: dict[int, tuple[float, float]], stop: int | None = None,
                   ended: int | None = None) -> tuple[int, list[float], list[float]]:
    """(first index, per-index wall times, inner-loop times) of the outer iterations
    that ran one after another from the first recorded one (`times`: index -> (wall,
    inner)), up to `stop`. `ended`: how many the loop ran to its end (the manifest's
    count: a loop started at K by `fw.loop(..., start=K)` ends at K + ended). Indices
    before the first have zero times (a resumed segment starts at its rewind point)."""
    first = min(times, default=0)
    end = first
    while end in times and (stop is None or end < stop):
        end += 1
    if ended is not None:
        end = min(end, first + ended)
    return (first, [times[i][0] if i in times else 0.0 for i in range(end)],
            [times[i][1] if i in times else 0.0 for i in range(end)])
