"""Replay tasks as Slurm jobs through `submitit` (`--executor slurm[=FOLDER]`).

Slurm moves a job's inputs and outputs through a folder on the cluster's shared disk
(that is how `sbatch` and `submitit` work: the pickled call and its pickled result live
there), so that folder is the one shared path: each run's snapshot and each checkpoint
file a segment needs (`task.Packer`, one archive per capture) are written there once,
and a segment reads only the captures it starts from. Workers still never read the
store, the user's repository or the driver's disk: only the submitit folder (default
`~/.flowillower-submitit`, or `$FLOWILLOWER_SUBMITIT_FOLDER`). A job that dies without a
result (pre-empted, node lost, OOM-killed, cancelled by an administrator) is submitted
again up to `max_retries` times; Ctrl-C cancels every job (`scancel`). The loop around
these (worker bound, progress, Ctrl-C) is `task_loop.TaskLoop`, shared with the other
engines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .executor import Executor
from .task import Packer, run_payload, unpack_result
from .task_loop import Task, TaskFailed, TaskLoop

FOLDER_ENV = "FLOWILLOWER_SUBMITIT_FOLDER"


def _slurm_entry(payload: dict[str, Any], tree: str, *ckpts: str) -> dict[str, Any]:
    """What a Slurm job runs: the task, from the archives in the submitit folder."""
    tree_bytes = Path(tree).read_bytes()
    return run_payload(payload, tree_bytes, *(Path(c).read_bytes() for c in ckpts))


class SlurmExecutor(TaskLoop, Executor):
    """Runs replay tasks as submitit jobs (`cluster="slurm"`; "local" runs submitit's
    local executor: the same code path without `sbatch`)."""

    poll_interval = 1.0
    label = "slurm"

    def __init__(self, folder: str | os.PathLike[str] | None = None, workers: int | None = None,
                 cluster: str = "slurm", max_retries: int = 2, timeout_min: int = 24 * 60,
                 echo: Callable[[str], None] | None = None,
                 parameters: dict[str, Any] | None = None) -> None:
        super().__init__(workers or 8)
        self.folder = Path(folder or os.environ.get(FOLDER_ENV)
                           or Path.home() / ".flowillower-submitit")
        self.cluster = cluster
        self.max_retries = max_retries
        self.timeout_min = timeout_min
        self.echo = echo
        self.parameters = dict(parameters or {})
        self.attempts: dict[str, int] = {}  # task id -> jobs submitted for it
        self.bytes_written = 0  # archive bytes written to the submitit folder (each once)
        self._ex: Any = None
        self._packer: Packer | None = None
        self._shared = self.folder / "shared"
        self._written: list[Path] = []

    def _executor(self) -> Any:
        try:
            import submitit
        except ImportError:
            from ..errors import FlowillowerError

            raise FlowillowerError("the slurm executor needs submitit: pip install "
                                   "'flowillower[slurm]'") from None
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            from ..errors import FlowillowerError

            raise FlowillowerError("no sbatch on this machine: run the replay on a Slurm "
                                   "login node")
        ex = submitit.AutoExecutor(folder=self.folder / "jobs", cluster=self.cluster)
        ex.update_parameters(timeout_min=self.timeout_min, cpus_per_task=1,
                             name="flowillower-replay", **self.parameters)
        return ex

    def _vanished(self, job: Any) -> bool:
        """The job is no longer queued or running and left no result. (submitit asks
        `sacct`, which needs Slurm's accounting database; a cluster without one never
        reports a killed job as done.)"""
        if self.cluster != "slurm":
            return False
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(job.job_id)], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if out.returncode != 0 or out.stdout.strip():
            return False
        return not Path(job.paths.result_pickle).exists()

    # -- running: what the shared loop (`task_loop.TaskLoop`) asks of submitit ----------
    def begin(self, tasks: list[Task]) -> None:
        self._ex = self._executor()
        self._packer = Packer()
        self._shared = self.folder / "shared"
        self._shared.mkdir(parents=True, exist_ok=True)

    def end(self) -> None:
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written, self._packer = [], None

    def _archive(self, key: str | None) -> str | None:
        """The path of a shared archive in the submitit folder, written once per run."""
        if key is None:
            return None
        path = self._shared / (key.replace(":", "-") + ".tar")
        if path not in self._written:
            assert self._packer is not None
            data = self._packer.shared(key) or b""
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._written.append(path)
            self.bytes_written += len(data)
        return str(path)

    def submit(self, task: Task) -> _Job:
        assert self._packer is not None
        payload = self._packer.pack(task)
        args = (dict(payload.__dict__), self._archive(payload.tree_key),
                *[self._archive(k) for k in payload.ckpt_parts])
        job = _Job(task.id, self._ex.submit(_slurm_entry, *args), args)
        self.attempts[task.id] = 1
        return job

    def wait(self, handles: list[_Job], timeout: float) -> list[_Job]:
        done = [h for h in handles if self._settled(h)]
        if not done:
            time.sleep(timeout)
        return done

    def _settled(self, handle: _Job) -> bool:
        """Whether the job ended for good: with a result, or without one and no retry
        left (a job that died without a result is submitted again)."""
        job = handle.job
        gone = not job.done() and self._vanished(job)
        if not job.done() and not gone:
            return False
        try:
            if gone:
                raise RuntimeError(f"job {job.job_id} left the queue without a result")
            handle.out = job.result()
            return True
        except Exception as exc:  # the job died without a result
            if self.attempts[handle.task_id] <= self.max_retries:
                self.attempts[handle.task_id] += 1
                handle.job = self._ex.submit(_slurm_entry, *handle.args)
                return False
            reason = str(exc).strip().splitlines()
            handle.error = (f"slurm: job {job.job_id} failed after {self.max_retries} "
                            f"retries: {type(exc).__name__}: " + (reason[0] if reason else ""))
            return True

    def collect(self, handle: _Job, task: Task) -> int | None:
        if handle.error is not None:
            raise TaskFailed(handle.error)
        unpack_result(task.scratch, handle.out)
        return handle.out["returncode"]

    def cancel(self, handle: _Job) -> int | None:
        handle.job.cancel(check=False)
        return None

    def summary(self) -> str:
        if not self.attempts:
            return ""
        jobs = sum(self.attempts.values())
        return (f"slurm: {len(self.attempts)} task(s) as {jobs} job(s) "
                f"({jobs - len(self.attempts)} resubmitted); "
                f"{self.bytes_written / 1e6:.2f} MB written to {self._shared}")


@dataclass(eq=False)  # a handle: hashed by identity
class _Job:
    """One task's current submitit job, what it was submitted with, and how it ended."""

    task_id: str
    job: Any
    args: tuple
    out: Any = None
    error: str | None = None
