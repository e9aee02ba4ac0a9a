"""Replayed values as frame files: reading a worker's values back, writing a replay file.

A worker writes its values to a scratch store in the run format; `read_rows` picks the
wanted metric values (with their loop coordinates) out of its frames, `write_frames`
writes the merged rows as one record file (`replays/<replay id>.fwl`), and
`original_times` gives the original run's iteration timestamps so replayed values sit
on the run's own timeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store.buffer import RecordBuffer
from ..store.format import iter_frames
from ..store.writer import FrameWriter


def read_rows(path: Path, wanted: set[str]) -> list[tuple]:
    """(name, role, kind, coords, step, time, value) of the wanted metric values in a file."""
    frames = list(iter_frames(path.read_bytes()))
    keys: dict[int, tuple[str, str]] = {}
    contexts: dict[int, dict[str, int]] = {0: {}}
    for frame in frames:
        keys.update(frame.keys)
        contexts.update(frame.contexts)
    rows: list[tuple] = []
    for frame in frames:
        if frame.calls is not None and frame.floats is not None:
            ctxs, steps, times, counts = frame.calls
            fkeys, fvals = frame.floats
            k = 0
            for c, s, t, n in zip(ctxs, steps, times, counts):
                for _ in range(n):
                    name, role = keys.get(fkeys[k], ("", ""))
                    if name in wanted and role == "metric":
                        rows.append((name, role, "float", contexts.get(c, {}), s, t, fvals[k]))
                    k += 1
        if frame.ints is not None:
            for kid, c, s, t, v in zip(*frame.ints):
                name, role = keys.get(kid, ("", ""))
                if name in wanted and role == "metric":
                    rows.append((name, role, "int", contexts.get(c, {}), s, t, v))
        for kid, c, s, t, v in frame.objects:
            name, role = keys.get(kid, ("", ""))
            if name in wanted and role == "metric":
                rows.append((name, role, "object", contexts.get(c, {}), s, t, v))
    return rows


def write_frames(path: Path, rows: list[tuple], events: list[dict[str, Any]]) -> None:
    """Write (name, role, kind, coords, step, time, value) rows as one frame file."""
    buf = RecordBuffer()
    key_ids: dict[tuple[str, str], int] = {}
    ctx_ids: dict[tuple, int] = {(): 0}
    for name, role, kind, coords, step, when, value in rows:
        kid = key_ids.get((name, role))
        if kid is None:
            kid = key_ids[(name, role)] = len(key_ids)
            buf.key_defs.append((kid, name, role))
        ckey = tuple(coords.items())
        cid = ctx_ids.get(ckey)
        if cid is None:
            cid = ctx_ids[ckey] = len(ctx_ids)
            buf.ctx_defs.append((cid, dict(coords)))
        if kind == "float":
            buf.f_key.append(kid)
            buf.f_val.append(value)
            buf.c_ctx.append(cid)
            buf.c_step.append(int(step))
            buf.c_time.append(float(when))
            buf.c_count.append(1)
        elif kind == "int":
            buf.ints.append((kid, cid, int(step), float(when), int(value)))
        else:
            buf.objects.append((kid, cid, int(step), float(when), value))
    buf.events.extend(events)
    if path.exists():
        path.unlink()
    writer = FrameWriter(path, buf, interval=3600.0)
    writer.close()
    if writer.error is not None:
        raise writer.error


def original_times(run_dir: Path) -> dict[tuple, float]:
    """Loop coordinates -> when the original run finished that iteration (from the
    `time/<loop>` values), so replayed values sit on the run's own timeline."""
    out: dict[tuple, float] = {}
    for path in sorted(run_dir.glob("data*.fwl")):
        try:
            frames = list(iter_frames(path.read_bytes()))
        except OSError:
            continue
        keys: dict[int, tuple[str, str]] = {}
        contexts: dict[int, dict[str, int]] = {0: {}}
        for frame in frames:
            keys.update(frame.keys)
            contexts.update(frame.contexts)
        for frame in frames:
            if frame.calls is None or frame.floats is None:
                continue
            ctxs, _steps, times, counts = frame.calls
            fkeys = frame.floats[0]
            k = 0
            for c, t, n in zip(ctxs, times, counts):
                for _ in range(n):
                    name, role = keys.get(fkeys[k], ("", ""))
                    if role == "sys" and name.startswith("time/"):
                        out[tuple(contexts.get(c, {}).items())] = t
                    k += 1
    return out
