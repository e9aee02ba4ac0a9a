"""Planning a replay: what each run must re-execute, in which worker tasks, how long.

`plan_run` turns the data-flow analysis of the transplanted script (`analysis.analyze`:
where each wanted statement sits and what it reads) and the run's recorded timings and
checkpoints into worker tasks; `schedule` splits outer iterations among workers (longest
first) and estimates the time; `plan_json` is what a worker is handed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analysis import StatementInfo
from .callback_captures import Skips, skip_summary
from .ckpt_store import CheckpointStore
from .epoch_split import EpochSplit
from .iterations import iteration_span, outer_from_events, recorded_times

# Cost model constants (seconds), calibrated on a 2-core CPU box.
PROCESS_EXIT_S = 0.15  # finishing the run and leaving the interpreter
RESTORE_FIXED_S = 0.002
LOAD_BYTES_PER_S = 400e6
SPLIT_GAIN = 0.85  # split a task among workers only if that cuts the estimate by 15%


# -- runs ------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """What the planner needs to know about a past run."""

    run_id: str
    run_dir: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    status: str
    args: dict[str, Any]
    outer: str | None
    completed: int  # outer iterations that finished
    loop_ended: bool
    iter_times: list[float]
    inner_times: list[float]
    setup_s: float
    teardown_s: float
    store: CheckpointStore
    present: set[str]  # value names the run already has
    # Checkpoint files this machine has no record of writing (never loaded), and files
    # whose size differs from what it wrote (replay refuses the run).
    unrecorded: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    # One stretch of a resumed run (hindsight/stretches.py): its first outer iteration
    # (`completed` is where it ends), and whether code after the loops replays here.
    first: int = 0
    last: bool = True
    no_checkpoints: str = ""  # why it has none, when not for want of fw.checkpointing
    # A run with no fw.loop whose framework callback captured its epochs (Lightning's
    # FlowillowerCheckpoint): what its worker skips (callback_captures.py).
    skips: Skips | None = None


def load_run_info(run_dir: Path) -> RunInfo:
    """Read a run's metadata, args, loop timings and checkpoint manifest."""
    from ..store.reader import RunReader

    reader = RunReader(run_dir)
    data = reader.load()
    meta = reader.meta
    summary = reader.summary
    store = CheckpointStore(run_dir)
    unrecorded, changed = store.keep_recorded()
    outer = store.meta["outer"] if store.exists else outer_from_events(data.events)
    args = {s.name: s.last() for s in data.series.values() if s.role == "arg"}
    present = {name for name, s in data.series.items() if s.role == "metric"}
    times = recorded_times(data, outer, store)
    loop_start = loop_end = None
    for ev in data.events:
        if ev.get("loop") == outer and ev.get("depth") == 1:
            if ev.get("event") == "loop_start" and loop_start is None:
                loop_start = ev.get("time")
            elif ev.get("event") == "loop_end" and loop_end is None:
                loop_end = ev.get("time")
    setup = store.meta.get("setup_s") if store.exists else None
    if setup is None:
        created = meta.get("created") or (loop_start or 0.0)
        startup = 1.5 if "torch" in (meta.get("packages") or {}) else 0.3
        setup = max(0.0, (loop_start or created) - created) + startup
    ended = (summary or {}).get("ended")
    teardown = max(0.0, ended - loop_end) if ended and loop_end else 0.0
    loop_ended = (store.ended is not None) if store.exists else (
        loop_end is not None and bool(summary and summary.get("status") == "success"))
    first, iter_times, inner_times = iteration_span(
        times, ended=store.ended if store.exists else None)
    return RunInfo(reader.id, Path(run_dir), meta, summary, reader.status, args, outer,
                   len(iter_times), loop_ended, iter_times, inner_times, float(setup),
                   float(teardown), store, present, unrecorded, changed, first=first,
                   skips=skip_summary(run_dir, data) if outer is None else None)


# -- tasks and the schedule ----------------------------------------------------------------------


