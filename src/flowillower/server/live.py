"""Live polls of a chart: only the values after each run's cursor, in O(new values).

A cursor is the count of a series' values the client already has. The reply carries,
per run, the values past it (downsampled to `points` when a client fell far behind), the
new count as the next cursor, and last/min/max kept up to date by the series cache, so
a poll of a long run costs what was appended since the last one, not the run's length.
`reset` asks the client to replace its copy: the cursor is past the end (the run was
rewritten) or values were put before it since it was handed out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..store.reader import Series
from .downsample import json_floats, minmax_indices
from .series import Loaded, replay_command, x_values

# How far back a loop axis looks for the start of the loop iteration a poll continues
# (a point's position inside an epoch depends on the iteration's length so far).
_LOOP_LOOKBACK = 1 << 16


def _tail(loaded: Loaded, lo: int) -> Loaded:
    """`loaded` restricted to values [lo:] (views, no copy)."""
    s = loaded.series
    assert s is not None
    part = Series(s.name, s.role, s.ctx[lo:], s.step[lo:], s.time[lo:], s.values[lo:],
                  s.replayed[lo:], s.kind)
    return Loaded(part, loaded.loop_names, loaded.ctx_coords)


def _x_tail(loaded: Loaded, start: int, axis: str, created: float | None,
            other: Loaded | None) -> np.ndarray:
    """x of values [start:] for `axis`, reading only the tail where the axis allows."""
    s = loaded.series
    assert s is not None
    if axis == "rel" and not created:
        created = float(s.time[0]) if len(s.time) else 0.0
    lo = start
    if axis in loaded.loop_names:
        lo = max(0, start - _LOOP_LOOKBACK)
    other_series = other.series if other is not None else None
    return x_values(_tail(loaded, lo), axis, created, other_series)[start - lo:]


def _stat(value: float | None) -> Any:
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


def live_series(items: list[tuple[str, Loaded, Loaded | None, float | None]], key: str,
                axis: str, points: int, afters: list[int], resets: list[bool]
                ) -> dict[str, Any]:
    """One chart's live update: `items` as for `chart_series`, `afters` the clients'
    cursors and `resets` whether each cursor is known to be stale (see module doc)."""
    runs: list[dict[str, Any]] = []
    sampled = False
    for i, (run_id, loaded, other, created) in enumerate(items):
        s = loaded.series
        if s is None:
            runs.append({"run": run_id, "missing": True, "count": 0, "cursor": 0,
                         "replay": replay_command(key, run_id)})
            continue
        n = len(s.values)
        if s.kind == "object":
            runs.append({"run": run_id, "count": n, "cursor": n, "kind": "object",
                         "x": [], "y": []})
            continue
        last = float(s.values[-1]) if n else None
        entry: dict[str, Any] = {"run": run_id, "count": n, "cursor": n, "last": _stat(last),
                                 "min": loaded.vmin, "max": loaded.vmax}
        start = afters[i] if i < len(afters) else 0
        if start > n or (i < len(resets) and resets[i]):
            entry["reset"] = True
            start = 0
        entry["after"] = start
        x = _x_tail(loaded, start, axis, created, other)
        y = s.values[start:].astype(np.float64)
        rep = s.replayed[start:]
        keep = np.flatnonzero(np.isfinite(x))
        if len(keep) > points:
            keep = keep[minmax_indices(y[keep], points)]
            sampled = True
        xs = x[keep]
        entry["x"] = (xs.astype(np.int64).tolist() if axis == "step"
                      else json_floats(xs, None if axis == "time" else 12))
        entry["y"] = json_floats(y[keep])
        if len(keep) and rep[keep].any():
            entry["replayed"] = np.flatnonzero(rep[keep]).tolist()
        runs.append(entry)
    return {"key": key, "x_axis": axis, "points": points, "x": None, "sampled": sampled,
            "runs": runs}


__all__ = ["live_series"]
