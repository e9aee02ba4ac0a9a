"""`replay --watch NAME` inside a replay worker: `fw.watch` on a registered model.

When the replayed script enters `fw.checkpointing(NAME=model, ...)`, the session starts
`WorkerWatch`: the same `fw.watch(model)` a fresh run would have made there (its
statistics go into the worker's scratch run with role "watch", exactly as `fw.watch`
logs them), with two differences that let segments start from checkpoints and still
give a fresh run's values:

* the watcher ignores steps until the segment's start state is restored (a worker's
  first outer iteration would otherwise look like the run's very first step), and
* weight statistics (`param/...`, recorded by a fresh run at most once every
  `param_every` steps, a rule that depends on every earlier watched step) go to
  `watch.jsonl` in the scratch folder, with the order of the watched steps; the driver,
  which sees every segment, keeps those of the steps a fresh run would have chosen
  (`WatchRequest.rows`). A segment that starts from a checkpoint does not know the
  earlier steps, so it takes them on every watched step; the run's first segment follows
  the rule itself (it has seen every step: it costs what `fw.watch` costs). So does the
  first worker of a resumed segment or a fork's own part: the process it replays called
  `fw.watch` afresh where that segment began (`start`'s `from_start`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..model.schedule import Schedule
from .ckpt_files import CheckpointError

SIDE_FILE = "watch.jsonl"  # in the task's scratch folder
PARAM_PREFIX = "param/"


class WatchNotRegistered(CheckpointError):
    """`replay --watch NAME`: the replayed code never registered NAME, or not a model."""


class ReplaySchedule(Schedule):
    """A fresh run's `every` rule, closed until the segment is live; weight statistics on
    every watched step unless the segment starts with the run (`from_start`: the fresh
    run's rule); each watched step noted."""

    def __init__(self, owner: WorkerWatch, every: int, from_start: bool) -> None:
        super().__init__(every)
        self.owner, self.from_start = owner, from_start

    def watched(self, step: int) -> bool:
        if not self.owner.live or not super().watched(step):
            return False
        self.owner.note_watched(step)
        return True

    def params_due(self, step: int) -> bool:
        return super().params_due(step) if self.from_start else True


class WorkerWatch:
    """`fw.watch(model, every=...)` for one replay worker (see the module docstring)."""

    def __init__(self, run: Any, model: Any, every: int, scratch: Path, live: bool) -> None:
        from .. import api

        self.run = run
        self.live = live
        self.watched = -1  # index of the latest watched step of this worker
        self._coords: dict[int, tuple] = {}
        self._side = open(Path(scratch) / SIDE_FILE, "a", encoding="utf-8")
        # First in the run's step hooks: the loop context of each step as the run's own
        # `log_at_step` will find it when the watcher reports that step (one step later).
        self._tracker = run.on_step(self._track)
        self.watcher = api.watch(model, every=every, sink=self._sink)
        self.watcher.schedule = ReplaySchedule(self, every, from_start=live)

    def _track(self, step: int) -> None:
        self._coords[step] = self.run.thread_state().coords
        if len(self._coords) > 64:
            del self._coords[next(iter(self._coords))]

    def note_watched(self, step: int) -> None:
        self.watched += 1
        self._write(["w", self.watched, step, self._coords.get(step, ())])

    def _sink(self, stats: dict[str, Any], step: int) -> None:
        if self.run.status is not None:  # as fw.watch's own sink: a finished run takes none
            return
        params = {k: v for k, v in stats.items() if k.startswith(PARAM_PREFIX)}
        rest = {k: v for k, v in stats.items() if not k.startswith(PARAM_PREFIX)}
        if rest:
            self.run.log_at_step(rest, step, role="watch")
        if params:
            coords = self._coords.get(step, self.run.thread_state().coords)
            self._write(["p", self.watched, step, coords, time.time(), params])

    def _write(self, record: list[Any]) -> None:
        self._side.write(json.dumps(record) + "\n")
        self._side.flush()

    def go_live(self, max_depth: int) -> None:
        """The segment's start state is restored: from here on the worker's steps are the
        run's. The deepest loop the run had reached decides which loops report steps
        (only the innermost do), as it did in the original run."""
        st = self.run.thread_state()
        st.max_depth = max(st.max_depth, int(max_depth))
        self.live = True

    def close(self) -> None:
        """Report the last watched step and remove the hooks (before the run ends)."""
        try:
            self.watcher.close()
        finally:
            self._tracker.remove()
            self._side.close()


def start(run: Any, objects: dict[str, Any], spec: dict[str, Any], scratch: Path,
          live: bool) -> WorkerWatch:
    """Watch the object registered as `spec["name"]`; raises `WatchNotRegistered`.
    `live`: whether the worker starts with the run; the plan's `from_start` overrides it
    (a resumed segment's or a fork's first worker starts where its process started,
    which watched from its own first step)."""
    if "from_start" in spec:
        live = bool(spec["from_start"])
    name = spec["name"]
    model = objects[name]
    try:
        import torch
    except ImportError:  # pragma: no cover - a checkpointed module implies torch
        torch = None
    if torch is None or not isinstance(model, torch.nn.Module):
        raise WatchNotRegistered(f"replay --watch {name}: the object registered as {name!r} "
                                 f"is a {type(model).__name__}, not a torch module")
    return WorkerWatch(run, model, int(spec.get("every", 1)), scratch, live)
