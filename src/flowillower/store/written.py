"""What a run's writer has written, per key: the run's index row without reading it back.

The writer feeds `WrittenStats.add` every batch right after its frame is on disk (off
the logging thread). Per key it keeps the count, the smallest and largest finite number,
the kinds seen and the last value by logging order, exactly as the reader orders values
(`store.reader.Series`): by time, then by frame, then (kinds of one frame) by the running
largest step, then by position. `row_parts` turns that into the loops, args and metrics
`index_rows.scan_run` would decode from the file, without numpy and without the file.
"""

from __future__ import annotations

import operator
import sys
from array import array
from bisect import bisect_left
from itertools import accumulate, chain, compress, islice, repeat
from typing import Any

FLOAT, INT, OBJECT = 0, 1, 2  # a frame's value blocks, in the order the reader reads them
_LE = operator.le


def _finite_range(vals: list[float]) -> tuple[Any, Any]:
    """(min, max) of the finite numbers of `vals` (None, None when there are none)."""
    # min/max skip a NaN (it compares false) unless it comes first, which they return;
    # so two finite results are the finite range: no infinity, NaNs (if any) skipped.
    lo, hi = min(vals), max(vals)
    if lo - lo == 0 and hi - hi == 0:
        return lo, hi
    finite = [v for v in vals if v - v == 0]
    return (min(finite), max(finite)) if finite else (None, None)


class _KeyMasks:
    """A float block's key column as bytes, for one C-speed byte mask per key: ids below
    2**16 (two bytes of each 4-byte id), at most `MAX_KEYS` distinct keys."""

    MAX_KEYS = 32  # past this, one pass per key costs more than going value by value
    _tables: dict[int, bytes] = {}

    def __init__(self, low: bytes, high: bytes | None, keys: set[int]) -> None:
        self.low, self.high, self.keys = low, high, keys

    @classmethod
    def of(cls, keys: array) -> _KeyMasks | None:
        if keys.itemsize != 4:
            return None
        raw = keys.tobytes()
        lo, hi, z1, z2 = (0, 1, 2, 3) if sys.byteorder == "little" else (3, 2, 1, 0)
        top = raw[z1::4] + raw[z2::4]
        if top.count(0) != len(top):
            return None
        low, high = raw[lo::4], raw[hi::4]
        if high.count(0) == len(high):
            distinct, high = set(low), None
        else:
            distinct = set(keys)
        return cls(low, high, distinct) if len(distinct) <= cls.MAX_KEYS else None

    @classmethod
    def _table(cls, byte: int) -> bytes:
        table = cls._tables.get(byte)
        if table is None:
            table = cls._tables[byte] = bytes(int(i == byte) for i in range(256))
        return table

    def mask(self, kid: int) -> bytes:
        """1 at each row of key `kid`, 0 elsewhere."""
        mask = self.low.translate(self._table(kid & 255))
        if self.high is not None:  # both bytes must match: AND the two masks
            other = self.high.translate(self._table(kid >> 8))
            both = int.from_bytes(mask, "little") & int.from_bytes(other, "little")
            mask = both.to_bytes(len(mask), "little")
        return mask


class _Key:
    """One key id's statistics; `order` = (time, frame, tie, kind, position) of `value`."""

    __slots__ = ("count", "lo", "hi", "kinds", "first", "order", "value", "step")

    def __init__(self, first: tuple) -> None:
        self.count = 0
        self.lo: Any = None
        self.hi: Any = None
        self.kinds = 0  # bit per kind
        self.first = first  # where the reader first meets it: its place in the listing
        self.order: tuple = (float("-inf"),)
        self.value: Any = None
        self.step = 0

    def extend(self, count: int, lo: Any, hi: Any, kind: int) -> None:
        self.count += count
        self.kinds |= 1 << kind
        if lo is not None:
            self.lo = lo if self.lo is None or lo < self.lo else self.lo
            self.hi = hi if self.hi is None or hi > self.hi else self.hi


