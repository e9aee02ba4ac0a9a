"""The in-memory record buffer between the logging API and the background writer."""

from __future__ import annotations

from array import array
from typing import Any


class RecordBuffer:
    """In-memory queue of records shared by the training thread and the writer.

    Lock-free: under the GIL each `append`/`extend`/`del` is atomic, and the training
    thread appends a call's float values *before* its call row, whose `count` entry is
    written last. The writer takes `n = len(c_count)` calls and exactly the values they
    count, so it never sees half a call. Key and context definitions are appended before
    any value using them; a reader resolves them across the whole file.
    """

    __slots__ = ("c_ctx", "c_step", "c_time", "c_count", "f_key", "f_val", "ints",
                 "objects", "key_defs", "ctx_defs", "events")

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

    @staticmethod
    def _take(seq, n: int):
        head = seq[:n]
        del seq[:n]
        return head

    def drain(self) -> dict[str, Any] | None:
        """Take everything queued so far, or None when nothing is queued."""
        take = self._take
        keys = {k: (name, role) for k, name, role in take(self.key_defs, len(self.key_defs))}
        contexts = dict(take(self.ctx_defs, len(self.ctx_defs)))
        events = take(self.events, len(self.events))
        n = len(self.c_count)  # read first: every call counted here is complete
        counts = take(self.c_count, n)
        nv = sum(counts)
        call_cols = [take(self.c_ctx, n), take(self.c_step, n), take(self.c_time, n), counts]
        float_cols = [take(self.f_key, nv), take(self.f_val, nv)]
        ints = take(self.ints, len(self.ints))
        objects = take(self.objects, len(self.objects))
        if not (n or ints or objects or keys or contexts or events):
            return None
        return {"call_cols": call_cols, "float_cols": float_cols, "ints": ints,
                "objects": objects, "keys": keys, "contexts": contexts, "events": events}
