"""Decoding a frame file's values into numpy blocks: the one decoder every reader uses
(queries, the index, the UI, hindsight replay, alert rules). Re-exported by `reader`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .format import iter_frames

__all__ = ["Block", "FileValues", "decode_values"]


@dataclass
class Block:
    """One frame's values of one kind, a row per value (a float call's row repeated for
    each of its values). `key` and `ctx` are the file's own ids (see `FileValues`)."""

    kind: str  # "float" | "int" | "object"
    key: np.ndarray  # uint32 / int64
    ctx: np.ndarray
    step: np.ndarray  # int64
    time: np.ndarray  # float64
    values: np.ndarray  # float64, int64 or object


@dataclass
class FileValues:
    """A frame file decoded: its key and context definitions (from every frame: the
    writer may define a key in the frame after its first values) and, per intact frame
    in file order, its events and value blocks."""

    keys: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, role)
    contexts: dict[int, dict[str, int]] = field(default_factory=dict)
    frames: list[tuple[list[dict[str, Any]], list[Block]]] = field(default_factory=list)

    def rows(self, accept: Callable[[str, str], bool]) -> Iterator[tuple]:
        """(name, role, kind, coords, step, time, value) of every value whose (name,
        role) `accept`s, in file order (kinds of one frame: float, int, object), as
        Python scalars. Values whose key definition was lost (torn frame) are left out."""
        wanted = {kid for kid, (name, role) in self.keys.items() if accept(name, role)}
        if not wanted:
            return
        ids = np.fromiter(wanted, np.int64, len(wanted))
        for _events, blocks in self.frames:
            for block in blocks:
                sel = np.isin(block.key, ids)  # at C speed: most values are not wanted
                if not sel.any():
                    continue
                cols = (block.key, block.ctx, block.step, block.time, block.values)
                if not sel.all():
                    cols = tuple(col[sel] for col in cols)
                for kid, c, s, t, v in zip(*(col.tolist() for col in cols)):
                    name, role = self.keys[kid]
                    yield name, role, block.kind, self.contexts.get(c, {}), s, t, v


def decode_values(data: bytes) -> FileValues:
    """The one decoder of a frame file's values, used by every reader (queries, the UI,
    hindsight replay): damaged frames are skipped (see `format.iter_frames`)."""
    out = FileValues()
    for frame in iter_frames(data):
        out.keys.update(frame.keys)
        out.contexts.update(frame.contexts)
        blocks = []
        if frame.floats is not None and frame.calls is not None:
            counts = np.frombuffer(frame.calls[3], np.uint32)
            blocks.append(Block("float", np.frombuffer(frame.floats[0], np.uint32),
                                np.repeat(np.frombuffer(frame.calls[0], np.uint32), counts),
                                np.repeat(np.frombuffer(frame.calls[1], np.int64), counts),
                                np.repeat(np.frombuffer(frame.calls[2], np.float64), counts),
                                np.frombuffer(frame.floats[1], np.float64)))
        if frame.ints is not None:
            blocks.append(Block("int", np.frombuffer(frame.ints[0], np.uint32),
                                np.frombuffer(frame.ints[1], np.uint32),
                                np.frombuffer(frame.ints[2], np.int64),
                                np.frombuffer(frame.ints[3], np.float64),
                                np.frombuffer(frame.ints[4], np.int64)))
        if frame.objects:
            rows = frame.objects
            values = np.empty(len(rows), object)
            values[:] = [r[4] for r in rows]
            blocks.append(Block("object", np.array([r[0] for r in rows], np.int64),
                                np.array([r[1] for r in rows], np.int64),
                                np.array([r[2] for r in rows], np.int64),
                                np.array([r[3] for r in rows], np.float64), values))
        out.frames.append((frame.events, blocks))
    return out