class WrittenStats:
    """Per-key statistics of the frames one writer wrote to one (initially empty) file.

    `name` and `size`: the file and the bytes written to it; the row claims exactly that
    file, so a run with other frame files (ranks, replays) is left to readers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 0
        self._frames = 0
        self._keys: dict[int, tuple[str, str]] = {}
        self._stats: dict[int, _Key] = {}
        self._loops: dict[str, tuple[int, int]] = {}  # loop -> (first context id, place)
        self._loops_cid = -1  # contexts above this id cannot change `_loops`' order

    # -- fed by the writer thread ----------------------------------------------------
    def add(self, batch: dict[str, Any]) -> None:
        """Account for one batch whose frame was just written."""
        self._frames += 1
        self._keys.update(batch["keys"])
        if batch["contexts"]:
            self._add_loops(batch["contexts"])
        cands: dict[int, list[tuple]] = {}
        calls, (keys, values) = batch["call_cols"], batch["float_cols"]
        if len(keys):
            self._floats(calls, keys, values, cands)
        for kind in (INT, OBJECT):
            rows = batch["ints" if kind == INT else "objects"]
            if rows:
                self._rows(rows, kind, cands)
        frame = self._frames
        for kid, found in cands.items():
            if len(found) > 1:  # several kinds of one key in this frame: only those
                top = max(c[0] for c in found)  # logged at its latest time need the tie
                found = [self._tied(c, batch) for c in found if c[0] == top]
            t, tie, kind, pos, value, step = max(found, key=lambda c: c[:4])
            st = self._stats[kid]
            if t >= st.order[0]:  # a later frame wins a tie in time
                st.order = (t, frame, 0 if tie is None else tie, kind, pos)
                # A JSON value as readers get it back, copied now: the caller may change
                # its dict or list after this frame was written.
                st.value, st.step = as_read(value) if kind == OBJECT else value, step

    def _add_loops(self, contexts: dict[int, dict[str, int]]) -> None:
        """Loops in the reader's order: by the first context (lowest id) naming them, then
        by their place in it. Contexts come a step each, ids rising: their loops are
        mostly known already, and then only a new loop can change anything."""
        loops = self._loops
        if min(contexts) > self._loops_cid:
            todo = set().union(*contexts.values()) - loops.keys()
            for cid in sorted(contexts) if todo else ():
                coords = contexts[cid]
                if not todo.isdisjoint(coords):
                    for place, loop in enumerate(coords):
                        if loop in todo:
                            loops[loop] = (cid, place)
                            todo.discard(loop)
                    if not todo:
                        break
        else:  # a context below one already seen (ids out of order): every one counts
            for cid, coords in contexts.items():
                for place, loop in enumerate(coords):
                    known = loops.get(loop)
                    if known is None or (cid, place) < known:
                        loops[loop] = (cid, place)
        if loops:
            self._loops_cid = max(cid for cid, _ in loops.values())

    def _stat(self, kid: int, kind: int, place: int) -> _Key:
        st = self._stats.get(kid)
        if st is None:
            st = self._stats[kid] = _Key((self._frames, kind, place))
        return st

    def _floats(self, calls: list[array], keys: array, values: array,
                cands: dict[int, list[tuple]]) -> None:
        steps, times, counts = calls[1], calls[2], calls[3]
        n, c = len(counts), counts[0]
        monotone = all(map(_LE, times, islice(times, 1, None)))
        if counts.count(c) == n and keys[:c] * n == keys and len(set(keys[:c])) == c:
            # Every call logs the same keys in the same order (one training loop): each
            # key's values are a strided slice, its last value in the last call by time.
            if monotone:
                last = n - 1
            else:
                t_max = max(times)
                last = n - 1 - times[::-1].index(t_max)
            for j, kid in enumerate(keys[:c]):
                vals = values[j::c].tolist()  # boxed once: min/max of a list are quicker
                self._stat(kid, FLOAT, kid).extend(n, *_finite_range(vals), FLOAT)
                pos = last * c + j
                cands.setdefault(kid, []).append(
                    (times[last], None, FLOAT, pos, values[pos], steps[last]))
            return
        masks = _KeyMasks.of(keys)
        if masks is None:
            self._float_rows(steps, times, counts, keys, values, cands)
            return
        # Any other mix of calls: per key, a byte mask of its rows (C-speed passes).
        vlist, ends = values.tolist(), list(accumulate(counts))
        tvals = None if monotone else list(chain.from_iterable(map(repeat, times, counts)))
        for kid in masks.keys:
            mask = masks.mask(kid)
            vals = list(compress(vlist, mask))
            self._stat(kid, FLOAT, kid).extend(len(vals), *_finite_range(vals), FLOAT)
            if tvals is None:  # times in order: its last row is its last value
                pos = mask.rfind(1)
            else:  # the last of its rows logged at its latest time
                ts = list(compress(tvals, mask))
                nth = len(ts) - 1 - ts[::-1].index(max(ts))
                pos = next(islice(compress(range(len(vlist)), mask), nth, None))
            call = bisect_left(ends, pos + 1)
            cands.setdefault(kid, []).append(
                (times[call], None, FLOAT, pos, vlist[pos], steps[call]))

    def _float_rows(self, steps: array, times: array, counts: array, keys: array,
                    values: array, cands: dict[int, list[tuple]]) -> None:
        """Any float block (more than `_KeyMasks.MAX_KEYS` keys, ids past 2**16): value
        by value."""
        acc: dict[int, list] = {}  # kid -> [count, lo, hi, t, pos, step]
        pos = 0
        for t, step, count in zip(times, steps, counts):
            for i in range(pos, pos + count):
                kid, v = keys[i], values[i]
                a = acc.get(kid)
                if a is None:
                    a = acc[kid] = [0, None, None, t, i, step]
                a[0] += 1
                if v - v == 0:
                    if a[1] is None or v < a[1]:
                        a[1] = v
                    if a[2] is None or v > a[2]:
                        a[2] = v
                if t >= a[3]:
                    a[3], a[4], a[5] = t, i, step
            pos += count
        for kid, (count, lo, hi, t, i, step) in acc.items():
            self._stat(kid, FLOAT, kid).extend(count, lo, hi, FLOAT)
            cands.setdefault(kid, []).append((t, None, FLOAT, i, values[i], step))

    def _rows(self, rows: list, kind: int, cands: dict[int, list[tuple]]) -> None:
        """Int or JSON rows `(key, ctx, step, time, value)`, one by one (Python objects
        already: the writer's encoder walks them too)."""
        acc: dict[int, list] = {}  # kid -> [count, lo, hi, t, pos]
        for pos, (kid, _ctx, _step, t, v) in enumerate(rows):
            a = acc.get(kid)
            if a is None:
                a = acc[kid] = [0, None, None, t, pos]
                self._stat(kid, kind, kid if kind == INT else pos)
            a[0] += 1
            if kind == INT:
                if a[1] is None or v < a[1]:
                    a[1] = v
                if a[2] is None or v > a[2]:
                    a[2] = v
            if t >= a[3]:
                a[3], a[4] = t, pos
        for kid, (count, lo, hi, t, pos) in acc.items():
            self._stats[kid].extend(count, lo, hi, kind)
            row = rows[pos]
            cands.setdefault(kid, []).append((t, None, kind, pos, row[4], row[2]))

    @staticmethod
    def _tied(cand: tuple, batch: dict[str, Any]) -> tuple:
        """`cand` with its tie-breaker: the largest step of its key and kind in this
        frame up to it (the reader's order among kinds logged at the same time)."""
        t, _, kind, pos, value, step = cand
        if kind == FLOAT:
            (_, steps, _, counts), (keys, _) = batch["call_cols"], batch["float_cols"]
            kid, top, start = keys[pos], None, 0
            for s, count in zip(steps, counts):
                if start > pos:
                    break
                if kid in keys[start:min(start + count, pos + 1)]:
                    top = s if top is None or s > top else top
                start += count
        else:
            rows = batch["ints" if kind == INT else "objects"]
            kid = rows[pos][0]
            top = max(r[2] for r in rows[:pos + 1] if r[0] == kid)
        return t, top, kind, pos, value, step

    # -- read at finish --------------------------------------------------------------
    def row_parts(self) -> tuple[list[str], list[tuple[str, str]], list[tuple]]:
        """(loops, args, metrics) as `index_rows.scan_run` derives them from the file."""
        from .index_rows import to_json  # at finish only: `import flowillower` stays light

        loops = sorted(self._loops, key=self._loops.__getitem__)
        # (name, is an arg) -> its keys: an arg and a metric of one name are two entries,
        # as the reader keeps them (`reader.RunData`)
        named: dict[tuple[str, bool], list[tuple[_Key, str]]] = {}
        for kid, st in sorted(self._stats.items(), key=lambda item: item[1].first):
            if kid in self._keys:  # a value whose definition never reached the file
                name, role = self._keys[kid]  # is left out by readers too
                named.setdefault((name, role == "arg"), []).append((st, role))
        lasts = {key: max(group, key=lambda g: g[0].order)[0] for key, group in named.items()}
        args: list[tuple[str, str]] = []
        metrics: list[tuple] = []
        for (name, is_arg), group in named.items():
            role = group[0][1]
            if role == "sys":
                continue
            kinds = 0
            for st, _ in group:
                kinds |= st.kinds
            kind = "object" if kinds >> OBJECT & 1 else "float" if kinds & 1 else "int"
            last = lasts[name, is_arg]
            value = float(last.value) if kind == "float" else last.value
            if role == "arg":
                args.append((name, to_json(value)))
                continue
            lo = hi = None
            if kind != "object":
                lows = [st.lo for st, _ in group if st.lo is not None]
                if lows:
                    lo = float(min(lows))
                    hi = float(max(st.hi for st, _ in group if st.hi is not None))
            metrics.append((name, role, kind, sum(st.count for st, _ in group),
                            to_json(value), lo, hi, int(last.step), False))
        return loops, args, metrics


def as_read(value: Any) -> Any:
    """A logged JSON value as readers decode it from its frame (`store.format`): dict keys
    as text, tuples kept (a user's dict that looks like one of the format's tags is
    wrapped when written, so it reads back as logged)."""
    if isinstance(value, dict):
        return {(k if type(k) is str else str(k)): as_read(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(as_read(v) for v in value)
    if isinstance(value, list):
        return [as_read(v) for v in value]
    return value
