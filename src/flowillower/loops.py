"""`fw.loop` and `fw.iteration`: loop coordinates, global steps and per-loop timings,
and the loop surface of a `Run` (`LoopSurface`: hooks, loop position, loop control).

Every value logged inside a loop is keyed by the coordinates of all enclosing loops
(e.g. epoch=3, step=120). Each iteration's wall time is recorded as a `sys` value
`time/<loop>` in that iteration's context; loop start and end are events. The
hindsight planner reads both.

`fw.loop(name, items, start=K)` numbers its items K, K+1, ... (a script restarted from
its checkpoint at epoch K); in a resumed run (`fw.init(resume=...)`) the global steps of
that outermost loop and of the loops inside it then continue from the iterations the
run's earlier segments recorded before K (`resumed_totals`, read from their `time/<loop>`
values), and so does `fw.iteration(name, K)` on its first use in a resumed run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from .threadstate import LoopControl, LoopPosition, ThreadState

_now = time.perf_counter


class Run(Protocol):
    """What loops need of a `flowillower.run.Run` (its public surface; run.py imports
    this module, so this one does not import it)."""

    def thread_state(self) -> ThreadState: ...

    def context_id(self, coords: tuple) -> int: ...

    def event(self, kind: str, **fields: Any) -> None: ...

    def log_metrics(self, metrics: Any, step: int | None = None, *,
                    role: str = "metric") -> None: ...

    @property
    def segment(self) -> int: ...  # 1, or the continuation a resumed run writes

    @property
    def dir(self) -> Path: ...


class StepHook:
    """Handle returned by `Run.on_step`, `Run.on_loop` and `run.on_run_created`:
    `.remove()` unregisters the callback."""

    def __init__(self, hooks: list, callback: Callable[..., None]) -> None:
        self._hooks, self.callback = hooks, callback

    def remove(self) -> None:
        if self.callback in self._hooks:
            self._hooks.remove(self.callback)


class LoopSurface:
    """The loop methods of `Run` (a base class of it), for scripts and for the layers
    above: `hindsight` saves and restores the loop position and chooses which iterations
    run, `model` follows steps. Always the calling thread's loops."""

    def thread_state(self) -> ThreadState:
        raise NotImplementedError  # Run's

    def context_id(self, coords: tuple) -> int:
        raise NotImplementedError  # Run's

    @property
    def loop_depth(self) -> int:
        """How many `fw.loop`s the calling thread is inside (0: none)."""
        return self.thread_state().depth

    def loop_position(self) -> LoopPosition:
        """The calling thread's step and iterations run per loop path: what a hindsight
        checkpoint saves (a copy: later iterations do not change it)."""
        st = self.thread_state()
        return LoopPosition(st.step, dict(st.loop_totals))

    def restore_loop_position(self, position: LoopPosition) -> None:
        """Put the calling thread back at a saved `loop_position` (a hindsight replay
        restoring a checkpoint): later iterations continue its step count."""
        st = self.thread_state()
        st.loop_totals = dict(position.loop_totals)
        st.step = position.step

    def set_loop_control(self, control: LoopControl | None) -> None:
        """Let `control(loop_name, depth, iterable)` choose the (index, item) pairs the
        calling thread's loops yield (a hindsight replay skipping iterations); None:
        every item, in order."""
        self.thread_state().loop_control = control

    def on_step(self, callback: Callable[[int], None]) -> StepHook:
        """Call `callback(global_step)` at the start of each innermost loop iteration of
        the calling thread's loops."""
        hooks = self.thread_state().step_hooks
        hooks.append(callback)
        return StepHook(hooks, callback)

    def on_loop(self, callback: Callable[[str, str, int, int], None]) -> StepHook:
        """Call `callback(event, loop_name, depth, index)` as loops progress.

        `event` is "loop_start" (index 0), "iteration" (index of the iteration starting),
        "loop_end" (the loop ran out; index = iterations run) or "loop_break" (left by
        `break` or an exception). Depth 1 is the outermost loop. Only the calling
        thread's loops are reported.
        """
        hooks = self.thread_state().loop_hooks
        hooks.append(callback)
        return StepHook(hooks, callback)

    def loop(self, name: str, iterable: Iterable[Any], progress: bool | None = None, *,
             start: int = 0) -> Iterator[Any]:
        """Iterate `iterable`, keying everything logged inside by this loop's index (the
        first item's index is `start`, as in `enumerate(iterable, start)`)."""
        return run_loop(self, name, iterable, progress, start)

    @contextmanager
    def iteration(self, name: str, index: int):
        """Context manager for one iteration of a loop the caller drives itself."""
        with iteration_scope(self, name, index):
            yield



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
    coords = base + ((name, index),)
    st.coords, st.ctx = coords, run.context_id(coords)
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


