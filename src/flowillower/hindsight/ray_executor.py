"""Replay tasks on a Ray cluster (`--executor ray[=ADDRESS]`, extra `flowillower[ray]`).

Workers share no disk with the driver: each task travels as a `task.Payload`; the run's
snapshot tree and each checkpoint file a segment needs go into Ray's object store once
(`ray.put`, one object per capture) and every segment that needs one gets the same
reference, so Ray moves each to a node at most once and a segment fetches only the
captures it starts from (`task.needed_files`). A worker process that dies mid-task (node
lost, OOM kill) is retried by Ray (`max_retries`); a task that still fails gets the
reason in its log and fails its run's replay only. Ctrl-C cancels every remote task
(`ray.cancel(force=True)`). The loop around these (worker bound, progress, Ctrl-C) is
`task_loop.TaskLoop`, shared with the other engines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .executor import Executor
from .task import Packer, run_payload, unpack_result
from .task_loop import Task, TaskFailed, TaskLoop


def _remote_entry(payload: dict[str, Any], tree: bytes, *ckpts: bytes) -> dict[str, Any]:
    """What a Ray worker runs (module level: Ray imports it by name on the worker). The
    archives are top-level arguments: Ray resolves references only there."""
    import ray

    out = run_payload(payload, tree, *ckpts)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def _noop() -> float:
    return time.time()


class RayExecutor(TaskLoop, Executor):
    """Runs replay tasks as Ray tasks (one CPU each), at most `workers` at a time."""

    poll_interval = 0.2
    label = "ray"

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
        self._ray: Any = None  # the module, once connected
        self._remote: Any = None  # the remote function of the current run
        self._packer: Packer | None = None
        self._refs: dict[str, Any] = {}  # shared archive key -> its object-store reference

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

    # -- running: what the shared loop (`task_loop.TaskLoop`) asks of Ray ----------------
    def begin(self, tasks: list[Task]) -> None:
        self._ray = ray = self.connect()
        # SPREAD: segments of one run go to different nodes first (each node then
        # fetches the run's archives once).
        self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries,
                                  scheduling_strategy="SPREAD")(_remote_entry)
        self._packer = Packer()
        self._refs = {}

    def end(self) -> None:
        # The archives leave the object store with their last reference.
        self._refs, self._packer = {}, None

    def _shared(self, key: str | None) -> Any:
        """The object-store reference of a shared archive, put there once per run."""
        if key is None:
            return None
        if key not in self._refs:
            assert self._packer is not None
            data = self._packer.shared(key)
            assert data is not None
            self._refs[key] = self._ray.put(data)
            self.bytes_put += len(data)
        return self._refs[key]

    def submit(self, task: Task) -> Any:
        packer = self._packer
        assert packer is not None
        payload = packer.pack(task)
        ckpt = sum(len(packer.shared(k) or b"") for k in payload.ckpt_parts)
        self.ckpt_shipped[task.id] = ckpt
        self.bytes_shipped[task.id] = (
            len(payload.to_json()) + len(packer.shared(payload.tree_key) or b"") + ckpt)
        return self._remote.remote(dict(payload.__dict__), self._shared(payload.tree_key),
                                   *[self._shared(k) for k in payload.ckpt_parts])

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        return ready

    def collect(self, handle: Any, task: Task) -> int | None:
        try:
            out = self._ray.get(handle)
        except Exception as exc:  # retries used up, or the task itself raised
            reason = str(exc).strip().splitlines()
            raise TaskFailed(f"ray: the task failed after up to {self.max_retries} "
                             f"retries: {type(exc).__name__}: "
                             + (reason[0] if reason else "")) from None
        unpack_result(task.scratch, out)
        self.nodes[task.id] = str(out.get("node"))
        return out["returncode"]

    def cancel(self, handle: Any) -> int | None:
        self._ray.cancel(handle, force=True)
        return None

    def summary(self) -> str:
        if not self.nodes:
            return ""
        return (f"ray: {len(self.nodes)} task(s) on {len(set(self.nodes.values()))} "
                f"node(s); {self.bytes_put / 1e6:.2f} MB put into the object store")
