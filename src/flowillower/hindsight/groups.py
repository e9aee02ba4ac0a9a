"""A run's replay jobs taken together: checking their workers, merging their values.

A run is replayed by one job, or, when it was resumed or forked, by one job per stretch
(each with its own code version and checkpoints: stretches.py), all sharing the run's
outcome. The run gets values only if every job of it succeeded; they are merged into
one replay file, keeping from each stretch only what the run reads from it (the same
superseding rule as the reader's), so each step appears once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError
from ..store.catalog import Store
from ..store.documents import read_meta
from ..store.segments import RUN_LEVEL, cutoffs, still_read
from .console import exit_text, tail
from .frames import read_rows
from .jobs import Job, force_inner, prepare_job, progress
from .planner import TaskPlan, load_run_info, plan_run
from .stretches import stretch_info, stretches
from .trust import Origin, origin


def members(job: Job) -> list[Job]:
    """Every job of `job`'s run (itself alone for a run replayed as a whole)."""
    return job.group or [job]


def stretch_jobs(job: Job, store: Store, script: Path | None,
                 trusted: Callable[[Origin], bool]) -> list[Job] | None:
    """One job per stretch of a resumed run or a fork, transplanted and planned, or None
    for a run replayed as a whole. `trusted`: whether a run's code may run here (a
    fork's parent is trusted like any run, else its inherited values are left out)."""
    run_dir = store.run_dir(job.outcome.run_id)
    meta = read_meta(run_dir) or {}

    def find_parent(fork_meta: dict[str, Any]) -> Path | None:
        try:
            parent_dir = store.run_dir(str(fork_meta["fork_of"].get("run")))
        except (FlowillowerError, KeyError, AttributeError):
            return None
        return parent_dir if trusted(origin(store.root, parent_dir)) else None

    parts, notes = stretches(run_dir, meta, find_parent)
    if not parts:
        return None
    whole = load_run_info(run_dir)
    group = [Job(job.outcome, stretch=part) for part in parts]
    for sub in group:
        assert sub.stretch is not None
        own = sub.stretch.run_dir == run_dir
        prepare_job(sub, stretch_info(sub.stretch, whole if own else None), store, script)
    # A stretch later segments rewound entirely has nothing to give to loop statements.
    kept = [sub for sub in group if not _owns_nothing(sub)] or group[-1:]
    for sub in group:
        if sub not in kept and sub.stretch is not None:
            notes.append(f"{sub.stretch.label}: every iteration it ran was rewound by a "
                         "later segment; not replayed")
    for sub in kept:
        sub.group = kept
    job.outcome.notes += notes
    return kept


def _owns_nothing(job: Job) -> bool:
    plan = job.plan
    if plan is None or plan.info.outer is None or plan.info.completed > plan.info.first:
        return False
    return all(s.place in ("outer", "inner") for s in plan.statements)


def all_done(job: Job) -> bool:
    """Whether every task of every job of the run has a result."""
    return all(t.id in j.results for j in members(job) for t in j.tasks)


def summarize(job: Job) -> None:
    """The run's outcome from its jobs' plans: code versions, strategy, notes, estimate
    (a group's stretches are labelled)."""
    group = [j for j in members(job) if j.plan is not None]
    out = job.outcome
    out.estimate = sum(j.plan.estimate for j in group if j.plan)
    out.tasks = sum(len(j.plan.tasks) for j in group if j.plan)
    if not job.group:
        return
    out.code_version = " | ".join(f"{_label(j)}: {j.version}" for j in group)
    out.strategy = " | ".join(f"{_label(j)}: {j.plan.strategy}" for j in group if j.plan)
    for j in group:
        assert j.plan is not None
        note = f"{_label(j)}: code {j.version}, {_iterations(j)}"
        if note not in j.plan.notes:
            j.plan.notes.insert(0, note)
        for text in (f"{_label(j)}: {n}" for n in j.plan.notes[1:]):
            if text not in out.notes:
                out.notes.append(text)


def _label(job: Job) -> str:
    stretch = job.stretch
    return stretch.label if stretch is not None else "run"


def _iterations(job: Job) -> str:
    assert job.plan is not None
    info = job.plan.info
    if info.outer is None:
        return "re-executed whole, keeping the values the run still reads from it"
    if info.completed <= info.first:
        return f"owns no iteration of {info.outer!r}"
    return f"owns iterations {info.first}..{info.completed - 1} of {info.outer!r}"


def failures(job: Job) -> tuple[bool, list[str]]:
    """(interrupted, why its workers failed) for one job's finished tasks."""
    found = []
    for task in job.tasks:
        result = job.results[task.id]
        t: TaskPlan = task.meta["plan"]
        if result.interrupted:
            return True, []
        where = f"{_label(job)}, " if job.group else ""
        span = f"{where}{t.loop or 'iteration'}s {t.emit_from}..{t.stop - 1}"
        if result.returncode != 0:
            found.append(f"worker {t.index} ({span}) exited with "
                         f"{exit_text(result.returncode)}:\n" + tail(task.log_path))
            continue
        done, marks = progress(task.scratch)
        expected = max(0, t.stop - t.emit_from)
        if t.loop:  # a share of a callback-captured run's epochs: no fw.loop to reach
            if done < expected:
                found.append(f"worker {t.index} ({span}) ended after {done} of {expected} "
                             f"{t.loop}s\n" + tail(task.log_path))
        elif done < expected or (job.plan and job.plan.info.outer and "loop_end" not in marks
                                 and (t.post_loop or t.stop >= job.plan.info.completed)):
            found.append(f"worker {t.index} ({span}) "
                         f"ended after {done} of {expected} iterations (did the replayed "
                         f"script reach fw.loop({job.plan.info.outer if job.plan else None!r})?)"
                         "\n" + tail(task.log_path))
    return False, found


