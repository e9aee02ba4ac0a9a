"""Replay tasks as Slurm jobs through `submitit` (`--executor slurm[=FOLDER]`).

Slurm moves a job's inputs and outputs through a folder on the cluster's shared disk
(that is how `sbatch` and `submitit` work: the pickled call and its pickled result live
there), so that folder is the one shared path: each run's snapshot and each checkpoint
file a segment needs (`task.Packer`, one archive per capture) are written there once,
and a segment reads only the captures it starts from. Workers still never read the store, the user's repository or the driver's
disk: only the submitit folder (default `~/.flowillower-submitit`, or
`$FLOWILLOWER_SUBMITIT_FOLDER`). A job that dies without a result (pre-empted, node
lost, OOM-killed, cancelled by an administrator) is submitted again up to `max_retries`
times; Ctrl-C cancels every job (`scancel`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .executor import Executor, Task, TaskResult
from .task import Packer, run_payload, unpack_result, write_failure

FOLDER_ENV = "FLOWILLOWER_SUBMITIT_FOLDER"


def _slurm_entry(payload: dict[str, Any], tree: str, *ckpts: str) -> dict[str, Any]:
    """What a Slurm job runs: the task, from the archives in the submitit folder."""
    tree_bytes = Path(tree).read_bytes()
    return run_payload(payload, tree_bytes, *(Path(c).read_bytes() for c in ckpts))


class SlurmExecutor(Executor):
    """Runs replay tasks as submitit jobs (`cluster="slurm"`; "local" runs submitit's
    local executor: the same code path without `sbatch`)."""

    poll_interval = 1.0

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

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        ex = self._executor()
        packer = Packer()
        shared = self.folder / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def archive(key: str | None) -> str | None:
            if key is None:
                return None
            path = shared / (key.replace(":", "-") + ".tar")
            if path not in written:
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(packer.shared(key) or b"")
                os.replace(tmp, path)
                written.append(path)
            return str(path)

        pending = list(tasks)
        running: dict[str, tuple[Task, Any, tuple, float]] = {}
        results: dict[str, TaskResult] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task = pending.pop(0)
                    task.scratch.mkdir(parents=True, exist_ok=True)
                    payload = packer.pack(task)
                    args = (dict(payload.__dict__), archive(payload.tree_key),
                            *[archive(k) for k in payload.ckpt_parts])
                    running[task.id] = (task, ex.submit(_slurm_entry, *args), args,
                                        time.perf_counter())
                    self.attempts[task.id] = 1
                for task_id, (task, job, args, t0) in list(running.items()):
                    gone = not job.done() and self._vanished(job)
                    if not job.done() and not gone:
                        continue
                    try:
                        if gone:
                            raise RuntimeError(f"job {job.job_id} left the queue without a "
                                               "result")
                        out = job.result()
                    except Exception as exc:  # the job died without a result
                        if self.attempts[task_id] <= self.max_retries:
                            self.attempts[task_id] += 1
                            running[task_id] = (task, ex.submit(_slurm_entry, *args), args,
                                                t0)
                            continue
                        reason = str(exc).strip().splitlines()
                        write_failure(task.scratch, f"slurm: job {job.job_id} failed after "
                                      f"{self.max_retries} retries: {type(exc).__name__}: "
                                      + (reason[0] if reason else ""))
                        out = None
                    del running[task_id]
                    if out is not None:
                        unpack_result(task.scratch, out)
                    result = TaskResult(task_id, out["returncode"] if out else None,
                                        time.perf_counter() - t0)
                    results[task_id] = result
                    on_done(task, result)
                if on_tick is not None:
                    on_tick()
                if running:
                    time.sleep(self.poll_interval)
        except KeyboardInterrupt:
            self.interrupted = True
            for task_id, (_task, job, _args, t0) in running.items():
                try:
                    job.cancel(check=False)
                except Exception:
                    pass
                results[task_id] = TaskResult(task_id, None, time.perf_counter() - t0,
                                              interrupted=True)
            for task in pending:
                results[task.id] = TaskResult(task.id, None, 0.0, interrupted=True)
        finally:
            for path in written:
                path.unlink(missing_ok=True)
        return results
