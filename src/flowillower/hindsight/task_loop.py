"""The one loop that runs replay tasks, whatever the engine (local processes, Ray, Slurm).

An engine says only how to talk to its workers, through four methods of `TaskLoop`:
`submit` a task (returns a handle), `wait` up to a poll interval for some handles to
finish, `collect` a finished one (its files into the task's scratch folder, its exit
status back) and `cancel` one. The loop does the rest, the same for every engine: at most
`workers` tasks at once, in the order given; `on_done` as each ends; a task whose submit
or collect raises is that task's failure (the reason goes into its log) and the others
go on; a `<label> segments: <run> N done, N running, N queued` line at most once a second
and only when it changed; `on_tick` on every pass; on Ctrl-C every running task is
cancelled and the unfinished ones are marked interrupted. Nothing here imports an engine.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .task import write_failure


@dataclass
class Task:
    """One worker process of a replay."""

    id: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    scratch: Path
    estimate: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)  # opaque to executors

    @property
    def log_path(self) -> Path:
        return self.scratch / "output.log"


@dataclass
class TaskResult:
    """How a task ended."""

    task_id: str
    returncode: int | None
    seconds: float
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.interrupted


class TaskFailed(Exception):
    """Raised by an engine's `collect` when its task produced nothing; the message is
    written to the task's log as it is (say which engine and why)."""


@dataclass
class _Running:
    handle: Any
    task: Task
    started: float


class TaskLoop(ABC):
    """The shared loop, mixed into an `executor.Executor` (`class X(TaskLoop, Executor)`):
    it keeps the executor's `workers` bound and sets its `interrupted` flag."""

    workers: int
    interrupted: bool
    poll_interval: float = 0.2  # the longest `wait` blocks before the loop looks again
    label: str = ""  # the engine's name in progress and failure lines ("ray")
    echo: Callable[[str], None] | None = None  # where progress goes (None: nowhere)
    clock: Callable[[], float] = time.perf_counter  # tests give a fake one per instance

    # -- what an engine says -----------------------------------------------------------
    def begin(self, tasks: list[Task]) -> None:  # noqa: B027 - most need nothing
        """Get ready to run `tasks` (connect, prepare shared inputs); an error here stops
        the whole run."""

    def end(self) -> None:  # noqa: B027
        """Release what `begin` and the tasks took (called however the run ended)."""

    def summary(self) -> str:
        """A last line for `echo` after a run ("" for none)."""
        return ""

    @abstractmethod
    def submit(self, task: Task) -> Any:
        """Start `task`; a handle (hashable: it keys the running tasks) that the other
        methods get back."""

    @abstractmethod
    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among `handles` that finished, waiting up to `timeout` seconds
        for at least one."""

    @abstractmethod
    def collect(self, handle: Any, task: Task) -> int | None:
        """A finished task's exit status, its results written into `task.scratch`;
        raise `TaskFailed` (or anything) when it produced nothing."""

    @abstractmethod
    def cancel(self, handle: Any) -> int | None:
        """Stop a running task; its exit status if one is known."""

    # -- the loop ----------------------------------------------------------------------
    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        """Run every task (see the module's docstring); never raises on Ctrl-C."""
        pending = list(tasks)
        running: dict[Any, _Running] = {}  # handle ->
        results: dict[str, TaskResult] = {}
        shown, shown_at = "", float("-inf")

        def finish(task: Task, code: int | None, started: float) -> None:
            result = TaskResult(task.id, code, self.clock() - started)
            results[task.id] = result
            on_done(task, result)

        self.begin(tasks)
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task, started = pending[0], self.clock()
                    try:
                        task.scratch.mkdir(parents=True, exist_ok=True)
                        handle = self.submit(task)
                    except Exception as exc:  # this task only: the others go on
                        pending.pop(0)
                        self._failed(task, "could not start the task", exc)
                        finish(task, None, started)
                        continue
                    pending.pop(0)
                    running[handle] = _Running(handle, task, started)
                now = self.clock()
                if self.echo is not None and now - shown_at >= 1.0:
                    line = segments_line(self.label, tasks, results,
                                         {r.task.id for r in running.values()})
                    if line != shown:
                        self.echo(line)
                        shown, shown_at = line, now
                if on_tick is not None:
                    on_tick()
                if not running:
                    continue
                for handle in self.wait([r.handle for r in running.values()],
                                        self.poll_interval):
                    entry = running[handle]
                    try:
                        code = self.collect(handle, entry.task)
                    except Exception as exc:  # its failure, reported; the others go on
                        self._failed(entry.task, "could not collect the task's result", exc)
                        code = None
                    del running[handle]
                    finish(entry.task, code, entry.started)
        except KeyboardInterrupt:
            self.interrupted = True
            for entry in running.values():
                code = self._cancel(entry.handle)
                results[entry.task.id] = TaskResult(entry.task.id, code,
                                                    self.clock() - entry.started, True)
            for task in pending:
                results[task.id] = TaskResult(task.id, None, 0.0, interrupted=True)
        except BaseException:
            for entry in running.values():  # nothing keeps running on a crashed driver
                self._cancel(entry.handle)
            raise
        finally:
            self.end()
        if self.echo is not None and (last := self.summary()):
            self.echo(last)
        return results

    def _cancel(self, handle: Any) -> int | None:
        try:
            return self.cancel(handle)
        except Exception:  # one task that will not stop must not keep the others going
            return None

    def _failed(self, task: Task, what: str, exc: Exception) -> None:
        if isinstance(exc, TaskFailed):
            reason = str(exc)
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            reason = f"{self.label or 'executor'}: {what}: {type(exc).__name__}: {first}"
        try:
            write_failure(task.scratch, reason)
        except OSError:
            pass  # a full or read-only disk: the exit status still says it failed


def segments_line(label: str, tasks: list[Task], results: dict[str, TaskResult],
                  running: set[str]) -> str:
    """`<label> segments: <run> 2 done, 1 running, 3 queued; <run> ...`, one part per run
    (its id's last 8 characters) in the order the tasks came."""
    runs: dict[str, list[int]] = {}
    for task in tasks:
        run = str(task.meta["plan"].run_id)[-8:] if "plan" in task.meta else task.id
        counts = runs.setdefault(run, [0, 0, 0])
        counts[0 if task.id in results else 1 if task.id in running else 2] += 1
    parts = [f"{run} {d} done, {r} running, {q} queued" for run, (d, r, q) in runs.items()]
    return f"{label} segments: ".lstrip() + "; ".join(parts)
