"""Series for charts, shipped downsampled.

Decoded series come from `series_cache.SeriesCache` (incremental per run); live polls
go through `live.live_series`. `chart_series` turns them into what one chart needs:
the chosen x axis, the zoom window, and at most `points` values per run. When the runs' x values differ (wall time, or steps thinned differently), all runs are snapped to
one shared grid of `points` slots, each narrower than a pixel, so the browser draws 100
runs from one x array instead of joining 100 different ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store.reader import Series
from .downsample import clip_range, json_floats, minmax_indices, round_sig
from .routing import ApiError


@dataclass
class Loaded:
    """One decoded series with the loop coordinates its contexts refer to."""

    series: Series | None  # None: the run has no such key
    loop_names: list[str]
    ctx_coords: np.ndarray
    vmin: float | None = None  # finite min / max of the values, when known (live polls)
    vmax: float | None = None
    version: tuple | None = None  # changes whenever the series does (answer caches)


# -- x axes ------------------------------------------------------------------------------
def loop_position(coords: np.ndarray) -> np.ndarray:
    """Fractional loop position: epoch 3's k-th of n points sits at 3 + k/n."""
    x = coords.astype(np.float64)
    n = len(x)
    if n == 0:
        return x
    change = np.flatnonzero(np.r_[True, coords[1:] != coords[:-1]])
    lengths = np.diff(np.r_[change, n])
    starts = np.repeat(change, lengths)
    rank = np.arange(n) - starts
    x = x + rank / np.repeat(lengths, lengths)
    x[coords < 0] = np.nan
    return x


def x_values(loaded: Loaded, axis: str, created: float | None,
             other: Series | None = None) -> np.ndarray:
    """The x coordinate of every value of `loaded` for an axis choice."""
    s = loaded.series
    assert s is not None
    if axis == "step":
        return s.step.astype(np.float64)
    if axis == "time":
        return s.time
    if axis == "rel":
        t0 = created if created else (float(s.time[0]) if len(s.time) else 0.0)
        return s.time - t0
    if axis.startswith("metric:"):
        if other is None or other.kind == "object" or not len(other.step):
            return np.full(len(s.step), np.nan)
        # The other metric's last value at the same step (a join on step).
        rev_steps = other.step[::-1]
        uniq, first_rev = np.unique(rev_steps, return_index=True)
        last_vals = other.values[::-1][first_rev].astype(np.float64)
        pos = np.searchsorted(uniq, s.step)
        pos = np.clip(pos, 0, len(uniq) - 1)
        return np.where(uniq[pos] == s.step, last_vals[pos], np.nan)
    if axis in loaded.loop_names:  # a loop name: epoch, step within epoch, ...
        col = loaded.loop_names.index(axis)
        coords = loaded.ctx_coords[s.ctx, col] if len(loaded.ctx_coords) else s.ctx * 0 - 1
        return loop_position(np.asarray(coords))
    raise ApiError(400, f"unknown x axis {axis!r}; use step, time, rel, a loop name of the "
                   "run (e.g. epoch) or metric:<name>", "x")


def _snap(x: np.ndarray, y: np.ndarray, lo: float, width: float, nb: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot, y, source index) of each bucket's min and max point, on a shared grid."""
    finite = np.flatnonzero(np.isfinite(y) & np.isfinite(x))
    if len(finite) == 0:
        return (np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))
    b = np.clip(((x[finite] - lo) / width).astype(np.int64), 0, nb - 1)
    yf = y[finite]
    if len(b) < 2 or bool((b[1:] >= b[:-1]).all()):
        # x ascending (steps, time): buckets are contiguous runs, no sort needed.
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(b)]))
        lo_v = np.minimum.reduceat(yf, starts)
        hi_v = np.maximum.reduceat(yf, starts)
        pos = np.arange(len(b))
        # First position per segment holding its min / max (a later one never wins).
        at_min = np.where(yf == lo_v[seg], pos, len(b))
        at_max = np.where(yf == hi_v[seg], pos, len(b))
        i_min = finite[np.minimum.reduceat(at_min, starts)]
        i_max = finite[np.minimum.reduceat(at_max, starts)]
        buckets = b[starts]
    else:
        order = np.lexsort((yf, b))  # by bucket, then value
        bo = b[order]
        starts = np.flatnonzero(np.r_[True, bo[1:] != bo[:-1]])
        ends = np.r_[starts[1:], len(bo)] - 1
        i_min = finite[order[starts]]
        i_max = finite[order[ends]]
        buckets = bo[starts]
    min_first = x[i_min] <= x[i_max]
    first = np.where(min_first, i_min, i_max)
    second = np.where(min_first, i_max, i_min)
    slots = np.concatenate([buckets * 2, buckets * 2 + 1])
    src = np.concatenate([first, second])
    same = i_min == i_max  # one point in the bucket: one slot
    keep = np.concatenate([np.ones(len(first), bool), ~same])
    return slots[keep], y[src[keep]], src[keep]


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`a[idx]` for sorted unique `idx`, without a copy when `idx` is every position."""
    return a if len(idx) == len(a) else a[idx]


def stats(y: np.ndarray) -> dict[str, Any]:
    """last, min and max of a chart's values (JSON-safe)."""
    finite = y[np.isfinite(y)]
    last = float(y[-1]) if len(y) else None
    return {"last": last if last is None or math.isfinite(last) else str(last),
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None}


def replay_command(key: str, run_id: str) -> str:
    """The hindsight command that would fill a metric a run never logged."""
    quoted = key if all(c.isalnum() or c in "_-./" for c in key) else "'" + \
        key.replace("'", "'\\''") + "'"
    return f"flowillower replay {quoted} --runs {run_id}"


