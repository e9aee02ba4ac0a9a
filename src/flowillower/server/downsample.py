"""Server-side downsampling of long series and compact JSON numbers.

Charts are a few hundred pixels wide, so shipping 10,000 points per run is waste (and
what makes peers' UIs crawl). `minmax` keeps, for each of `points // 2` buckets of
consecutive values, the point holding the bucket's minimum and the one holding its
maximum, in their original order: spikes survive, which a plain stride would drop.

When the optional `tsdownsample` package is installed (`pip install tsdownsample`), its
Rust MinMax picks the same kind of points ~50x faster on long all-finite series (figures
in docs/ui.md, printed by benchmarks/bench_server_stack.py); numpy does it otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["minmax_indices", "clip_range", "round_sig", "json_floats", "fast_minmax"]

_FAST_FROM = 50_000  # below this, numpy is as quick as the call into the library
_tsdownsample: Any = None


def fast_minmax() -> Any:
    """tsdownsample's MinMaxDownsampler class when installed, else None (cached)."""
    global _tsdownsample
    if _tsdownsample is None:
        try:
            from tsdownsample import MinMaxDownsampler
        except ImportError:
            MinMaxDownsampler = False  # noqa: N806 - remembered as "not installed"
        _tsdownsample = MinMaxDownsampler
    return _tsdownsample or None


def minmax_indices(y: np.ndarray, points: int) -> np.ndarray:
    """Indices of the points to keep so that at most `points` remain (sorted)."""
    n = len(y)
    if n <= points:
        return np.arange(n)
    if points < 4:
        return np.unique(np.linspace(0, n - 1, max(points, 1)).astype(np.int64))
    fast = fast_minmax() if n >= _FAST_FROM else None
    if fast is not None and y.dtype.kind in "fiu":
        vals = np.ascontiguousarray(y)
        if vals.dtype.kind != "f" or bool(np.isfinite(vals).all()):  # NaN: numpy's way
            idx = fast().downsample(vals, n_out=max(2, (points - 2) // 2 * 2))
            return np.unique(np.concatenate([idx.astype(np.int64), [0, n - 1]]))
    buckets = points // 2
    size = math.ceil(n / buckets)
    buckets = math.ceil(n / size)
    pad = buckets * size - n
    vals = np.asarray(y, dtype=np.float64)
    lo = np.where(np.isfinite(vals), vals, np.inf)
    hi = np.where(np.isfinite(vals), vals, -np.inf)
    if pad:
        lo = np.concatenate([lo, np.full(pad, np.inf)])
        hi = np.concatenate([hi, np.full(pad, -np.inf)])
    base = np.arange(buckets) * size
    imin = base + lo.reshape(buckets, size).argmin(axis=1)
    imax = base + hi.reshape(buckets, size).argmax(axis=1)
    keep = np.unique(np.concatenate([imin, imax, [0, n - 1]]))
    return keep[keep < n]


def clip_range(x: np.ndarray, x0: float | None, x1: float | None) -> np.ndarray:
    """Indices of points with x in [x0, x1], plus one neighbour on each side.

    The neighbours let a zoomed chart draw its lines to the plot's edges.
    """
    n = len(x)
    mask = np.ones(n, bool)
    if x0 is not None:
        mask &= x >= x0
    if x1 is not None:
        mask &= x <= x1
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return idx
    first, last = int(idx[0]), int(idx[-1])
    extra = [i for i in (first - 1, last + 1) if 0 <= i < n]
    return np.unique(np.concatenate([idx, np.array(extra, np.int64)])) if extra else idx


def round_sig(values: np.ndarray, digits: int = 7) -> np.ndarray:
    """Round to `digits` significant digits so JSON floats print short."""
    vals = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.floor(np.log10(np.abs(vals)))
        mag = np.where(np.isfinite(mag), mag, 0)
        scale = np.power(10.0, digits - 1 - mag)
        out = np.round(vals * scale) / scale
    # Huge or tiny exponents overflow the scale: keep those values untouched.
    return np.where(np.isfinite(out), out, vals)


def json_floats(values: np.ndarray, digits: int | None = 7) -> list[Any]:
    """A JSON-safe list: NaN and infinities become null (JSON has no NaN)."""
    vals = np.asarray(values, dtype=np.float64)
    if digits is not None:
        vals = round_sig(vals, digits)
    finite = np.isfinite(vals)
    if finite.all():
        return vals.tolist()
    out: list[Any] = vals.tolist()
    for i in np.flatnonzero(~finite):
        out[i] = None
    return out
