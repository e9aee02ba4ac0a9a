"""A finished run's index row computed without numpy, for `finish`.

The reader (`store.reader`, numpy) is the one decoder readers use; importing numpy costs a
script that never loaded it more than its whole finish. So `finish` reads its own frame
file here, with the standard library, when the run is simple enough that file order is
logging order: one frame file, each key of one kind, its times never going back (the
cases where the reader needs no sorting). Otherwise `quick_parts` returns None and the
caller uses `index_rows.scan_run`. tests/test_index_warm.py checks both agree.
"""

from __future__ import annotations

import math
import operator
import os
from array import array
from pathlib import Path
from typing import Any

from .documents import read_meta, read_summary
from .format import iter_frames
from .index_rows import RunParts, to_json

# Per key: [kind, count, last value, last step, last time, min, max]
_KIND, _COUNT, _LAST, _STEP, _TIME, _LO, _HI = range(7)


class _Irregular(Exception):
    """The run needs the reader's merging: use `scan_run`."""


def _finite_range(values: Any) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    try:  # C speed: a finite sum means no NaN or infinity among them
        if math.isfinite(math.fsum(values)):
            return float(min(values)), float(max(values))
    except (ValueError, OverflowError):  # inf + -inf, or a sum past the float range
        pass
    finite = [float(v) for v in values if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (None, None)


def _check_order(times: Any) -> None:
    if any(map(operator.gt, times, times[1:])):  # the reader would sort: leave it to it
        raise _Irregular


def _merge(stats: dict[int, list], kid: int, kind: str, values: Any, steps: Any,
           times: Any, ordered: bool = False) -> None:
    """Fold one key's values of one frame (file order) into its running stats."""
    if not len(values):
        return
    if not ordered:
        _check_order(times)
    st = stats.get(kid)
    if st is None:
        st = stats[kid] = [kind, 0, None, None, times[0], None, None]
    elif st[_KIND] != kind or times[0] < st[_TIME]:
        raise _Irregular
    lo, hi = _finite_range(values) if kind != "object" else (None, None)
    if lo is not None:
        st[_LO] = lo if st[_LO] is None else min(st[_LO], lo)
        st[_HI] = hi if st[_HI] is None else max(st[_HI], hi)
    st[_COUNT] += len(values)
    st[_LAST], st[_STEP], st[_TIME] = values[-1], steps[-1], times[-1]


def _float_block(stats: dict[int, list], calls: tuple, floats: tuple) -> None:
    _ctx, steps, times, counts = calls
    keys, values = floats
    by_key: dict[int, tuple[list, list, list]] = {}
    first = len(counts) and counts[0]
    if first and counts.count(first) == len(counts) \
            and keys == array(keys.typecode, keys[:first]) * len(counts) \
            and len(set(keys[:first])) == first:
        # Every call logs the same keys in the same order (the common loop): strided
        # slices, no Python loop over the values.
        _check_order(times)  # once: every key has the calls' times
        for kid in sorted(keys[:first]):  # the reader's order: by key id within a block
            pos = keys.index(kid)
            _merge(stats, kid, "float", values[pos::first], steps, times, ordered=True)
        return
    else:
        at = 0
        for step, time, count in zip(steps, times, counts):
            for j in range(at, at + count):
                vals, sts, tms = by_key.setdefault(keys[j], ([], [], []))
                vals.append(values[j])
                sts.append(step)
                tms.append(time)
            at += count
    for kid in sorted(by_key):  # the reader's order: by key id within a block
        _merge(stats, kid, "float", *by_key[kid])


def _rows_block(stats: dict[int, list], kind: str, rows: list[tuple]) -> None:
    """Full rows (key, ctx, step, time, value) of ints or objects."""
    by_key: dict[int, tuple[list, list, list]] = {}
    for kid, _ctx, step, time, value in rows:
        vals, sts, tms = by_key.setdefault(kid, ([], [], []))
        vals.append(value)
        sts.append(step)
        tms.append(time)
    # The reader's order: ints by key id, objects by first appearance.
    for kid in (sorted(by_key) if kind == "int" else by_key):
        _merge(stats, kid, kind, *by_key[kid])


def quick_parts(run_dir: Path) -> RunParts | None:
    """The run's index parts as `scan_run` would give them, or None when the run needs
    the reader (several frame files or replays, a key of several kinds, times going
    back)."""
    names = os.listdir(run_dir)
    if "replays" in names or [n for n in names if n.endswith(".fwl")] != ["data.fwl"]:
        return None
    data = (Path(run_dir) / "data.fwl").read_bytes()
    frames = list(iter_frames(data))
    keys: dict[int, tuple[str, str]] = {}
    contexts: dict[int, dict[str, int]] = {}
    for frame in frames:  # definitions may come in a later frame than their first values
        keys.update(frame.keys)
        contexts.update(frame.contexts)
    stats: dict[int, list] = {}
    try:
        for frame in frames:
            if frame.floats is not None and frame.calls is not None:
                _float_block(stats, frame.calls, frame.floats)
            if frame.ints is not None:
                _rows_block(stats, "int", list(zip(*frame.ints)))
            if frame.objects:
                _rows_block(stats, "object", [tuple(r) for r in frame.objects])
    except _Irregular:
        return None
    meta = read_meta(run_dir) or {"id": Path(run_dir).name}
    summary = read_summary(run_dir) or {}
    if not summary.get("status"):
        return None  # only for a finished run: a live one's status needs the reader
    loops: list[str] = []
    for cid in sorted(contexts):
        loops.extend(loop for loop in contexts[cid] if loop not in loops)
    parts = RunParts(Path(run_dir).name, meta, summary["status"],
                     meta.get("created") or summary.get("created"), summary.get("ended"),
                     summary.get("error"), loops)
    for kid, st in stats.items():  # keys in order of first value, as the reader has them
        if kid not in keys:  # defined in a torn last frame: the reader skips it too
            continue
        name, role = keys[kid]
        if role == "sys":
            continue
        last = st[_LAST]
        if role == "arg":
            parts.args.append((name, to_json(last)))
            continue
        parts.metrics.append((name, role, st[_KIND], st[_COUNT], to_json(last), st[_LO],
                              st[_HI], int(st[_STEP]), False))
    return parts
