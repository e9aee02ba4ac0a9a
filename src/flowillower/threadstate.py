"""Per-thread logging state: each thread logs into its own buffer at its own loop position.

A `Run` keeps one `ThreadState` per thread that logs (in a `threading.local`): the
thread that created the run gets one at once, any other on its first call. A thread that
never entered `fw.loop` logs at run level (context 0) or at its explicit `step=`.
Step and loop hooks belong to the thread that registered them, so `fw.watch` and
hindsight follow the training loop, not a data thread's loop. What threads share (key
and context ids, per-key counters) is in `Definitions`, changed under one lock.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .store.buffer import BufferSet, RecordBuffer
from .values import check_name

NO_STEP = -1  # stored when a value has neither an explicit step nor a loop around it
CTX_CACHE = 1024  # loop coordinates remembered for reuse; older ones get a new id
# Set during a hindsight replay: (loop name, depth, iterable) -> the (index, item) pairs
# the loop yields.
LoopControl = Callable[[str, int, Iterable[Any]], Iterable[tuple[int, Any]]]


class LoopPosition(NamedTuple):
    """A thread's place in its loops, as a hindsight checkpoint saves and restores it."""

    step: int  # the global step values are logged at
    loop_totals: dict[tuple[str, ...], int]  # iterations run per loop path


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
        self.loop_control: LoopControl | None = None  # set during a hindsight replay
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


class Definitions:
    """Key ids, loop-context ids and per-key counters, shared by every thread of a run.

    Lookups of known keys are plain dict reads; whatever is new is made under `lock`, and
    its definition is queued in the BufferSet before the id is returned, so before any
    value that uses it.
    """

    def __init__(self, buffers: BufferSet) -> None:
        self.buffers = buffers
        self.lock = threading.Lock()
        self.key_ids: dict[tuple[str, str], int] = {}
        self.roles: dict[int, str] = {}
        # Recent loop coordinates -> context id. Bounded (an id per inner iteration would
        # grow forever); ids come from a counter, so a re-entered coordinate may get a
        # new id, which readers merge by coordinates.
        self.ctx_ids: dict[tuple, int] = {}
        self.next_ctx = 1  # 0 is run level
        self.counts: dict[int, int] = {}  # per-key counters for values without a step
        self.media_next: dict[int, int] = {}  # per media key: one past its highest step

    def key(self, name: str, role: str) -> int:
        """The id of key (name, role), defined on first use."""
        kid = self.key_ids.get((name, role))
        if kid is None:
            check_name(name)
            with self.lock:  # two threads defining one name get one id
                kid = self.key_ids.get((name, role))
                if kid is None:
                    kid = len(self.key_ids)  # keys are never forgotten
                    self.buffers.key_defs.append((kid, name, role))
                    self.roles[kid] = role
                    self.key_ids[(name, role)] = kid
        return kid

    def context(self, coords: tuple) -> int:
        """The id of loop coordinates `((loop, index), ...)`, defined if not recent."""
        with self.lock:
            cid = self.ctx_ids.get(coords)
            if cid is None:
                cid, self.next_ctx = self.next_ctx, self.next_ctx + 1
                self.buffers.ctx_defs.append((cid, coords))  # made a dict at drain
                if len(self.ctx_ids) >= CTX_CACHE:
                    del self.ctx_ids[next(iter(self.ctx_ids))]  # the oldest
                self.ctx_ids[coords] = cid
        return cid

    def next_count(self, kid: int) -> int:
        """The next index of a key's values logged without a step (distinct per thread)."""
        with self.lock:
            count = self.counts.get(kid, 0)
            self.counts[kid] = count + 1
        return count

    def media_step(self, kid: int, step: int) -> int:
        """The step of an image / artifact: a file is named by it, so one logged without a
        step comes after every step the key already has, instead of counting from 0 and
        overwriting the file of a value logged inside a loop."""
        with self.lock:
            if step == NO_STEP:
                step = self.media_next.get(kid, 0)
            self.media_next[kid] = max(self.media_next.get(kid, 0), step + 1)
        return step

    def names(self) -> dict[int, str]:
        """Key id -> name."""
        return {kid: name for (name, _role), kid in list(self.key_ids.items())}
