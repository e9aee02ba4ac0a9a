"""One key's decoded values as growable columns (see series_cache.py)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..store.reader import Series

DTYPES = {"float": np.float64, "int": np.int64, "object": object}


def _size(value: Any, depth: int = 0) -> int:
    """Rough bytes of a decoded JSON value (a histogram's dict and its lists included)."""
    size = sys.getsizeof(value)
    if depth < 2 and isinstance(value, (list, tuple)):
        size += sum(_size(v, depth + 1) for v in value[:64]) * max(1, len(value) / 64)
    elif depth < 2 and isinstance(value, dict):
        size += sum(_size(v, depth + 1) for v in value.values())
    return int(size)


def object_bytes(values: np.ndarray) -> int:
    """Estimated bytes of JSON values, from a sample of up to 16 of them."""
    n = len(values)
    if n == 0:
        return 0
    sample = values[:: max(1, n // 16)][:16]
    return int(sum(_size(v) for v in sample) / len(sample) * n)


class Column:
    """One key's values in logging order, with spare capacity to append into."""

    def __init__(self, name: str, role: str, kind: str) -> None:
        self.name, self.role, self.kind = name, role, kind
        self.n = 0
        self.ctx = np.empty(0, np.int64)
        self.step = np.empty(0, np.int64)
        self.time = np.empty(0, np.float64)
        self.values = np.empty(0, DTYPES[kind])
        self.replayed = np.empty(0, bool)
        self.vmin: float | None = None
        self.vmax: float | None = None
        self.object_bytes = 0  # estimated, for the cache's byte bound

    def nbytes(self) -> int:
        """Bytes held: the arrays' capacity, plus an estimate of JSON values' own size."""
        per = 8 * 3 + 1 + 8
        return per * len(self.step) + (self.object_bytes if self.kind == "object" else 0)

    def _arrays(self) -> list[np.ndarray]:
        return [self.ctx, self.step, self.time, self.values, self.replayed]

    def _set(self, arrays: list[np.ndarray]) -> None:
        self.ctx, self.step, self.time, self.values, self.replayed = arrays

    def add(self, kind: str, cols: list[np.ndarray]) -> int | None:
        """Merge new (ctx, step, time, values, replayed) rows, sorted by time (stable);
        returns the position of the first old value that moved, or None (an append)."""
        if kind != self.kind and self.kind != "object":
            # One kind for the whole key, as the reader does: object > float > int.
            self.kind = "object" if "object" in (kind, self.kind) else "float"
            arrays = self._arrays()
            arrays[3] = arrays[3].astype(DTYPES[self.kind])  # a copy: old views stay
            self._set(arrays)
        cols[3] = cols[3].astype(DTYPES[self.kind], copy=False)
        if self.kind == "object":
            self.object_bytes += object_bytes(cols[3])
        if self.kind != "object" and len(cols[3]):
            vals = cols[3]
            lo, hi = float(vals.min()), float(vals.max())  # no copy when all are finite
            if not (np.isfinite(lo) and np.isfinite(hi)):
                vals = vals[np.isfinite(vals)]
                lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (None, None)
            if lo is not None and hi is not None:
                self.vmin = lo if self.vmin is None else min(self.vmin, lo)
                self.vmax = hi if self.vmax is None else max(self.vmax, hi)
        n, k = self.n, len(cols[1])
        t_new = cols[2]
        if n == 0 or t_new[0] >= self.time[n - 1]:
            self._append(cols)
            return None
        pos = int(np.searchsorted(self.time[:n], t_new[0], side="right"))
        # Copy on write: a reader may hold views of the current arrays.
        merged = [np.concatenate([old[pos:n], new]) for old, new in zip(self._arrays(), cols)]
        order = np.argsort(merged[2], kind="stable")  # old rows first on ties
        cap = n + k + (n + k) // 2
        fresh = []
        for old, part in zip(self._arrays(), merged):
            arr = np.empty(cap, old.dtype)
            arr[:pos] = old[:pos]
            arr[pos:n + k] = part[order]
            fresh.append(arr)
        self._set(fresh)
        self.n = n + k
        return pos

    def _append(self, cols: list[np.ndarray]) -> None:
        n, k = self.n, len(cols[1])
        if n == 0 and all(c.base is None and c.flags.writeable and c.dtype == a.dtype
                          for c, a in zip(cols, self._arrays())):
            self._set(list(cols))  # a first load's fresh arrays: adopted, not copied
            self.n = k
            return
        if n + k > len(self.step):
            # A first load takes just what it needs (most runs are finished); a growing
            # one grows by half: appends cost O(new) on average.
            cap = k if n == 0 else n + k + (n + k) // 2
            grown = []
            for old in self._arrays():
                arr = np.empty(cap, old.dtype)
                arr[:n] = old[:n]
                grown.append(arr)
            self._set(grown)
        for arr, new in zip(self._arrays(), cols):
            arr[n:n + k] = new
        self.n = n + k

    def series(self) -> Series:
        n = self.n
        return Series(self.name, self.role, self.ctx[:n], self.step[:n], self.time[:n],
                      self.values[:n], self.replayed[:n], self.kind)


__all__ = ["Column", "DTYPES", "object_bytes"]