@dataclass
class TaskPlan:
    """One worker process: run outer iterations [first, stop), keep values from emit_from."""

    run_id: str
    first: int
    stop: int
    emit_from: int
    skip: list[int]
    restore_first: bool
    post_loop: bool
    restore_final: bool
    emit_run_level: bool
    estimate: float
    index: int = 0
    loop: str = ""  # a callback-captured run's epochs [first, stop) (epoch_split.py)

    def plan_fields(self) -> dict[str, Any]:
        return {"first": self.first, "stop": self.stop, "emit_from": self.emit_from,
                "skip": self.skip, "restore_first": self.restore_first,
                "post_loop": self.post_loop, "restore_final": self.restore_final,
                "callback_loop": self.loop or None}


@dataclass
class RunPlan:
    """How one run is replayed."""

    info: RunInfo
    statements: list[StatementInfo]
    strategy: str
    tasks: list[TaskPlan]
    notes: list[str]
    checkpoints: bool
    dropped: list[str] = field(default_factory=list)  # names that cannot be replayed here
    epochs: EpochSplit | None = None  # how a callback-captured run's epochs may be shared

    @property
    def estimate(self) -> float:
        return sum(t.estimate for t in self.tasks)


def _restore_cost(store: CheckpointStore) -> float:
    biggest = max((e.get("bytes", 0) for e in store.entries.values()), default=0)
    return RESTORE_FIXED_S + biggest / LOAD_BYTES_PER_S


