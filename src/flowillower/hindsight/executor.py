"""Running replay tasks: a small interface, and a local process pool behind it.

A task is a command (argv, working directory, environment, scratch directory) on this
machine. The planner never sees how tasks run: a cluster engine implements
`Executor.run`, packing each task into a self-contained payload (`task.py`) so that its
workers need no shared filesystem (`ray_executor.py`); `engines.make_executor` picks one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


class Executor(ABC):
    """Runs tasks with at most `workers` at a time."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.interrupted = False

    @property
    def task_overhead_s(self) -> float:
        """Seconds one task costs the engine besides its own work (0: a local process's
        start is part of the run's recorded set-up)."""
        return 0.0

    def open(self) -> None:  # noqa: B027 - most engines have nothing to connect to
        """Connect to the engine (a cluster sets `workers` to its size unless given)."""

    def close(self) -> None:  # noqa: B027
        """Release what the executor holds (a cluster connection)."""

    @abstractmethod
    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        """Run every task (in the given order); call `on_done` as each one finishes and
        `on_tick` now and then. On KeyboardInterrupt: stop everything, mark unfinished
        tasks interrupted, set `self.interrupted` and return (never raise)."""


class LocalExecutor(Executor):
    """Subprocesses on this machine."""

    poll_interval = 0.05

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        pending = list(tasks)
        running: dict[str, tuple[Task, subprocess.Popen, float, Any]] = {}
        results: dict[str, TaskResult] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task = pending.pop(0)
                    task.scratch.mkdir(parents=True, exist_ok=True)
                    log = open(task.log_path, "wb")
                    # Own session: a Ctrl-C in the terminal reaches only us; we stop the
                    # workers ourselves and know which parts are incomplete.
                    proc = subprocess.Popen(task.argv, cwd=task.cwd, env=task.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                    running[task.id] = (task, proc, time.perf_counter(), log)
                for task_id, (task, proc, t0, log) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    log.close()
                    del running[task_id]
                    result = TaskResult(task_id, code, time.perf_counter() - t0)
                    results[task_id] = result
                    on_done(task, result)
                if on_tick is not None:
                    on_tick()
                if running:
                    time.sleep(self.poll_interval)
        except KeyboardInterrupt:
            self.interrupted = True
            for task_id, (_task, proc, t0, log) in running.items():
                _stop(proc)
                log.close()
                results[task_id] = TaskResult(task_id, proc.returncode,
                                              time.perf_counter() - t0, interrupted=True)
            for task in pending:
                results[task.id] = TaskResult(task.id, None, 0.0, interrupted=True)
        return results


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGINT, then SIGKILL after `grace` seconds, to the worker's process group."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, grace)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
