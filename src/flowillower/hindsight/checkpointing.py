"""`fw.checkpointing(...)`: the block a training script wraps its outer loop in.

In a replay worker the registered objects go to the replay (`session`), which restores
them; otherwise a `Recorder` (`checkpoint.py`) captures them as the run's loops progress,
through the run's public loop hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import api
from ..sizes import parse_size
from . import session
from .capture_budget import CaptureBudget
from .checkpoint import Recorder
from .entry_points import resolve_target


@contextmanager
def checkpointing(*, every: int | None = None, max_overhead: float = 0.02,
                  max_disk: int | str | None = None, max_memory: int | str | None = None,
                  when_behind: str | None = None, min_entry_points: int | None = None,
                  **objects: Any) -> Iterator[Recorder | None]:
    """Register state for hindsight replay: `with fw.checkpointing(model=net, optimizer=opt):`.

    Put the outermost training loop inside the block. Objects may be torch modules,
    optimizers, LR schedulers, GradScalers (anything with state_dict/load_state_dict),
    tensors, numpy arrays and generators, `random.Random`, dicts/lists and other picklable
    objects with a `__dict__`; they are restored in place during a replay. `every` forces
    a checkpoint every N outer iterations; by default the frequency adapts so capturing
    costs at most `max_overhead` of the loop's wall time. `max_disk` caps the bytes the
    run's checkpoints take (a number or a size like ``"20GB"``); whatever it is, recording
    stops before the disk would have less than 2% free (at least 1 GiB, at most 10 GiB
    kept). Captures wait in host memory (GPU state is copied there, never cloned on the
    device) until a background thread has written them: `max_memory` caps those bytes
    (default a fifth of RAM, at least 1 GiB). `every=` and adaptive captures obey the same
    bound on what the writer may hold (see `capture_budget`); past it the training thread
    waits (`when_behind="wait"`, the default with `every`) or the capture is skipped
    (`"skip"`, the default otherwise: a replay re-executes those iterations).
    `min_entry_points=N` (default `$FLOWILLOWER_REPLAY_PARALLELISM`) keeps at least N
    evenly spread outer-iteration starts, so a replay can split into N parallel segments;
    the disk budget wins over it, with a warning (see `entry_points`). (`every`,
    `max_overhead`, `max_disk`, `max_memory`, `when_behind` and `min_entry_points` are
    reserved names.) Inside a replay worker the objects are handed to the replay instead.
    """
    # Bad values fail here, in a replay or debug run too.
    for size in (max_disk, max_memory):
        if size is not None:
            parse_size(size)
    CaptureBudget(0, when_behind or "skip")
    resolve_target(min_entry_points)
    run = api.active_run()  # may start the run, which enters replay mode when asked to
    active = session.current()
    if active is not None:
        with active.registered(objects):
            yield None
        return
    if run is None:  # fw.debug(True) or a non-recording rank
        yield None
        return
    recorder = Recorder(run, objects, every, max_overhead, max_disk, max_memory, when_behind,
                        base_depth=run.loop_depth, min_entry_points=min_entry_points)
    handle = run.on_loop(recorder.hook)
    if recorder.entries is not None:
        run.set_loop_control(recorder.loop_control)  # to learn the outer loop's length
    try:
        yield recorder
    finally:
        if recorder.entries is not None:
            run.set_loop_control(None)
        handle.remove()
        recorder.close()