def plan_run(info: RunInfo, statements: list[StatementInfo],
             source: str | None = None) -> RunPlan:
    """Choose the cheapest correct way to get the statements' values for one run
    (`source`: the code that will run, the transplanted script the statements' lines
    refer to; needed to tell whether a framework callback's skips apply to them)."""
    notes: list[str] = []
    dropped: list[str] = []
    if info.unrecorded:
        notes.append(f"{len(info.unrecorded)} checkpoint file(s) were not written on this "
                     "machine (no local record of them): not loaded; the iterations they "
                     "cover are re-executed")
    places = {s.place for s in statements}
    needs = set().union(*(s.needs for s in statements)) if statements else set()
    n, lo = info.completed, min(info.first, info.completed)
    post = bool(places & {"post", "unknown"}) or "loop" in needs
    loopwork = bool(places & {"outer", "inner"}) or "loop" in needs
    if not info.last:  # an earlier stretch of a resumed run: the last one ends the loops
        post = False
        loopwork = bool(places & {"outer", "inner"})
    elif post and not info.loop_ended:
        gone = [name for s in statements if s.place in ("post", "unknown") or "loop" in s.needs
                for name in s.names]
        dropped += gone
        notes.append(f"the run stopped inside its loop: {', '.join(gone)} (after the loops) "
                     "cannot be replayed")
        statements = [s for s in statements if not set(s.names) & set(gone)]
        post = False
        places = {s.place for s in statements}
        needs = set().union(*(s.needs for s in statements)) if statements else set()
        loopwork = bool(places & {"outer", "inner"})
    store = info.store
    has_ckpt = store.exists and store.start(lo) is not None
    need_inner = "inner" in needs or "loop" in needs
    sequential = "carried" in needs or "loop" in needs
    restore = _restore_cost(store) if store.exists else 0.0
    times, inner = info.iter_times, info.inner_times

    def iter_cost(i: int, skip: bool) -> float:
        if skip:
            n_inner = store.iters.get(i, {}).get("n_inner", 0)
            return max(0.0, times[i] - inner[i]) + restore * n_inner
        return times[i]

    def task(first: int, stop: int, emit_from: int, skip: list[int], post_loop: bool,
             run_level: bool) -> TaskPlan:
        restore_first = has_ckpt and first < stop and store.start(first) is not None
        cost = info.setup_s + PROCESS_EXIT_S + sum(iter_cost(i, i in skip)
                                                   for i in range(first, stop))
        if restore_first:
            cost += restore
        restore_final = post_loop and store.exists and store.final() is not None
        if post_loop:
            cost += info.teardown_s + (restore if restore_final else 0.0)
        return TaskPlan(info.run_id, first, stop, emit_from, sorted(skip), restore_first,
                        post_loop, restore_final, run_level, cost)

    if info.outer is None:
        strategy = "re-executed from the start (the run recorded no fw.loop)"
        whole = task(0, 0, 0, [], True, True)
        duration = float((info.summary or {}).get("duration") or 0.0)
        skips = info.skips
        if skips is not None and source is not None:
            skips = skips.checked(source, [s.line for s in statements])
        if skips is not None:  # the script runs whole, its callback skipping epochs' work
            strategy = f"re-executed with its recorded command line; {skips.strategy()}"
            notes.append(skips.note())
            ended = (info.summary or {}).get("ended")
            if skips.setup_s is not None and skips.started and isinstance(ended, (int, float)):
                # The recorder timed the process from its start: imports included.
                duration = skips.setup_s + max(0.0, float(ended) - skips.started)
            duration += (RESTORE_FIXED_S * len(skips.indices) - skips.saved_s
                         + skips.load_bytes / LOAD_BYTES_PER_S)
        if duration > 0:
            whole.estimate = max(whole.estimate, duration + PROCESS_EXIT_S)
        # Every epoch trains again: workers may share them, each from a capture.
        epochs = (EpochSplit.of(info.skips, whole.estimate, RESTORE_FIXED_S + info.skips.load_bytes
                                / max(1, len(info.skips.indices)) / LOAD_BYTES_PER_S)
                  if skips is not None and skips.blocked and info.skips else None)
        if epochs is not None:  # one cost model for the whole run and its shares
            whole.estimate = epochs.cost(0, epochs.total)
            notes.append(epochs.note())
        return RunPlan(info, statements, strategy, [whole], notes, False, dropped, epochs)
    if not loopwork:
        if post and not (store.exists and store.final() is not None):
            # No final state recorded: the loop has to run to get there.
            strategy = "after the loops; no checkpoints recorded: re-executed from the start"
            if not store.exists:
                notes.append(info.no_checkpoints
                             or "no checkpoints recorded (no fw.checkpointing): re-executing")
            tasks = [task(lo, n, n, [], True, True)]
        elif post:
            strategy = "after the loops; loop skipped, state restored from the final checkpoint"
            tasks = [task(0, 0, 0, [], True, True)]
        else:
            strategy = "before the loops; only the set-up runs"
            tasks = [task(0, 0, 0, [], False, True)]
        return RunPlan(info, statements, strategy, tasks, notes, store.exists, dropped)
    if not has_ckpt:
        if not info.unrecorded:
            notes.append(info.no_checkpoints or
                         "no checkpoints recorded (the script has no fw.checkpointing around "
                         "its loop): falling back to re-executing the run from the start")
        strategy = "re-executed from the start (no checkpoints)"
        tasks = [task(lo, n, lo, [], post, True)]
        return RunPlan(info, statements, strategy, tasks, notes, False, dropped)
    skip = [] if need_inner else [i for i in range(lo, n) if store.skippable(i)]
    if need_inner:
        what = ("inner loops re-executed from the nearest checkpoint" if "inner" in places
                else "inner loops re-executed (the values depend on them)")
    else:
        what = "inner loops skipped via checkpoints"
        if len(skip) < n - lo:
            what += f" ({n - lo - len(skip)} of {n - lo} iterations without one re-executed)"
    if sequential:
        what += "; in order from the first iteration"
    strategy = f"outer loop ({info.outer}); {what}"
    if post:
        strategy += "; then the code after the loops"
    tasks = [task(lo, n, lo, skip, post, True)]
    return RunPlan(info, statements, strategy, tasks, notes, True, dropped)


def _lpt(costs: list[float], workers: int) -> float:
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        k = loads.index(min(loads))
        loads[k] += cost
    return max(loads) if loads else 0.0


def _splittable(plan: RunPlan) -> bool:
    needs = set().union(*(s.needs for s in plan.statements)) if plan.statements else set()
    return plan.epochs is not None or (plan.checkpoints and not ({"carried", "loop"} & needs))


