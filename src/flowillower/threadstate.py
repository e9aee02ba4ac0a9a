"""Per-thread logging state: each thread logs into its own buffer at its own loop position.

A `Run` keeps one `ThreadState` per thread that logs (in a `threading.local`): the
thread that created the run gets one at once, any other on its first call. A thread that
never entered `fw.loop` logs at run level (context 0) or at its explicit `step=`.
Step and loop hooks belong to the thread that registered them, so `fw.watch` and
hindsight follow the training loop, not a data thread's loop.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .store.buffer import BufferSet, RecordBuffer

NO_STEP = -1  # stored when a value has neither an explicit step nor a loop around it


class ThreadState:
    """One thread's buffer and loop position (coordinates, context id, step, depth)."""

    __slots__ = ("buf", "coords", "ctx", "step", "depth", "max_depth", "loop_totals",
                 "step_contexts", "step_hooks", "loop_hooks", "loop_control", "thread",
                 "__weakref__")

    def __init__(self, buf: RecordBuffer, thread: str | None) -> None:
        self.buf = buf
        self.coords: tuple = ()
        self.ctx = 0
        self.step = NO_STEP
        self.depth, self.max_depth = 0, 0
        self.loop_totals: dict[tuple[str, ...], int] = {}
        self.step_contexts: dict[int, int] = {}  # recent global step -> loop context id
        self.step_hooks: list[Callable[[int], None]] = []
        self.loop_hooks: list[Callable[[str, str, int, int], None]] = []
        # Set during a hindsight replay: picks which (index, item) pairs a loop yields.
        self.loop_control: Callable[[str, int, Iterable[Any]],
                                    Iterable[tuple[int, Any]]] | None = None
        self.thread = thread  # None for the thread that created the run


class ThreadStates:
    """The `ThreadState` of each thread of one run; their buffers live in one BufferSet."""

    def __init__(self, buffers: BufferSet) -> None:
        self.buffers = buffers
        self.local = threading.local()
        self.local.state = self.owner = ThreadState(buffers.add(), None)

    def create(self) -> ThreadState:
        """The calling thread's state, made on its first call (after `local.state` missed)."""
        state = ThreadState(self.buffers.add(), threading.current_thread().name)
        # The thread-local is cleared when the thread ends: its buffer is then drained
        # one last time and forgotten, so short-lived threads don't pile up buffers.
        weakref.finalize(state, _close, state.buf).atexit = False
        self.local.state = state
        return state


def _close(buf: RecordBuffer) -> None:
    buf.closed = True
