"""`fw.replay(watch=NAME)` / `flowillower replay --watch NAME`: `fw.watch` statistics for
past runs that never watched their model (the driver's side).

The model is the object the run registered as NAME with `fw.checkpointing`. A run is
replayed through the usual machinery (its code snapshot, its checkpoints as segment
entry points, any executor) with every inner loop re-executed, as if `fw.watch(model)`
had been called where `fw.checkpointing` starts; each worker watches the model
(`watch_worker.py`). The driver then keeps the statistics of the iterations each segment
owns, picks the weight statistics of the steps a fresh run would have chosen, and hands
them to the replay's one atomic `replays/<id>.fwl` file, with role "watch" like
`fw.watch`'s own values (the reader marks values from replay files "replayed").

A resumed run, or a fork, is replayed stretch by stretch (`groups.stretch_jobs`: each
stretch with its own code version and checkpoints). Each stretch was one process of the
original run, which would have called `fw.watch` afresh: its first worker watches from
that process's start, and the weight statistics follow the schedule over that stretch's
steps alone. Its statistics are kept for the iterations it still owns (the reader's
superseding rule, `groups.collect`); a fork's inherited steps get the statistics of its
parent's stretches up to the fork step, as a fork of a watched parent copies them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError
from .analysis import StatementInfo, checkpointing_keywords
from .planner import RunInfo, TaskPlan, plan_run
from .report import RunOutcome
from .watch_worker import PARAM_PREFIX, SIDE_FILE

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARAM_EVERY = 10  # `fw.watch`'s default (model.watcher.Watcher's `param_every`)

# One replayed row with its sort keys: (outer index, task order, name, role, kind,
# coords, step, time, value), the shape `_Replayer.merge` collects.
SortedRow = tuple[int, int, str, str, str, dict[str, int], int, float, Any]


@dataclass
class WatchRequest:
    """What `replay(watch=...)` asks for: the registered name, `every` as in `fw.watch`,
    and `force` to replay runs that already have watch statistics."""

    name: str
    every: int = 1
    force: bool = False
    # (run id, stretch part) -> the deepest loop nesting of the run that stretch is of
    depths: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise FlowillowerError(f"watch={self.name!r}: name the model as it was registered "
                                   "with fw.checkpointing(NAME=model), e.g. watch='model'")
        if int(self.every) < 1:
            raise FlowillowerError(f"watch every must be >= 1, got {self.every!r}")
        self.every = int(self.every)

    @property
    def label(self) -> str:
        """How the request shows among a run's replayed names and value counts."""
        return f"watch:{self.name}"

    # -- selecting runs -----------------------------------------------------------------------
    def add_missing(self, metrics: dict[str, Any], missing: list[str]) -> str:
        """Add the request to a run's missing names, or say why it is refused ("")."""
        if any((s or {}).get("role") == "watch" for s in metrics.values()) and not self.force:
            return ("already has fw.watch statistics: not watched again (pass "
                    "--force-watch / force_watch=True to add replayed ones next to them)")
        missing.append(self.label)
        return ""

    @contextmanager
    def hidden(self, outcome: RunOutcome) -> Iterator[bool]:
        """Leave the request out of the run's names while its statements are transplanted
        and planned (it has no statement); yields whether the run asked for it."""
        asked = self.label in outcome.names
        if asked:
            outcome.names.remove(self.label)
        try:
            yield asked
        finally:
            if asked:
                outcome.names.append(self.label)

    # -- planning -------------------------------------------------------------------------
    def plan(self, job: Any, info: RunInfo) -> None:
        """Check NAME is a model the run (or this stretch of it) registered, and re-plan
        with every inner loop re-executed (the statistics come from the forward and
        backward passes)."""
        assert job.plan is not None
        stretch = job.stretch
        whose = "the run" if stretch is None else f"{stretch.label} of the run"
        kinds = (info.store.meta or {}).get("objects") if info.store.exists else None
        if kinds is not None:
            if self.name not in kinds:
                raise FlowillowerError(
                    f"--watch {self.name}: {whose} registered no {self.name!r} with "
                    f"fw.checkpointing (registered: {', '.join(sorted(kinds)) or 'none'})")
            if kinds[self.name] != "module":
                raise FlowillowerError(f"--watch {self.name}: {self.name!r} was a "
                                       f"{kinds[self.name]}, not a torch module"
                                       + ("" if stretch is None else f" in {stretch.label}"))
        elif self.name not in registered_names(job.source):
            code = "the run's script" if stretch is None else \
                f"the script of {stretch.label} (code {job.version})"
            raise FlowillowerError(
                f"--watch {self.name}: {code} registers no {self.name!r} with "
                "fw.checkpointing(...); name the model as it was registered")
        statements = list(job.plan.statements)
        statements.append(StatementInfo([], 0, "inner", {"inner"}, "fw.watch"))
        if info.loop_ended:  # steps of loops after the main one are watched too
            statements.append(StatementInfo([], 0, "post", set(), "fw.watch"))
        job.plan = plan_run(info, statements)
        out = job.outcome
        if stretch is None:  # a group's outcome is summed up from its stretches
            out.strategy = job.plan.strategy
            out.notes += [n for n in job.plan.notes if n not in out.notes]
        self.depths[(out.run_id, job.part)] = _max_depth(info.run_dir)

    def annotate(self, job: Any) -> None:
        """Add the watch request to each task's plan file (after `jobs.materialize`).
        `from_start`: the task starts where the process it replays started (the run's
        first iteration, or a resumed segment's or a fork's own first one), so it watches
        from its first step on, as `fw.watch` in that process did."""
        assert job.plan is not None
        info = job.plan.info
        start = min(info.first, info.completed)
        for task in job.tasks:
            path = Path(task.scratch) / "plan.json"
            plan = json.loads(path.read_text(encoding="utf-8"))
            plan["watch"] = {"name": self.name, "every": self.every,
                             "max_depth": self.depths.get((job.outcome.run_id, job.part), 0),
                             "from_start": task.meta["plan"].first <= start}
            path.write_text(json.dumps(plan), encoding="utf-8")

    # -- merging ------------------------------------------------------------------------------
    def rows(self, job: Any) -> list[SortedRow]:
        """The statistics of every task of one job (a whole run, or one stretch of it),
        each kept for the iterations its task owns; the weight statistics of the steps a
        fresh process would have recorded them on (the schedule runs over this job's
        steps alone: each stretch was a process of its own, with its own `fw.watch`)."""
        from ..store.reader import decode_values

        assert job.plan is not None
        outer = job.plan.info.outer
        out: list[SortedRow] = []
        trace: list[tuple[int, int, int]] = []  # (task order, watched index, step), in order
        payload: dict[tuple[int, int], list[Any]] = {}
        for order, task in enumerate(job.tasks):
            t: TaskPlan = task.meta["plan"]
            for data_file in sorted((task.scratch / "store" / "runs").glob("*/data*.fwl")):
                decoded = decode_values(data_file.read_bytes())
                for name, role, kind, coords, step, when, value in decoded.rows(
                        lambda _name, role: role == "watch"):
                    if _owned(t, outer, coords):
                        out.append((coords.get(outer, -1) if outer else -1, order, name, role,
                                    kind, coords, step, when, value))
            for record in _side_records(task.scratch):
                if record[0] == "w" and _owned(t, outer, _coords(record[3])):
                    trace.append((order, int(record[1]), int(record[2])))
                elif record[0] == "p":
                    payload[(order, int(record[1]))] = record
        due = fresh_param_steps([step for _, _, step in trace], self.every)
        for (order, index, _), keep in zip(trace, due):
            record = payload.get((order, index))
            if not keep or record is None:
                continue
            _, _, step, pairs, when, stats = record
            coords = _coords(pairs)
            if not _owned(job.tasks[order].meta["plan"], outer, coords):
                continue
            for name, value in stats.items():
                out.append((coords.get(outer, -1) if outer else -1, order, name, "watch",
                            "float", coords, int(step), float(when), float(value)))
        return out

    def fold(self, counts: dict[str, int], names: list[str]) -> dict[str, int]:
        """Value counts with every watch statistic counted under the request's label."""
        out = {k: v for k, v in counts.items() if k in names}
        watched = sum(v for k, v in counts.items() if k not in names)
        if watched:
            out[self.label] = watched
        return out

    def event(self) -> dict[str, Any]:
        """What the replay event records about the request."""
        return {"name": self.name, "every": self.every, "param_every": PARAM_EVERY}