def _split(plan: RunPlan, t: TaskPlan) -> tuple[TaskPlan, TaskPlan] | None:
    """Split a task at the checkpointed iteration closest to its cost midpoint."""
    if plan.epochs is not None:
        return plan.epochs.split_task(t)
    store = plan.info.store
    candidates = [i for i in range(t.emit_from + 1, t.stop) if store.start(i) is not None]
    if not candidates:
        return None
    skip = set(t.skip)
    info = plan.info
    restore = _restore_cost(store)

    def body(i: int) -> float:
        if i in skip:
            n_inner = store.iters.get(i, {}).get("n_inner", 0)
            return max(0.0, info.iter_times[i] - info.inner_times[i]) + restore * n_inner
        return info.iter_times[i]

    total = sum(body(i) for i in range(t.first, t.stop))
    best, best_gap, acc = None, math.inf, 0.0
    running = {i: 0.0 for i in candidates}
    for i in range(t.first, t.stop):
        if i in running:
            running[i] = acc
        acc += body(i)
    for i in candidates:
        gap = abs(running[i] - total / 2)
        if gap < best_gap:
            best, best_gap = i, gap
    assert best is not None
    fixed = info.setup_s + PROCESS_EXIT_S
    first_cost = fixed + running[best] + (restore if t.restore_first else 0.0)
    second_cost = fixed + (total - running[best]) + restore
    if t.post_loop:
        second_cost += info.teardown_s + (restore if t.restore_final else 0.0)
    a = TaskPlan(t.run_id, t.first, best, t.emit_from, [i for i in t.skip if i < best],
                 t.restore_first, False, False, t.emit_run_level and not t.post_loop,
                 first_cost)
    b = TaskPlan(t.run_id, best, t.stop, best, [i for i in t.skip if i >= best], True,
                 t.post_loop, t.restore_final, t.post_loop, second_cost)
    return a, b


def schedule(plans: list[RunPlan], workers: int, task_overhead: float = 0.0) -> float:
    """Split outer iterations among `workers` while that shortens the replay; return the
    estimated wall time. `task_overhead`: what the engine adds to every task (seconds:
    `Executor.task_overhead_s`), so a split must also pay for one more of those."""
    workers = max(1, workers)

    def makespan(costs: list[float]) -> float:
        return _lpt([c + task_overhead for c in costs], workers)

    while True:
        tasks = [(p, t) for p in plans for t in p.tasks]
        current = makespan([t.estimate for _, t in tasks])
        if len(tasks) >= 4 * workers:
            break
        improved = False
        for plan, t in sorted(tasks, key=lambda pt: -pt[1].estimate):
            if not _splittable(plan):
                continue
            parts = _split(plan, t)
            if parts is None:
                continue
            trial = [x.estimate for _, x in tasks if x is not t] + [parts[0].estimate,
                                                                   parts[1].estimate]
            # Each extra worker pays the set-up again: split only for a clear gain. While
            # workers are idle, the gain is the longest task's (tasks of equal length are
            # split one after another); after that, the whole schedule's.
            if len(tasks) < workers:
                gain = (max(p.estimate for p in parts) + task_overhead
                        < (t.estimate + task_overhead) * SPLIT_GAIN)
            else:
                gain = makespan(trial) < current * SPLIT_GAIN
            if gain:
                k = plan.tasks.index(t)
                plan.tasks[k:k + 1] = list(parts)
                improved = True
            break
        if not improved:
            break
    for plan in plans:
        for k, t in enumerate(plan.tasks):
            t.index = k
    return makespan([t.estimate for p in plans for t in p.tasks])


def scale_out(plan: RunPlan, worker_counts: list[int],
              task_overhead: float = 0.0) -> list[dict[str, Any]]:
    """The schedule `plan` would get on each cluster size, without changing `plan`: per
    size the estimated wall time, the segments and the checkpointed entry points used."""
    rows = []
    for workers in worker_counts:
        trial = RunPlan(plan.info, plan.statements, plan.strategy, list(plan.tasks),
                        plan.notes, plan.checkpoints, plan.dropped, plan.epochs)
        estimate = schedule([trial], workers, task_overhead)
        rows.append({"workers": workers, "estimate": estimate,
                     "segments": len(trial.tasks),
                     "entry_points": sum(1 for t in trial.tasks if t.restore_first),
                     "work": sum(t.estimate for t in trial.tasks)})
    return rows


def plan_json(plan: RunPlan, task: TaskPlan, scratch: Path, project: str | None) -> str:
    """The JSON a worker reads from $FLOWILLOWER_REPLAY."""
    return json.dumps({
        "version": 1, "run_dir": str(plan.info.run_dir), "scratch": str(scratch),
        "outer": plan.info.outer, "checkpoints": plan.checkpoints,
        "ckpt_subdir": plan.info.store.subdir,
        "args": plan.info.args, "project": project, **task.plan_fields(),
    }, default=str)