def chart_series(items: list[tuple[str, Loaded, Loaded | None, float | None]], key: str,
                 axis: str, points: int, x0: float | None, x1: float | None,
                 afters: list[int] | None) -> dict[str, Any]:
    """One chart's data: `items` = (run id, loaded key, loaded x-metric, created) per run."""
    per_run: list[dict[str, Any]] = []
    arrays: list[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = []
    for i, (run_id, loaded, other, created) in enumerate(items):
        s = loaded.series
        if s is None:
            per_run.append({"run": run_id, "missing": True, "count": 0, "cursor": 0,
                            "replay": replay_command(key, run_id)})
            continue
        if s.kind == "object":
            per_run.append({"run": run_id, "count": len(s.values), "cursor": len(s.values),
                            "kind": "object", "x": [], "y": []})
            continue
        y_all = np.asarray(s.values, dtype=np.float64)  # no copy of float columns
        x_all = x_values(loaded, axis, created, other.series if other else None)
        known = loaded.vmin is not None and len(y_all)  # the cache's running min / max
        entry: dict[str, Any] = {"run": run_id, "count": len(y_all), "cursor": len(y_all),
                                 **(stats(y_all[-1:]) | {"min": loaded.vmin,
                                                         "max": loaded.vmax}
                                    if known else stats(y_all))}
        start = 0
        if afters is not None:
            start = afters[i] if i < len(afters) else 0
            if start > len(y_all):  # the series was rewritten: send it all again
                entry["reset"] = True
                start = 0
            entry["after"] = start
            idx = np.arange(start, len(y_all))
        elif x0 is None and x1 is None:  # the whole series: no index copies
            finite = np.isfinite(x_all)
            idx = np.arange(len(x_all)) if finite.all() else np.flatnonzero(finite)
        else:
            idx = clip_range(x_all, x0, x1)
        if afters is not None or x0 is not None or x1 is not None:
            idx = idx[np.isfinite(x_all[idx])]
        per_run.append(entry)
        arrays.append((entry, idx, x_all, y_all))
        entry["_replayed"] = s.replayed

    total = sum(len(idx) for _, idx, _, _ in arrays)
    spans = [(float(_take(x, idx).min()), float(_take(x, idx).max()))
             for _, idx, x, _ in arrays if len(idx)]
    distinct = None
    if afters is None and arrays and axis == "step":
        lo = min((a for a, _ in spans), default=0.0)
        hi = max((b for _, b in spans), default=0.0)
        distinct = hi - lo + 1
    snap = (afters is None and len(arrays) > 1 and total > 2 * points
            and not (distinct is not None and distinct <= points))
    result: dict[str, Any] = {"key": key, "x_axis": axis, "points": points, "x": None,
                              "sampled": False, "runs": per_run}
    if snap:
        lo = min((a for a, _ in spans), default=0.0)
        hi = max((b for _, b in spans), default=1.0)
        nb = max(1, points // 2)
        width = (hi - lo) / nb if hi > lo else 1.0
        used = np.zeros(2 * nb, bool)
        snapped = []
        for entry, idx, x, y in arrays:
            slots, vals, src = _snap(_take(x, idx), _take(y, idx), lo, width, nb)
            used[slots] = True
            snapped.append((entry, slots, vals, idx[src] if len(src) else src))
        slot_ids = np.flatnonzero(used)
        position = np.full(2 * nb, -1, np.int64)
        position[slot_ids] = np.arange(len(slot_ids))
        grid = lo + (slot_ids // 2 + np.where(slot_ids % 2 == 0, 0.25, 0.75)) * width
        if axis == "step" and width >= 2:
            grid = np.round(grid)  # integer steps read better in the legend
        result["x"] = json_floats(grid, None if axis == "time" else 10)
        result["sampled"] = True
        for entry, slots, vals, src in snapped:
            col = np.full(len(slot_ids), np.nan)
            col[position[slots]] = vals
            entry["y"] = json_floats(col)
            rep = entry.pop("_replayed")
            if len(src) and rep.any():
                entry["replayed"] = position[slots[rep[src]]].tolist()
        return result
    for entry, idx, x, y in arrays:
        keep = idx
        if len(idx) > points:
            keep = idx[minmax_indices(_take(y, idx), points)]
            result["sampled"] = True
        xs = x[keep]
        entry["x"] = (xs.astype(np.int64).tolist() if axis == "step"
                      else json_floats(xs, None if axis == "time" else 12))
        entry["y"] = json_floats(y[keep])
        rep = entry.pop("_replayed")
        if len(keep) and rep.any():
            entry["replayed"] = np.flatnonzero(rep[keep]).tolist()
    for entry in per_run:
        entry.pop("_replayed", None)
    return result


def hist_series(loaded: Loaded, points: int) -> dict[str, Any]:
    """Histogram values over steps, at most `points` columns (evenly spaced)."""
    s = loaded.series
    if s is None:
        return {"steps": [], "min": [], "max": [], "counts": [], "count": 0}
    n = len(s.values)
    idx = np.unique(np.linspace(0, n - 1, min(n, points)).astype(np.int64)) if n else []
    steps, mins, maxs, counts = [], [], [], []
    for i in idx:
        v = s.values[i]
        if not isinstance(v, dict) or not isinstance(v.get("counts"), list):
            continue
        lo, hi = v.get("min"), v.get("max")
        if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)):
            continue
        steps.append(int(s.step[i]))
        mins.append(float(lo))
        maxs.append(float(hi))
        counts.append([c if isinstance(c, (int, float)) else 0 for c in v["counts"]])
    return {"steps": steps, "min": json_floats(np.array(mins)),
            "max": json_floats(np.array(maxs)), "counts": counts, "count": n}


__all__ = ["Loaded", "chart_series", "hist_series", "replay_command", "x_values",
           "loop_position", "round_sig", "stats"]
