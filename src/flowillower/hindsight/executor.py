"""Running replay tasks: the seam every engine plugs into, and a local process pool.

A task is a command (argv, working directory, environment, scratch directory) on this
machine. The planner never sees how tasks run: an engine implements `Executor.run`,
usually by mixing in `task_loop.TaskLoop` (the one poll loop: worker bound, progress,
failures, Ctrl-C) and saying only how to submit, wait for, collect and cancel a task. A
cluster engine packs each task into a self-contained payload (`task.py`) so that its
workers need no shared filesystem (`ray_executor.py`, `slurm_executor.py`);
`engines.make_executor` picks one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import IO, NamedTuple

from .task_loop import Task, TaskLoop, TaskResult

__all__ = ["Executor", "LocalExecutor", "Task", "TaskResult"]


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


class _Proc(NamedTuple):
    proc: subprocess.Popen
    log: IO[bytes]


class LocalExecutor(TaskLoop, Executor):
    """Subprocesses on this machine."""

    poll_interval = 0.05
    label = "local"

    def submit(self, task: Task) -> _Proc:
        log = open(task.log_path, "wb")
        try:
            # Own session: a Ctrl-C in the terminal reaches only us; we stop the workers
            # ourselves and know which parts are incomplete.
            proc = subprocess.Popen(task.argv, cwd=task.cwd, env=task.env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except BaseException:
            log.close()
            raise
        return _Proc(proc, log)

    def wait(self, handles: list[_Proc], timeout: float) -> list[_Proc]:
        done = [h for h in handles if h.proc.poll() is not None]
        if not done:
            time.sleep(timeout)
        return done

    def collect(self, handle: _Proc, task: Task) -> int | None:
        handle.log.close()
        return handle.proc.returncode

    def cancel(self, handle: _Proc) -> int | None:
        _stop(handle.proc)
        handle.log.close()
        return handle.proc.returncode


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
