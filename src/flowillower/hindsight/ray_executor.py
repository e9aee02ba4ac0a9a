"""Replay tasks on a Ray cluster (`--executor ray[=ADDRESS]`, extra `flowillower[ray]`).

Workers share no disk with the driver: each task travels as a `task.Payload`; the run's
snapshot tree and each checkpoint file a segment needs go into Ray's object store once
(`ray.put`, one object per capture) and every segment that needs one gets the same
reference, so Ray moves each to a node at most once and a segment fetches only the
captures it starts from (`task.needed_files`). A worker process that dies mid-task (node lost, OOM kill) is retried by
Ray (`max_retries`); a task that still fails gets the reason in its log and fails its
run's replay only. Ctrl-C cancels every remote task (`ray.cancel(force=True)`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .executor import Executor, Task, TaskResult
from .task import Packer, run_payload, unpack_result, write_failure


def _remote_entry(payload: dict[str, Any], tree: bytes, *ckpts: bytes) -> dict[str, Any]:
    """What a Ray worker runs (module level: Ray imports it by name on the worker). The
    archives are top-level arguments: Ray resolves references only there."""
    import ray

    out = run_payload(payload, tree, *ckpts)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def _noop() -> float:
    return time.time()


class RayExecutor(Executor):
    """Runs replay tasks as Ray tasks (one CPU each), at most `workers` at a time."""

    poll_interval = 0.2

    def __init__(self, address: str | None = None, workers: int | None = None,
                 max_retries: int = 2, echo: Callable[[str], None] | None = None) -> None:
        super().__init__(workers or 1)
        self.address = address or "auto"
        self.max_retries = max_retries
        self.echo = echo
        self.explicit_workers = workers is not None
        self._connected_here = False
        self._overhead: float | None = None
        self.bytes_shipped: dict[str, int] = {}  # task id -> bytes of its inputs
        self.ckpt_shipped: dict[str, int] = {}  # task id -> of which checkpoint archives
        self.bytes_put = 0  # bytes put into the object store (each archive once)
        self.nodes: dict[str, str] = {}  # task id -> the Ray node that ran it

    # -- the cluster -------------------------------------------------------------------
    def connect(self) -> Any:
        """Connect to the cluster (once); returns the `ray` module."""
        host = self.address.rpartition(":")[0]
        if host in ("127.0.0.1", "localhost", "::1"):
            # Otherwise Ray swaps loopback for this machine's network address (it reads
            # this when imported).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            from ..errors import FlowillowerError

            raise FlowillowerError("the ray executor needs Ray: pip install "
                                   "'flowillower[ray]'") from None
        from ray._private import ray_constants

        if host in ("127.0.0.1", "localhost", "::1") and ray_constants.ENABLE_RAY_CLUSTER:
            from ..errors import FlowillowerError

            raise FlowillowerError(
                f"cannot reach a Ray cluster on loopback ({self.address}): Ray was imported "
                "before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set; set it in the "
                "environment first")
        if not ray.is_initialized():
            self._probe()
            try:
                ray.init(address=self.address, log_to_driver=False,
                         logging_level="ERROR", configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                from ..errors import FlowillowerError

                raise FlowillowerError(f"cannot connect to the Ray cluster at "
                                       f"{self.address}: {exc}") from None
            self._connected_here = True
            if not self.explicit_workers:
                self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return ray

    def _probe(self) -> None:
        """Fail at once when nothing listens at HOST:PORT (Ray itself retries for
        minutes)."""
        import socket

        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            return
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            from ..errors import FlowillowerError

            raise FlowillowerError(f"cannot connect to the Ray cluster at {self.address}: "
                                   f"{exc.strerror or exc}") from None

    def open(self) -> None:
        self.connect()

    def close(self) -> None:
        """Disconnect if this executor connected (the cluster keeps running)."""
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    @property
    def task_overhead_s(self) -> float:
        """Measured cost of one Ray task round trip (median of 5 empty tasks), seconds."""
        if self._overhead is None:
            ray = self.connect()
            noop = ray.remote(num_cpus=1)(_noop)
            ray.get(noop.remote())  # a worker process may have to start: not counted
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                ray.get(noop.remote())
                times.append(time.perf_counter() - t0)
            self._overhead = sorted(times)[len(times) // 2]
        return self._overhead

    # -- running -------------------------------------------------------------------------
    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        ray = self.connect()
        # SPREAD: segments of one run go to different nodes first (each node then
        # fetches the run's archives once).
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries,
                            scheduling_strategy="SPREAD")(_remote_entry)
        packer = Packer()
        refs: dict[str, Any] = {}
        pending = list(tasks)
        running: dict[Any, tuple[Task, float]] = {}
        results: dict[str, TaskResult] = {}

        def shared(key: str | None) -> Any:
            if key is None:
                return None
            if key not in refs:
                data = packer.shared(key)
                assert data is not None
                refs[key] = ray.put(data)
                self.bytes_put += len(data)
            return refs[key]

        last_line = ""
        last_shown = 0.0
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task = pending.pop(0)
                    task.scratch.mkdir(parents=True, exist_ok=True)
                    payload = packer.pack(task)
                    ckpt = sum(len(packer.shared(k) or b"") for k in payload.ckpt_parts)
                    self.ckpt_shipped[task.id] = ckpt
                    self.bytes_shipped[task.id] = (
                        len(payload.to_json()) + len(packer.shared(payload.tree_key) or b"")
                        + ckpt)
                    ref = remote.remote(dict(payload.__dict__), shared(payload.tree_key),
                                        *[shared(k) for k in payload.ckpt_parts])
                    running[ref] = (task, time.perf_counter())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_interval)
                for ref in ready:
                    task, t0 = running.pop(ref)
                    result = self._collect(ray, ref, task, t0)
                    results[task.id] = result
                    on_done(task, result)
                now = time.perf_counter()
                if self.echo is not None and now - last_shown >= 1.0:
                    line = _segments_line(tasks, results, running, pending)
                    if line != last_line:
                        self.echo(line)
                        last_line, last_shown = line, now
                if on_tick is not None:
                    on_tick()
        except KeyboardInterrupt:
            self.interrupted = True
            for ref, (task, t0) in running.items():
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
                results[task.id] = TaskResult(task.id, None, time.perf_counter() - t0,
                                              interrupted=True)
            for task in pending:
                results[task.id] = TaskResult(task.id, None, 0.0, interrupted=True)
        finally:
            refs.clear()  # the archives leave the object store with their last reference
        if self.echo is not None and self.nodes:
            self.echo(f"ray: {len(self.nodes)} task(s) on {len(set(self.nodes.values()))} "
                      f"node(s); {self.bytes_put / 1e6:.2f} MB put into the object store")
        return results

    def _collect(self, ray: Any, ref: Any, task: Task, t0: float) -> TaskResult:
        seconds = time.perf_counter() - t0
        try:
            out = ray.get(ref)
        except Exception as exc:  # retries used up, or the task itself raised
            reason = str(exc).strip().splitlines()
            write_failure(task.scratch, f"ray: the task failed after up to "
                          f"{self.max_retries} retries: {type(exc).__name__}: "
                          + (reason[0] if reason else ""))
            return TaskResult(task.id, None, seconds)
        unpack_result(task.scratch, out)
        self.nodes[task.id] = str(out.get("node"))
        return TaskResult(task.id, out["returncode"], seconds)


def _segments_line(tasks: list[Task], results: dict[str, TaskResult],
                   running: dict[Any, tuple[Task, float]], pending: list[Task]) -> str:
    """`ray segments: <run> 2 done, 1 running, 3 queued ...` per run."""
    runs: dict[str, list[int]] = {}
    busy = {task.id for task, _ in running.values()}
    queued = {task.id for task in pending}
    for task in tasks:
        run = str(task.meta["plan"].run_id)[-8:] if "plan" in task.meta else task.id
        counts = runs.setdefault(run, [0, 0, 0])
        if task.id in results:
            counts[0] += 1
        elif task.id in busy:
            counts[1] += 1
        elif task.id in queued:
            counts[2] += 1
    parts = [f"{run} {d} done, {r} running, {q} queued" for run, (d, r, q) in runs.items()]
    return "ray segments: " + "; ".join(parts)
