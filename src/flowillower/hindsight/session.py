"""The replay worker: how a process started by `fw.replay` follows its plan.

`fw.replay` starts the transplanted old script with `$FLOWILLOWER_REPLAY` pointing at a
JSON plan. `flowillower/__init__.py` registers a run-creation hook (`run.on_run_created`)
that calls `join_replay` in such a worker: when that script's run starts, `attach`

* sends the run's records to a scratch store (the parent merges the wanted values into
  the original run afterwards; the original run is never written by a worker),
* makes `fw.arg` return the original run's recorded values,
* lets the outermost loop yield only the planned iterations, restoring the recorded
  start-of-iteration state before the first of them,
* skips inner loops of iterations the plan skips, restoring the state recorded where
  each inner loop ended, and
* ends the process right after the outer loop when nothing after the loops is needed.

Plan fields: `run_dir`, `scratch`, `outer` (loop name or null), `first`/`stop` (outer
iterations to run), `emit_from`, `skip` (iterations whose inner loops are skipped),
`checkpoints` (bool), `restore_first` (restore start(first)), `post_loop`, `args`, and
for `replay --watch` `watch` ({"name", "every", "max_depth"}: see watch_worker.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import args as _args
from ..loops import StartAt
from .ckpt_files import CheckpointError
from .ckpt_store import CheckpointStore
from .state import object_kind, restore_state

if TYPE_CHECKING:
    from ..run import Run

# Path of a replay worker's plan, set by `fw.replay` in the worker's environment
# (flowillower/__init__.py checks the same name without importing this module).
REPLAY_ENV = "FLOWILLOWER_REPLAY"
_current: ReplaySession | None = None


def current() -> ReplaySession | None:
    """The replay this process is a worker of, if any."""
    return _current


def join_replay(run: Run) -> None:
    """Run-creation hook: in a replay worker ($FLOWILLOWER_REPLAY set), put the recording
    run (rank 0) in replay mode; elsewhere do nothing."""
    plan = os.environ.get(REPLAY_ENV)
    if plan and run.rank == 0:
        attach(run, plan)


def attach(run: Run, plan_path: str) -> None:
    """Put `run` in replay mode (before its set-up starts: see `join_replay`)."""
    global _current
    if _current is None:
        plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
        _current = ReplaySession(plan)
    _current.bind(run)


class ReplayDiverged(CheckpointError):
    """The replayed code does not follow the loop structure the checkpoints recorded."""


class ReplaySession:
    """State of one replay worker process."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.scratch = Path(plan["scratch"])
        self.outer: str | None = plan.get("outer")
        self.first, self.stop = int(plan.get("first", 0)), int(plan.get("stop", 0))
        self.emit_from = int(plan.get("emit_from", self.first))
        self.skip = set(plan.get("skip", []))
        self.post_loop = bool(plan.get("post_loop", True))
        self.store = (CheckpointStore(Path(plan["run_dir"]), plan.get("ckpt_subdir"))
                      if plan.get("checkpoints") else None)
        self.objects: dict[str, Any] = {}
        self.run: Run | None = None
        self.outer_depth: int | None = None
        self.outer_done = False
        self.cur: int | None = None
        self.skipping = False
        self.m = 0
        self._marked_skip = False
        self.watch_spec: dict[str, Any] | None = plan.get("watch")
        self.watching: Any = None  # watch_worker.WorkerWatch once NAME is registered
        self._progress = open(self.scratch / "progress", "a", encoding="utf-8")

    # -- set-up ---------------------------------------------------------------------------
    def bind(self, run: Run) -> None:
        run.redirect_output(self.scratch / "store")
        run.capture_code = False  # the code is an old snapshot already: nothing to capture
        run.project = self.plan.get("project") or run.project
        _args.replay_overrides = dict(self.plan.get("args") or {})
        run.set_loop_control(self.control)
        run.on_loop(self.hook)
        self.run = run

    @contextmanager
    def registered(self, objects: dict[str, Any]) -> Iterator[None]:
        """`fw.checkpointing(...)` in the replayed script hands its objects to the replay."""
        self.objects.update(objects)
        spec = self.watch_spec
        if spec and self.watching is None and spec["name"] in objects and self.run:
            from .watch_worker import start

            # Live from the run's first step; a later segment from its restored start.
            self.watching = start(self.run, objects, spec, self.scratch, self.first == 0)
        try:
            yield
        finally:
            for name in objects:
                self.objects.pop(name, None)

    def mark(self, text: str) -> None:
        self._progress.write(text + "\n")
        self._progress.flush()

    # -- restoring --------------------------------------------------------------------------
    def _restore(self, entry: dict[str, Any] | None, what: str) -> None:
        if entry is None:
            raise ReplayDiverged(f"no checkpoint recorded for {what}")
        assert self.store is not None and self.store.meta is not None
        kinds = self.store.meta["objects"]
        if not self.objects and kinds:
            raise CheckpointError(
                "the replayed code did not register its state: wrap the outer loop in "
                "fw.checkpointing(...) as the original run did")
        for name, kind in kinds.items():
            obj = self.objects.get(name)
            if obj is not None and object_kind(obj) != kind:
                raise CheckpointError(f"checkpointed object {name!r} was a {kind}, the replayed "
                                      f"code registers a {object_kind(obj)}")
        restore_state(self.store.load(entry), self.objects, kinds, self.run)
        # Keep only the files this state came from: later states mostly share them.
        self.store.drop_cache(keep=self.store.last_used)

    # -- loop control (Run.set_loop_control) -------------------------------------------------
    def control(self, name: str, depth: int, iterable: Iterable[Any]
                ) -> Iterable[tuple[int, Any]]:
        if self.outer_depth is None and not self.outer_done and name == self.outer:
            self.outer_depth = depth
            return self._outer_pairs(iterable)
        if (self.outer_depth is not None and depth == self.outer_depth + 1
                and self.cur is not None and self.skipping):
            if not self._marked_skip:
                self._marked_skip = True
                self.mark("skipped")  # a crash after this may come from skipping
            return iter(())  # skipped: its end state comes from the checkpoint
        return enumerate(iterable)

    def _outer_pairs(self, iterable: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        # Positions within the items; `fw.loop(..., start=K)` adds K (the plan's indices
        # are the run's own: a restarted script's loop starts at its checkpoint's K).
        base = 0
        if isinstance(iterable, StartAt):
            base, iterable = iterable.start, iterable.items
        first, stop = max(0, self.first - base), max(0, self.stop - base)
        if first >= stop:
            return
        if isinstance(iterable, Sequence):  # range, list, tuple: jump straight there
            for i in range(first, min(stop, len(iterable))):
                yield i, iterable[i]
            return
        for i, item in enumerate(iterable):
            if i >= stop:
                break
            if i >= first:
                yield i, item

    # -- loop events (Run.on_loop) -------------------------------------------------------
    def hook(self, event: str, name: str, depth: int, index: int) -> None:
        if self.outer_depth is None or self.outer_done:
            return
        if depth == self.outer_depth and name == self.outer:
            if event == "iteration":
                self._iteration(index)
            elif event in ("loop_end", "loop_break"):
                self._outer_end(event == "loop_end")
        elif depth == self.outer_depth + 1 and self.skipping and event in ("loop_end",
                                                                            "loop_break"):
            assert self.store is not None and self.cur is not None
            info = self.store.iters.get(self.cur, {})
            if self.m >= info.get("n_inner", 0):
                raise ReplayDiverged(
                    f"iteration {self.cur} of {self.outer!r} runs more inner loops than the "
                    f"original run recorded ({info.get('n_inner', 0)})")
            self._restore(self.store.entries.get(("inner", self.cur, self.m)),
                          f"the end of inner loop {self.m} in iteration {self.cur}")
            self.m += 1

    def _iteration(self, i: int) -> None:
        self._iteration_done()
        self.cur, self.m = i, 0
        self.skipping = i in self.skip
        # Only where the worker enters: later iterations start from the state the code
        # after the previous inner loops left, exactly as in the original run.
        if self.store is not None and i == self.first and self.plan.get("restore_first"):
            self._restore(self.store.start(i), f"the start of iteration {i}")
        if self.watch_spec and i == self.first:
            self._watch_from_here()

    def _watch_from_here(self) -> None:
        """`replay --watch`: the segment's start state is in place; steps count from here."""
        if self.watching is None:
            from .watch_worker import WatchNotRegistered

            assert self.watch_spec is not None
            name = self.watch_spec["name"]
            raise WatchNotRegistered(
                f"replay --watch {name}: the replayed code registered no {name!r} with "
                f"fw.checkpointing (registered: {', '.join(sorted(self.objects)) or 'none'})")
        if not self.watching.live:
            self.watching.go_live(int(self.watch_spec.get("max_depth", 0)))

    def _iteration_done(self) -> None:
        if self.cur is not None:
            if self.skipping and self.store is not None:
                expected = self.store.iters.get(self.cur, {}).get("n_inner", 0)
                if self.m != expected:
                    raise ReplayDiverged(
                        f"iteration {self.cur} of {self.outer!r} ran {self.m} inner loops, "
                        f"the original run recorded {expected}")
            if self.cur >= self.emit_from:
                self.mark(f"iter {self.cur}")
        self.cur = None

    def _outer_end(self, completed: bool) -> None:
        if completed:
            self._iteration_done()
        self.outer_done = True
        self.skipping = False
        if not completed:
            return
        self.mark("loop_end")
        if self.post_loop:
            if self.store is not None and self.plan.get("restore_final"):
                self._restore(self.store.final(), "the end of the loop")
            return
        # Nothing after the loops is wanted: stop here instead of running the rest.
        if self.watching is not None:
            self.watching.close()  # the last watched step's statistics, before the end
        self.mark("done")
        run = self.run
        if run is not None:
            run.finish("success")
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(0)
