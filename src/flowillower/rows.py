"""Turning one log call's values into buffer rows, past `Run.log_metrics`' fast path.

The fast path (known names, all floats, a step) stays inline in `Run.log_metrics`;
everything else comes here: values that need normalizing, new names, values without a
step. Every value of a call is validated before anything is queued (all or nothing).
A call row's count is appended last: it marks the call complete for the writer
(see `store.buffer.RecordBuffer`).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

from .threadstate import NO_STEP, Definitions, ThreadState
from .values import FLOAT, INT, normalize

_is_float = float.__instancecheck__
SIGNATURES_MAX = 4096  # remembered name sets per role; a script logging ever-new ones


def append_call(buf: Any, ctx: int, step: int, t: float, count: int) -> None:
    """One call row for `count` (key, float) rows just queued."""
    buf.c_ctx.append(ctx)
    buf.c_step.append(step)
    buf.c_time.append(t)
    buf.c_count.append(count)  # last: marks the call complete for the writer


def queue_known(st: ThreadState, kids: array, metrics: Mapping[str, Any], step: int,
                t: float) -> None:
    """Known names at a step, not all floats (e.g. `fw.watch` statistics with their
    histograms): floats go straight in, only the others are normalized, all of them
    before anything is queued."""
    f_keys: list[int] = []
    f_vals: list[float] = []
    others = []
    for kid, (name, value) in zip(kids, metrics.items()):
        if _is_float(value):
            f_keys.append(kid)
            f_vals.append(value)
            continue
        kind, norm = normalize(name, value)  # raises before anything is queued
        if kind == FLOAT:
            f_keys.append(kid)
            f_vals.append(norm)
        else:
            others.append((kid, kind, norm))
    buf, ctx = st.buf, st.ctx
    for kid, kind, norm in others:
        (buf.ints if kind == INT else buf.objects).append((kid, ctx, step, t, norm))
    if f_keys:
        buf.f_key.extend(f_keys)
        buf.f_val.extend(f_vals)
        append_call(buf, ctx, step, t, len(f_keys))


def queue_new(defs: Definitions, signatures: dict[tuple, array], st: ThreadState,
              metrics: Mapping[str, Any], step: int, t: float, role: str) -> None:
    """Any call: validate every value, define new keys, queue the rows, and remember the
    call's name set in `signatures` so the next call with it takes a faster path."""
    ctx = st.ctx
    rows = []
    for name, value in metrics.items():
        kind, norm = normalize(name, value)  # raises before anything is queued
        rows.append((name, kind, norm))
    kids = []
    buf = st.buf
    shared_floats = 0
    for name, kind, norm in rows:
        kid = defs.key(name, role)
        kids.append(kid)
        s = step if step != NO_STEP else defs.next_count(kid)
        if kind == FLOAT:
            buf.f_key.append(kid)
            buf.f_val.append(norm)
            if step == NO_STEP:  # each value has its own step: its own call row
                append_call(buf, ctx, s, t, 1)
            else:
                shared_floats += 1
        elif kind == INT:
            buf.ints.append((kid, ctx, s, t, norm))
        else:
            buf.objects.append((kid, ctx, s, t, norm))
    if shared_floats:  # their (key, value) rows are contiguous: one call row
        append_call(buf, ctx, step, t, shared_floats)
    if len(signatures) > SIGNATURES_MAX:
        signatures.clear()
    signatures[tuple(metrics)] = array("I", kids)
