"""`fw.replay` / `flowillower replay`: orchestrating hindsight replays of past runs.

For each selected run lacking some of the named values: admit it (trust), have its job
prepared (the current script's new `fw.log` statements transplanted into its code
snapshot, a plan from its checkpoints: jobs.py), run the plan's worker processes inside
an extracted copy of the old code (never the user's working tree), then merge their
values and hand them to the store, which writes them into the original run as
`replays/<replay_id>.fwl` with the loop coordinates they would have had originally. A
failed or interrupted run gets nothing (the file is renamed into place only when
complete); the other runs go on. What is printed is composed in console.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import FlowillowerError
from ..queries.filters import row_filter
from ..store.catalog import Store
from ..store.format import write_replay_file
from ..store.layout import new_run_id
from .console import describe, progress_line
from .executor import Executor, Task, TaskResult
from .frames import original_times
from .groups import (
    all_done,
    collect,
    failures,
    members,
    replan_inner,
    stretch_event,
    stretch_jobs,
    summarize,
)
from .jobs import Job, materialize, prepare_job
from .planner import load_run_info, schedule
from .report import ReplayReport, RunOutcome, report_json
from .transplant import TransplantError
from .trust import Origin, TrustArg, TrustPolicy, left_out_summary, origin
from .watch_replay import WatchRequest, asked, watch_request

__all__ = ["ReplayError", "ReplayReport", "RunOutcome", "replay", "report_json",
           "run_replay"]


class ReplayError(FlowillowerError):
    """A replay could not even start (bad names, no store...)."""


def _split_names(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        out += [n.strip() for n in str(item).split(",") if n.strip()]
    if not out:
        raise ReplayError("name at least one value to replay, e.g. replay('grad_norm')")
    return list(dict.fromkeys(out))


class _Replayer:
    def __init__(self, names: list[str], runs: str | None, workers: int, yes: bool,
                 dir: str | os.PathLike[str] | None, script: str | os.PathLike[str] | None,
                 echo: Callable[[str], None], confirm: Callable[[str], bool] | None,
                 executor: Executor | str | None, trust: TrustArg = False,
                 watch: WatchRequest | None = None) -> None:
        self.names, self.watch = names, watch
        self.shown = names + ([watch.label] if watch else [])  # what is printed as asked
        self.trust = TrustPolicy(trust)
        self.left_out: list[Origin] = []  # runs from elsewhere, not trusted
        self.filter = runs
        self.workers = max(1, int(workers))
        self.yes = yes
        self.store = Store(dir, must_exist=True)
        self.script = Path(script).resolve() if script else None
        self.echo = echo
        self.confirm = confirm
        # A name or None ($FLOWILLOWER_REPLAY_EXECUTOR): made, opened and closed here.
        self._owns_executor = executor is None or isinstance(executor, str)
        if self._owns_executor:
            from .engines import make_executor

            executor = make_executor(executor, self.workers, echo=echo)
        assert executor is not None
        self.executor = executor
        self.replay_id = new_run_id()
        self.jobs: list[Job] = []
        self._progress_shown = 0.0
        self._progress_text = ""

    # -- selecting runs and planning ----------------------------------------------------------
    def select(self) -> list[RunOutcome]:
        outcomes = []
        where = row_filter(self.filter) if self.filter else None
        for row in self.store.runs(where, include_hidden=False):
            run_id = row["id"]
            metrics = row.get("metrics", {})
            missing = [n for n in self.names if n not in metrics]
            refused = self.watch.add_missing(metrics, missing) if self.watch else ""
            outcome = RunOutcome(run_id, "complete", missing)
            if not missing:
                outcome.status, outcome.message = ("skipped", refused) if refused else (
                    "complete", "already has every value")
            elif row.get("status") == "running":
                outcome.status = "skipped"
                outcome.message = "still running; replay it once it has ended"
            else:
                self._admit(outcome)
            outcomes.append(outcome)
        return outcomes

    def _admit(self, outcome: RunOutcome) -> None:
        """Plan a run only if it was made here or the user trusts where it came from:
        replaying executes its code (`-y` never implies trust)."""
        try:
            run_dir = self.store.run_dir(outcome.run_id)  # a real run folder in runs/
        except FlowillowerError as exc:
            outcome.status, outcome.message = "failed", str(exc)
            return
        run = origin(self.store.root, run_dir)
        outcome.origin = run.describe()
        if self.trust.allows(run):
            outcome.status = "planned"
            self.jobs.append(Job(outcome))
            return
        outcome.status = "skipped"
        outcome.message = self.trust.refusal(run)
        self.left_out.append(run)

    def _prepare(self, job: Job) -> list[Job]:
        """Transplant and plan the run's jobs: itself, or one per stretch of a resumed
        run or a fork (each with its own code version and checkpoints:
        `groups.stretch_jobs`)."""
        group = stretch_jobs(job, self.store, self.script, self.trust.allows)
        if group is not None:
            return group
        prepare_job(job, load_run_info(self.store.run_dir(job.outcome.run_id)),
                    self.store, self.script)
        return [job]

    def prepare_run(self, job: Job) -> list[Job]:
        """The run's jobs, planned; with `--watch`, each re-planned to watch the model
        (the request has no statement to transplant: it is left out until then)."""
        if self.watch is None:
            return self._prepare(job)
        with self.watch.hidden(job.outcome) as wanted:
            group = self._prepare(job)
        if wanted:
            for member in group:
                assert member.plan is not None
                self.watch.plan(member, member.plan.info)
        return group

    def plan_all(self) -> float:
        planned: list[Job] = []
        for job in self.jobs:
            try:
                planned += self.prepare_run(job)
                continue
            except (TransplantError, FlowillowerError) as exc:
                job.outcome.message = str(exc)
            except Exception as exc:  # a damaged run must not stop the others
                job.outcome.message = f"could not plan this run: {type(exc).__name__}: {exc}"
            job.outcome.status, job.finished = "failed", True
            planned.append(job)
        self.jobs = planned
        live = [j for j in self.jobs if j.plan is not None and j.outcome.names]
        for job in self.jobs:
            if job.plan is not None and not job.outcome.names:
                job.outcome.status = "skipped"
                job.outcome.message = "nothing left that this run can replay"
                job.finished = True
        estimate = schedule([j.plan for j in live if j.plan], self.workers,
                            self.executor.task_overhead_s)
        for job in live:
            summarize(job)
        return estimate

    # -- running -------------------------------------------------------------------------
    def on_done(self, task: Task, result: TaskResult) -> None:
        job: Job = task.meta["job"]
        job.results[task.id] = result
        if all_done(job):
            self.finalize(job)

    def on_tick(self) -> None:
        now = time.perf_counter()
        if now - self._progress_shown < 1.0:
            return
        self._progress_shown = now
        text = progress_line(self.jobs)
        if text and text != self._progress_text:
            self._progress_text = text
            self.echo(text)

    def finalize(self, job: Job) -> None:
        """All tasks of a run ended: merge their values into the run, or report why not."""
        out = job.outcome
        for member in members(job):
            member.finished = True
        out.seconds = time.perf_counter() - min(m.started for m in members(job))
        found: list[str] = []
        for member in members(job):
            interrupted, why = failures(member)
            if interrupted:
                out.status = "interrupted"
                out.message = "interrupted before it finished: no values written"
                return
            found += why
        if found:
            out.status = "failed"
            out.message = "\n".join(found) + "\nno values were written for this run"
            return
        try:
            self.merge(job)
        except Exception as exc:  # never leave half a file behind
            out.status = "failed"
            out.message = f"could not write the replayed values: {type(exc).__name__}: {exc}"
            return
        out.status = "replayed"
        empty = [n for n in out.names if not out.values.get(n)]
        if empty:
            out.notes.append(f"no values were produced for {', '.join(empty)} (the statement "
                             "never ran in this run)")

    def merge(self, job: Job) -> None:
        """Collect the wanted values of every task and write one replay file atomically."""
        assert job.plan is not None
        out = job.outcome
        run_dir = self.store.run_dir(out.run_id)
        watch = asked(self.watch, out)
        rows = collect(job, watch.rows if watch else None)
        rows.sort(key=lambda r: (r[0], r[1]))
        times = original_times(run_dir)
        counts: dict[str, int] = {}
        final_rows = []
        for _i, _o, name, role, kind, coords, step, when, value in rows:
            when = times.get(tuple(coords.items()), when)
            final_rows.append((name, role, kind, coords, step, when, value))
            counts[name] = counts.get(name, 0) + 1
        event = {
            "event": "replay", "replay_id": self.replay_id, "names": out.names,
            "snapshot": job.snapshot, "script": job.relpath, "code_version": out.code_version,
            "strategy": out.strategy, "placements": job.placements, "patch": job.diff,
            "workers": len(job.tasks), **stretch_event(job),
        }
        if watch:
            event["watch"], counts = watch.event(), watch.fold(counts, out.names)
        final = write_replay_file(run_dir, self.replay_id, final_rows, [event])
        out.values = counts
        out.replay_file = str(final)

    # -- the whole thing ------------------------------------------------------------------
    def run(self) -> ReplayReport:
        if not self._owns_executor:
            return self._run()
        self.executor.open()
        try:
            return self._run()
        finally:
            self.executor.close()

    def _run(self) -> ReplayReport:
        t0 = time.perf_counter()
        outcomes = self.select()
        report = ReplayReport(self.replay_id, self.shown, outcomes)
        if self.left_out:
            self.echo(left_out_summary(self.left_out))
        if not self.jobs:
            if not self.left_out:  # otherwise the line above said why
                self.echo("nothing to replay: " + ("every selected run already has "
                          + ", ".join(self.shown) if outcomes else "no runs match"))
            return report
        estimate = self.plan_all()
        report.estimate = estimate
        self.echo(describe(self.shown, self.workers, self.jobs, estimate))
        runnable = [j for j in self.jobs if not j.finished]
        if not runnable:
            report.seconds = time.perf_counter() - t0
            return report
        if not self.yes:
            ask = self.confirm or _ask
            if not ask("Replay now? [y/N] "):
                report.cancelled = True
                for job in runnable:
                    job.outcome.status = "skipped"
                    job.outcome.message = "not confirmed"
                return report
        base = Path(tempfile.mkdtemp(prefix="flowillower-replay-"))
        try:
            self._execute(runnable, base, report)
            # Skipping inner loops relies on the code after them not needing their locals;
            # a run whose skipping replay crashed gets one more try re-executing them.
            retry = [] if report.interrupted else replan_inner(runnable)
            if retry:
                schedule([j.plan for j in retry if j.plan], self.workers,
                         self.executor.task_overhead_s)
                self._execute(retry, base, report)
        finally:
            if not os.environ.get("FLOWILLOWER_KEEP_REPLAY_DIR"):
                shutil.rmtree(base, ignore_errors=True)
        report.seconds = time.perf_counter() - t0
        self.echo(str(report))
        return report

    def _execute(self, jobs: list[Job], base: Path, report: ReplayReport) -> None:
        tasks: list[Task] = []
        for job in jobs:
            try:
                materialize(job, base, self.store.git_dir)
                if watch := asked(self.watch, job.outcome):
                    watch.annotate(job)
            except FlowillowerError as exc:
                job.outcome.status = "failed"
                job.outcome.message = str(exc)
                job.finished = True
                continue
            job.started = time.perf_counter()
            tasks += job.tasks
        for job in jobs:  # a run gets values from all of its jobs or none
            if job.finished and job.group:
                for member in job.group:
                    member.finished = True
        tasks = [t for t in tasks if not t.meta["job"].finished]
        tasks.sort(key=lambda t: -t.estimate)  # longest first: the best makespan
        self.executor.run(tasks, self.on_done, self.on_tick)
        if self.executor.interrupted:
            report.interrupted = True
            for job in jobs:
                if not job.finished:
                    for task in job.tasks:
                        job.results.setdefault(task.id, TaskResult(task.id, None, 0.0, True))
                    self.finalize(job)


def _ask(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def replay(names: str | Iterable[str] = (), runs: str | None = None, workers: int = 1,
           yes: bool = False, dir: str | os.PathLike[str] | None = None,
           script: str | os.PathLike[str] | None = None, *,
           echo: Callable[[str], None] | None = None,
           confirm: Callable[[str], bool] | None = None,
           executor: Executor | str | None = None, trust: TrustArg = False,
           watch: str | None = None, watch_every: int = 1,
           force_watch: bool = False) -> ReplayReport:
    """Fill in values past runs never logged: `fw.replay("grad_norm", runs="lr < 0.01")`.

    `names`: value names (a list or "a,b"); `runs`: a run filter (see `fw.dataframe`);
    `workers`: processes to run at once (outer iterations are split among them); `yes`:
    do not ask before starting; `script`: the current script holding the new `fw.log`
    statements (default: each run's own script in the working tree). `trust`: runs
    that came from elsewhere (pulled, or recorded on another host) are left out unless
    trusted: True (all of them) or author names (runs whose recorded authors are all
    among them); their code would run on this machine. Prints the schedule (with each
    run's author and host) and progress through `echo`. `executor`: where tasks run —
    "local" (this machine's processes), "ray" / "ray=HOST:PORT" (a Ray cluster),
    "slurm" / "slurm=FOLDER" (Slurm jobs through submitit), an `Executor`, or None
    ($FLOWILLOWER_REPLAY_EXECUTOR, else local). `watch`: `fw.watch` statistics for runs
    that never watched the model they registered under that name with `fw.checkpointing`
    (`watch_every` as `fw.watch`'s `every`; `force_watch`: runs that already have some;
    see docs/hindsight.md). Returns a `ReplayReport`. Ctrl-C stops the
    workers, leaves unfinished runs without values, prints the report and re-raises
    KeyboardInterrupt.
    """
    report = run_replay(names, runs, workers, yes, dir, script, echo=echo, confirm=confirm,
                        executor=executor, trust=trust, watch=watch, watch_every=watch_every,
                        force_watch=force_watch)
    if report.interrupted:
        raise KeyboardInterrupt
    return report


def run_replay(names: str | Iterable[str] = (), runs: str | None = None, workers: int = 1,
               yes: bool = False, dir: str | os.PathLike[str] | None = None,
               script: str | os.PathLike[str] | None = None, *,
               echo: Callable[[str], None] | None = None,
               confirm: Callable[[str], bool] | None = None,
               executor: Executor | str | None = None, trust: TrustArg = False,
               watch: str | None = None, watch_every: int = 1,
               force_watch: bool = False) -> ReplayReport:
    """`replay` that returns the report even when interrupted (used by the CLI)."""
    request = watch_request(watch, watch_every, force_watch)
    wanted = _split_names(names) if names or request is None else []
    emit = echo or (lambda text: print(text, file=sys.stderr, flush=True))
    replayer = _Replayer(wanted, runs, workers, yes, dir, script, emit, confirm, executor,
                         trust, request)
    return replayer.run()