def collect(job: Job, extra: Callable[[Job], list[tuple]] | None = None) -> list[tuple]:
    """The wanted values of every task of every job of the run, each row prefixed with
    its sort key (outer iteration, then job and task order): only the iterations each
    task emits, and of a stretch only what the run reads from it. The new values rewind
    too: a later stretch's new values supersede an earlier one's from their own rewind
    points (a statement before the loop logs at step 0 in every segment), so each
    position is read once, as the reader's rule would read a run that logged them.
    `extra`: more rows of one job (`replay --watch`'s statistics), already keyed by
    (outer iteration, task order) and limited to what its tasks own; they are kept and
    rewound by the same rules."""
    wanted = set(job.outcome.names)
    found: dict[int, list[tuple]] = {}
    for rank, member in enumerate(members(job)):
        assert member.plan is not None
        outer = member.plan.info.outer
        stretch = member.stretch
        kept = found.setdefault(rank, [])
        for row in extra(member) if extra is not None else []:
            if stretch is None or stretch.keeps(row[5], row[6]):
                kept.append((row[0], rank * 1_000_000 + row[1], *row[2:]))
        for order, task in enumerate(member.tasks):
            t: TaskPlan = task.meta["plan"]
            for data_file in sorted((task.scratch / "store" / "runs").glob("*/data*.fwl")):
                for row in read_rows(data_file, wanted):
                    coords, step = row[3], row[4]
                    if outer is not None and outer in coords:
                        if not t.emit_from <= coords[outer] < t.stop:
                            continue
                    elif t.loop and t.loop in coords:  # a share of a run's epochs
                        if not (t.emit_from <= coords[t.loop]
                                and (t.post_loop or coords[t.loop] < t.stop)):
                            continue
                    elif not t.emit_run_level:
                        continue
                    if stretch is not None and not stretch.keeps(coords, step):
                        continue  # superseded by a later segment, or not inherited
                    kept.append((coords.get(outer, -1) if outer else -1,
                                 rank * 1_000_000 + order, *row))
    if len(found) < 2:
        return found.get(0, [])
    cuts = cutoffs({rank: _rewinds(rows) for rank, rows in found.items()})
    return [row for rank, rows in found.items() for row in rows
            if still_read(cuts[rank], row[5], row[6])]


def _rewinds(rows: list[tuple]) -> dict[str, int]:
    """Rewind points of one stretch's new values (store.segments' rule)."""
    points: dict[str, int] = {}
    for row in rows:
        coords, step = row[5], row[6]
        if coords:
            kind, low = next(iter(coords.items()))
        elif step >= 0:
            kind, low = RUN_LEVEL, step
        else:
            continue
        points[kind] = min(points.get(kind, low), low)
    return points


def stretch_event(job: Job) -> dict[str, Any]:
    """The replay event's record of each stretch's own code (empty for a whole run)."""
    if not job.group:
        return {}
    return {"workers": sum(len(m.tasks) for m in job.group), "stretches": [
        {"label": m.stretch.label, "run": m.stretch.run_id, "segment": m.stretch.segment,
         "snapshot": m.snapshot, "code_version": m.version, "script": m.relpath,
         "placements": m.placements, "patch": m.diff, "workers": len(m.tasks)}
        for m in job.group if m.stretch is not None]}


def replan_inner(runnable: list[Job]) -> list[Job]:
    """The jobs of runs whose replay skipping inner loops crashed, re-planned to
    re-execute them (a run's jobs all go again: it gets values from all or none)."""
    retry = [m for j in runnable if j.outcome.status == "failed" and j.plan
             and j is members(j)[0] and skipping_failed(j) for m in members(j)]
    for job in retry:
        assert job.plan is not None
        first_error = job.outcome.message.splitlines()[-2:-1]
        job.plan = plan_run(job.plan.info, force_inner(job.plan))
        if first_error or not job.outcome.notes[-1:] or "inner loops skipped" not in \
                job.outcome.notes[-1]:
            job.outcome.notes.append(
                "replaying with inner loops skipped failed ("
                + (first_error[0].strip() if first_error else "error")
                + "); re-executed them instead")
        job.outcome.strategy = job.plan.strategy
        summarize(job)
        job.attempt += 1
        job.finished = False
        job.results = {}
        job.outcome.status = "planned"
        job.outcome.message = ""
    return retry


def skipping_failed(job: Job) -> bool:
    """A worker of the run crashed (not killed by a signal) after skipping an inner
    loop: worth one more try re-executing inner loops."""
    if "UntrustedCheckpoint" in job.outcome.message:
        return False  # a checkpoint failed its digest check: refuse, never work around it
    for member in members(job):
        for task in member.tasks:
            result = member.results.get(task.id)
            if (result is None or result.ok or result.returncode is None
                    or result.returncode < 0):
                continue
            if "skipped" in progress(task.scratch)[1]:
                return True
    return False
