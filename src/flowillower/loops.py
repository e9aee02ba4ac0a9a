"""`fw.loop` and `fw.iteration`: loop coordinates, global steps and per-loop timings.

Every value logged inside a loop is keyed by the coordinates of all enclosing loops
(e.g. epoch=3, step=120). Each iteration's wall time is recorded as a `sys` value
`time/<loop>` in that iteration's context; loop start and end are events. The
hindsight planner reads both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Run
    from .threadstate import ThreadState

_now = time.perf_counter


def _wants_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Frame:
    """A thread's loop position saved when a loop starts and restored when it ends."""

    __slots__ = ("coords", "ctx", "step")

    def __init__(self, st: ThreadState) -> None:
        self.coords, self.ctx, self.step = st.coords, st.ctx, st.step

    def restore(self, st: ThreadState) -> None:
        st.coords, st.ctx, st.step = self.coords, self.ctx, self.step


def _begin_iteration(run: Run, st: ThreadState, path: tuple[str, ...], base: tuple,
                     name: str, index: int) -> None:
    run._enter_ctx(st, base + ((name, index),))
    total = st.loop_totals.get(path, 0)
    st.loop_totals[path] = total + 1
    st.step = total  # global iteration count of this loop: the default x-axis
    if st.step_hooks and st.depth >= st.max_depth:
        # Hooks may report a step's results later (gradients exist only after backward):
        # remember which loop context each recent step had.
        st.step_contexts[total] = st.ctx
        if len(st.step_contexts) > 64:
            del st.step_contexts[next(iter(st.step_contexts))]
        for hook in list(st.step_hooks):
            hook(total)
    if st.loop_hooks:
        _call_loop_hooks(st, "iteration", name, index)


def _call_loop_hooks(st: ThreadState, event: str, name: str, index: int) -> None:
    """Tell `Run.on_loop` callbacks (hindsight checkpoints) where the loops stand."""
    for hook in list(st.loop_hooks):
        hook(event, name, st.depth, index)


def _loop_event(run: Run, st: ThreadState, kind: str, name: str, depth: int) -> None:
    # The hindsight planner reads loop_start / loop_end as the training loop's (the
    # thread that created the run): other threads' loops are events of their own kind.
    if st.thread is None:
        run.event(kind, loop=name, depth=depth)
    else:
        run.event(f"thread_{kind}", loop=name, depth=depth, thread=st.thread)


def run_loop(run: Run, name: str, iterable: Iterable[Any], progress: bool | None
             ) -> Iterator[Any]:
    """Generator behind `Run.loop`."""
    st = run._state()  # the thread iterating: a generator runs where it is advanced
    outer = _Frame(st)
    path = tuple(n for n, _ in outer.coords) + (name,)
    st.depth += 1
    st.max_depth = max(st.max_depth, st.depth)
    _loop_event(run, st, "loop_start", name, st.depth)
    if _wants_progress(progress):
        from tqdm.auto import tqdm

        iterable = tqdm(iterable, desc=name, leave=st.depth == 1, dynamic_ncols=True)
    timing_key = f"time/{name}"
    # A hindsight replay may pick which (index, item) pairs run; normally all of them.
    control = st.loop_control
    pairs = enumerate(iterable) if control is None else control(name, st.depth, iterable)
    count, completed = 0, False
    if st.loop_hooks:
        _call_loop_hooks(st, "loop_start", name, 0)
    try:
        start = _now()
        for index, item in pairs:
            _begin_iteration(run, st, path, outer.coords, name, index)
            yield item
            end = _now()
            run.log_metrics({timing_key: end - start}, role="sys")
            start = end
            count += 1
        completed = True
    finally:
        outer.restore(st)
        st.depth -= 1
        _loop_event(run, st, "loop_end", name, st.depth + 1)
        if st.loop_hooks:  # depth as seen inside the loop, like the other events
            st.depth += 1
            try:
                _call_loop_hooks(st, "loop_end" if completed else "loop_break", name, count)
            finally:
                st.depth -= 1


@contextmanager
def iteration_scope(run: Run, name: str, index: int):
    """One iteration of a loop driven by the caller (`with fw.iteration("epoch", e):`)."""
    st = run._state()
    outer = _Frame(st)
    path = tuple(n for n, _ in outer.coords) + (name,)
    st.depth += 1
    st.max_depth = max(st.max_depth, st.depth)
    _begin_iteration(run, st, path, outer.coords, name, int(index))
    start = _now()
    try:
        yield
        run.log_metrics({f"time/{name}": _now() - start}, role="sys")
    finally:
        outer.restore(st)
        st.depth -= 1
