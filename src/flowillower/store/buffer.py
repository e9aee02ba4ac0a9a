"""The in-memory record buffers between the logging API and the background writer.

Every thread that logs owns one `RecordBuffer` and is its only producer; the writer is
its only consumer. `BufferSet` is what the writer drains: the definitions and events
shared by all threads, then every thread's buffer.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any


def _take(seq, n: int):
    head = seq[:n]
    del seq[:n]
    return head


class RecordBuffer:
    """In-memory queue of one producer thread's records, drained by the writer.

    Lock-free: under the GIL each `append`/`extend`/`del` is atomic, and the producer
    appends a call's float values *before* its call row, whose `count` entry is written
    last. `take_calls` takes `n = len(c_count)` calls and exactly the values they count,
    so the writer never sees half a call. This needs a single producer: `Run` gives each
    thread its own buffer (see `flowillower.threadstate`). Key and context definitions
    are appended before any value using them; a reader resolves them across the whole
    file.
    """

    __slots__ = ("c_ctx", "c_step", "c_time", "c_count", "f_key", "f_val", "ints",
                 "objects", "key_defs", "ctx_defs", "events", "closed")

    def __init__(self) -> None:
        # Float values arrive per log call: one call row, then one (key, value) per value.
        self.c_ctx, self.c_step = array("I"), array("q")
        self.c_time, self.c_count = array("d"), array("I")
        self.f_key, self.f_val = array("I"), array("d")
        self.ints: list = []
        self.objects: list = []
        self.key_defs: list[tuple[int, str, str]] = []
        self.ctx_defs: list[tuple[int, dict[str, int]]] = []
        self.events: list[dict[str, Any]] = []
        self.closed = False  # its producer is gone: forget it once drained

    def take_calls(self) -> tuple[list[array], list[array]]:
        """Take every complete call: its (ctx, step, time, count) columns and exactly the
        (key, value) columns those calls count."""
        n = len(self.c_count)  # read first: every call counted here is complete
        counts = _take(self.c_count, n)
        nv = sum(counts)
        calls = [_take(self.c_ctx, n), _take(self.c_step, n), _take(self.c_time, n), counts]
        return calls, [_take(self.f_key, nv), _take(self.f_val, nv)]

    def take_values(self) -> tuple[list[array], list[array], list, list]:
        """Take complete calls, int rows and object rows (definitions stay)."""
        calls, floats = self.take_calls()
        return (calls, floats, _take(self.ints, len(self.ints)),
                _take(self.objects, len(self.objects)))

    def drain(self) -> dict[str, Any] | None:
        """Take everything queued so far, or None when nothing is queued."""
        calls, floats, ints, objects = self.take_values()
        # After the values, as in `BufferSet.drain`.
        keys = {k: (name, role) for k, name, role in _take(self.key_defs, len(self.key_defs))}
        contexts = {cid: dict(coords) for cid, coords in _take(self.ctx_defs, len(self.ctx_defs))}
        events = _take(self.events, len(self.events))
        return _batch(keys, contexts, events, calls, floats, ints, objects)


def _batch(keys, contexts, events, calls, floats, ints, objects) -> dict[str, Any] | None:
    if not (len(calls[3]) or ints or objects or keys or contexts or events):
        return None
    return {"call_cols": calls, "float_cols": floats, "ints": ints, "objects": objects,
            "keys": keys, "contexts": contexts, "events": events}


class BufferSet:
    """Definitions and events shared by every thread, plus one `RecordBuffer` per thread.

    Definitions are appended (under the caller's lock) before any value using them, and
    `drain` takes the threads' values first and the definitions after, so every value's
    definition is in its own frame or an earlier one. The writer calls `drain` as it
    would on a single `RecordBuffer`.
    """

    def __init__(self) -> None:
        self.key_defs: list[tuple[int, str, str]] = []
        # (id, coordinates as given to the loop: a tuple of (loop, index) pairs, shared
        # with the loop state, so a queued definition costs one small tuple).
        self.ctx_defs: list[tuple[int, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._buffers: list[RecordBuffer] = []
        self._lock = threading.Lock()  # the list of buffers, not their contents

    def add(self) -> RecordBuffer:
        """A new buffer for one producer thread, drained from now on."""
        buf = RecordBuffer()
        with self._lock:
            self._buffers.append(buf)
        return buf

    def __len__(self) -> int:
        """Number of thread buffers still registered."""
        return len(self._buffers)

    def pending_calls(self) -> int:
        """Float log calls queued and not yet drained, over all threads."""
        with self._lock:
            return sum(len(b.c_count) for b in self._buffers)

    def drain(self) -> dict[str, Any] | None:
        """Take everything queued so far by every thread, or None when nothing is."""
        with self._lock:
            buffers = list(self._buffers)
        parts = []
        for buf in buffers:
            closed = buf.closed  # read before taking: a closed buffer gets nothing more
            parts.append(buf.take_values())
            if closed:
                with self._lock:
                    self._buffers.remove(buf)
        if len(parts) == 1:
            calls, floats, ints, objects = parts[0]
        else:
            calls = [array("I"), array("q"), array("d"), array("I")]
            floats = [array("I"), array("d")]
            ints, objects = [], []
            for p_calls, p_floats, p_ints, p_objects in parts:
                for col, part in zip(calls + floats, p_calls + p_floats):
                    col.extend(part)
                ints += p_ints
                objects += p_objects
        # After the values: every definition they use was appended before them.
        keys = {k: (name, role) for k, name, role in _take(self.key_defs, len(self.key_defs))}
        contexts = {cid: dict(coords) for cid, coords in _take(self.ctx_defs, len(self.ctx_defs))}
        events = _take(self.events, len(self.events))
        return _batch(keys, contexts, events, calls, floats, ints, objects)
