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

_now = time.perf_counter


def _wants_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Frame:
    """State saved when a loop starts and restored when it ends."""

    __slots__ = ("coords", "ctx", "step")

    def __init__(self, run: Run) -> None:
        self.coords, self.ctx, self.step = run._coords, run._ctx, run._step

    def restore(self, run: Run) -> None:
        run._coords, run._ctx, run._step = self.coords, self.ctx, self.step


def _begin_iteration(run: Run, path: tuple[str, ...], base: tuple, name: str,
                     index: int) -> None:
    run._enter_ctx(base + ((name, index),))
    total = run._loop_totals.get(path, 0)
    run._loop_totals[path] = total + 1
    run._step = total  # global iteration count of this loop: the default x-axis
    if run._step_hooks and run._depth >= run._max_depth:
        # Hooks may report a step's results later (gradients exist only after backward):
        # remember which loop context each recent step had.
        run._step_contexts[total] = run._ctx
        if len(run._step_contexts) > 64:
            del run._step_contexts[next(iter(run._step_contexts))]
        for hook in list(run._step_hooks):
            hook(total)
    if run._loop_hooks:
        _call_loop_hooks(run, "iteration", name, index)


def _call_loop_hooks(run: Run, event: str, name: str, index: int) -> None:
    """Tell `Run.on_loop` callbacks (hindsight checkpoints) where the loops stand."""
    for hook in list(run._loop_hooks):
        hook(event, name, run._depth, index)


def run_loop(run: Run, name: str, iterable: Iterable[Any], progress: bool | None
             ) -> Iterator[Any]:
    """Generator behind `Run.loop`."""
    outer = _Frame(run)
    path = tuple(n for n, _ in outer.coords) + (name,)
    run._depth += 1
    run._max_depth = max(run._max_depth, run._depth)
    run.event("loop_start", loop=name, depth=run._depth)
    if _wants_progress(progress):
        from tqdm.auto import tqdm

        iterable = tqdm(iterable, desc=name, leave=run._depth == 1, dynamic_ncols=True)
    timing_key = f"time/{name}"
    # A hindsight replay may pick which (index, item) pairs run; normally all of them.
    control = run._loop_control
    pairs = enumerate(iterable) if control is None else control(name, run._depth, iterable)
    count, completed = 0, False
    if run._loop_hooks:
        _call_loop_hooks(run, "loop_start", name, 0)
    try:
        start = _now()
        for index, item in pairs:
            _begin_iteration(run, path, outer.coords, name, index)
            yield item
            end = _now()
            run.log_metrics({timing_key: end - start}, role="sys")
            start = end
            count += 1
        completed = True
    finally:
        outer.restore(run)
        run._depth -= 1
        run.event("loop_end", loop=name, depth=run._depth + 1)
        if run._loop_hooks:  # depth as seen inside the loop, like the other events
            run._depth += 1
            try:
                _call_loop_hooks(run, "loop_end" if completed else "loop_break", name, count)
            finally:
                run._depth -= 1


@contextmanager
def iteration_scope(run: Run, name: str, index: int):
    """One iteration of a loop driven by the caller (`with fw.iteration("epoch", e):`)."""
    outer = _Frame(run)
    path = tuple(n for n, _ in outer.coords) + (name,)
    run._depth += 1
    run._max_depth = max(run._max_depth, run._depth)
    _begin_iteration(run, path, outer.coords, name, int(index))
    start = _now()
    try:
        yield
        run.log_metrics({f"time/{name}": _now() - start}, role="sys")
    finally:
        outer.restore(run)
        run._depth -= 1