class StartAt:
    """The items of a `fw.loop(..., start=K)` as a loop control sees them: iterating it
    gives the items; `start` is the index of the first one. Controls return positions
    within the items (0 = the first); the loop adds `start` to them."""

    def __init__(self, items: Iterable[Any], start: int) -> None:
        self.items, self.start = items, start

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]  # TypeError for generators


def _shifted(pairs: Iterable[tuple[int, Any]], start: int) -> Iterator[tuple[int, Any]]:
    for position, item in pairs:
        yield position + start, item


def resumed_totals(run_dir: Path, segment: int, outer: str, start: int
                   ) -> dict[tuple[str, ...], int]:
    """Iterations the run's earlier segments recorded, per loop path under the outermost
    loop `outer`, before its index `start`: where a resumed loop's global steps go on.

    Read from the `time/<loop>` value every iteration logs (its step is that iteration's
    global count). Values of a later-superseded stretch past `start` are not looked at.
    """
    from .store.reader import decode_values
    from .store.segments import segment_files

    totals: dict[tuple[str, ...], int] = {}
    for path, seg in segment_files(run_dir):
        if seg >= segment or ".rank" in path.name:
            continue
        try:
            decoded = decode_values(path.read_bytes())
        except OSError:
            continue
        for _name, _role, _kind, coords, step, _when, _value in decoded.rows(
                lambda name, role: role == "sys" and name.startswith("time/")):
            names = tuple(coords)
            if not names or names[0] != outer or coords[outer] >= start or step < 0:
                continue
            totals[names] = max(totals.get(names, 0), int(step) + 1)
    return totals


def _continue_steps(run: Run, st: ThreadState, path: tuple[str, ...], start: int) -> None:
    """A loop starting at index `start`: its global steps (and, in a resumed run, those
    of the loops inside it) go on where the run left them."""
    if start <= 0:
        return
    if len(path) == 1 and getattr(run, "segment", 1) > 1:
        for sub, total in resumed_totals(run.dir, run.segment, path[0], start).items():
            st.loop_totals[sub] = max(st.loop_totals.get(sub, 0), total)
    if len(path) == 1:  # the outermost loop's step is its index when it started at 0
        st.loop_totals[path] = max(st.loop_totals.get(path, 0), start)


def run_loop(run: Run, name: str, iterable: Iterable[Any], progress: bool | None,
             start: int = 0) -> Iterator[Any]:
    """Generator behind `Run.loop`."""
    start = int(start)
    if start < 0:
        raise ValueError(f"fw.loop start must be >= 0, got {start}")
    st = run.thread_state()  # the thread iterating: a generator runs where it is advanced
    outer = _Frame(st)
    path = tuple(n for n, _ in outer.coords) + (name,)
    _continue_steps(run, st, path, start)
    st.depth += 1
    st.max_depth = max(st.max_depth, st.depth)
    _loop_event(run, st, "loop_start", name, st.depth)
    if _wants_progress(progress):
        from tqdm.auto import tqdm

        iterable = tqdm(iterable, desc=name, leave=st.depth == 1, dynamic_ncols=True)
    timing_key = f"time/{name}"
    # A hindsight replay may pick which (index, item) pairs run; normally all of them.
    control = st.loop_control
    if control is None:
        pairs: Iterable[tuple[int, Any]] = enumerate(iterable, start)
    elif start:
        pairs = _shifted(control(name, st.depth, StartAt(iterable, start)), start)
    else:
        pairs = control(name, st.depth, iterable)
    count, completed = 0, False
    if st.loop_hooks:
        _call_loop_hooks(st, "loop_start", name, 0)
    try:
        start = _now()
        for index, item in pairs:
            _begin_iteration(run, st, path, outer.coords, name, index)
            yield item
            end = _now()
            if run.status is None:  # another thread may have finished the run meanwhile
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
    st = run.thread_state()
    outer = _Frame(st)
    path = tuple(n for n, _ in outer.coords) + (name,)
    if path not in st.loop_totals and getattr(run, "segment", 1) > 1:
        _continue_steps(run, st, path, int(index))  # a resumed run's first iteration
    st.depth += 1
    st.max_depth = max(st.max_depth, st.depth)
    _begin_iteration(run, st, path, outer.coords, name, int(index))
    start = _now()
    try:
        yield
        if run.status is None:  # the run may have been finished inside the iteration
            run.log_metrics({f"time/{name}": _now() - start}, role="sys")
    finally:
        outer.restore(st)
        st.depth -= 1