def watch_request(name: str | None, every: int = 1, force: bool = False
                  ) -> WatchRequest | None:
    """The request `replay(watch=NAME, watch_every=, force_watch=)` makes (None: none)."""
    return None if name is None else WatchRequest(name, every, force)


def asked(request: WatchRequest | None, outcome: RunOutcome) -> WatchRequest | None:
    """The request, if this run is being replayed for it."""
    return request if request is not None and request.label in outcome.names else None


def fresh_param_steps(steps: list[int], every: int, param_every: int = PARAM_EVERY
                      ) -> list[bool]:
    """Which of a run's watched steps (in order) a fresh `fw.watch` records weight
    statistics on: the rule of `model.schedule.Schedule.params_due`, run over all of
    them (segments only know their own)."""
    from ..model.schedule import Schedule

    schedule = Schedule(every, None, param_every)
    return [schedule.params_due(int(step)) for step in steps]


def registered_names(source: str) -> set[str]:
    """Keyword names handed to `fw.checkpointing(...)` in a script."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {str(kw.arg) for kw in checkpointing_keywords(tree)}


def _coords(pairs: Any) -> dict[str, int]:
    return {str(name): int(index) for name, index in (pairs or [])}


def _owned(t: TaskPlan, outer: str | None, coords: dict[str, int]) -> bool:
    """Whether a value at `coords` belongs to task `t` (as `_Replayer.merge` decides)."""
    if outer is not None and outer in coords:
        return t.emit_from <= coords[outer] < t.stop
    return t.emit_run_level


def _side_records(scratch: Path) -> Iterator[list[Any]]:
    try:
        text = (Path(scratch) / SIDE_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def _max_depth(run_dir: Path) -> int:
    """The deepest loop nesting the run recorded (which loops report steps to hooks)."""
    from ..store.reader import RunReader

    try:
        data = RunReader(run_dir).load([])
    except (OSError, FlowillowerError):
        return 0
    coords = data.ctx_coords
    return int((coords >= 0).sum(axis=1).max()) if coords.size else 0


__all__ = ["PARAM_EVERY", "PARAM_PREFIX", "WatchRequest", "asked", "fresh_param_steps",
           "registered_names", "watch_request"]
