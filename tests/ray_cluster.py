"""A real two-node Ray cluster on loopback for tests (and `python -m tests.ray_cluster`).

The head is `ray start --head --node-ip-address=127.0.0.1` with
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (without it Ray 2.60 replaces 127.0.0.1 by this
machine's network address). A second `ray start --address 127.0.0.1:PORT` is impossible
on loopback with Ray 2.60: with that variable at 0, `ray start` refuses to start a
non-head node ("Multi-node Ray clusters are not supported on Windows and OSX"); without
it, it resolves 127.0.0.1 to the network address, where the head's GCS does not listen.
The second node is therefore started as `ray start` itself starts one
(`ray._private.node.Node(head=False)`: its own raylet, object store and temp dir) by
`python -m tests.ray_cluster node ADDRESS TEMP_DIR`, a separate process. At the end
(also when a test failed) every process naming the cluster's temp folders is stopped:
this cluster's, never another one on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_naming(marks: list[bytes]) -> list[int]:
    """Processes whose command line contains one of `marks`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if any(mark in cmd for mark in marks):
            pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie has exited; only its parent has not reaped it yet
        return (Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]) != "Z"
    except OSError:
        return False


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class RayCluster:
    """A running head plus one more node, on 127.0.0.1 only."""

    address: str
    head_dir: Path
    node_dir: Path
    node: subprocess.Popen

    def stop(self) -> None:
        """Stop the second node, then every process whose command line names this
        cluster's temp folders, and clean up. Not `ray stop`: it would end every Ray
        cluster on the machine, other sessions' included."""
        if self.node.poll() is None:
            self.node.send_signal(signal.SIGTERM)
            try:
                self.node.wait(30)
            except subprocess.TimeoutExpired:
                self.node.kill()
        marks = [str(self.head_dir).encode(), str(self.node_dir).encode()]
        # The head's gcs_server, raylet and monitor often ignore SIGTERM for 25 s or more:
        # a short grace, then SIGKILL (nothing of a test cluster needs a clean shutdown).
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 20.0)):
            pids = [pid for pid in _pids_naming(marks) if pid != os.getpid()]
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                pids = [pid for pid in pids if _alive(pid)]
                time.sleep(0.1)
            if not pids:
                break
        shutil.rmtree(self.head_dir, ignore_errors=True)
        shutil.rmtree(self.node_dir, ignore_errors=True)


def start_cluster(head_cpus: int = 2, node_cpus: int = 1, timeout: float = 240) -> RayCluster:
    """Start the cluster and return once the second node has joined."""
    env = {**os.environ, **LOOPBACK_ENV}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    # Short paths: Ray's unix sockets live under the temp dir (107-byte limit).
    head_dir = Path(tempfile.mkdtemp(prefix="fwrh", dir="/tmp"))
    node_dir = Path(tempfile.mkdtemp(prefix="fwrn", dir="/tmp"))
    proc = subprocess.run(
        [_ray_bin(), "start", "--head", "--node-ip-address=127.0.0.1", "--port", str(port),
         "--num-cpus", str(head_cpus), "--include-dashboard=false",
         "--disable-usage-stats", "--temp-dir", str(head_dir)],
        env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start --head failed:\n{proc.stdout}\n{proc.stderr}")
    address = f"127.0.0.1:{port}"
    node = subprocess.Popen([sys.executable, "-m", "tests.ray_cluster", "node", address,
                             str(node_dir), str(node_cpus)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cluster = RayCluster(address, head_dir, node_dir, node)
    assert node.stdout is not None
    line = node.stdout.readline()  # blocks until the node is up (or its process ended)
    if "node up" not in line:
        rest = node.stdout.read() if node.poll() is not None else ""
        cluster.stop()
        raise RuntimeError(f"the second Ray node did not start: {line}{rest}")
    return cluster


def _run_node(address: str, temp_dir: str, cpus: int) -> None:
    """What `ray start --address ADDRESS --block` does, on 127.0.0.1."""
    os.environ.update(LOOPBACK_ENV)
    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        node_ip_address="127.0.0.1", gcs_address=address, temp_dir=temp_dir, num_cpus=cpus,
        include_log_monitor=False)
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True,
                                  spawn_reaper=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print("node up", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    node.kill_all_processes(check_alive=False, allow_graceful=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "node":
        _run_node(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        cluster = start_cluster()
        print(f"ray cluster at {cluster.address}; press Ctrl-C to stop it", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
        finally:
            cluster.stop()
