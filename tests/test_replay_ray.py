"""Replay on a cluster: self-contained task payloads, a real two-node Ray cluster on
loopback (tests/ray_cluster.py), bit-identical values, killed workers retried.

Scripts use numpy only (no torch start-up per process) and sleep a little per step so
the planner splits a run into two segments.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight.executor import Executor, Task, TaskResult
from flowillower.hindsight.task import Packer, unpack_result
from flowillower.store.reader import RunReader
from tests.conftest import clean_env, wait_for
from tests.test_hindsight_replay import make_project, quiet, run_ids, run_script, values

# Ray is imported only once the fixture has set its loopback variable (read at import).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (extra flowillower[ray])")

OLD = '''
    import os
    import time
    import numpy as np
    import flowillower as fw

    rng = np.random.RandomState(fw.arg("seed", 0))
    w = np.zeros(4)
    marks, kills, beat = fw.arg("marks", ""), fw.arg("kills", 0), fw.arg("beat", "")
    with fw.checkpointing(w=w, rng=rng, every=1):
        for epoch in fw.loop("epoch", range(fw.arg("epochs", 6))):
            for step in fw.loop("step", range(4)):
                w += 0.1 * rng.randn(4)
                time.sleep(0.05)
            fw.log("loss", float(w.sum()))
            if marks and os.environ.get("FLOWILLOWER_REPLAY") and epoch == 4:
                # a replay worker's process dies (an OOM kill, a lost node): count it
                done = open(marks).read().count("x") if os.path.exists(marks) else 0
                if done < kills:
                    with open(marks, "a") as fh:
                        fh.write("x")
                    os.kill(os.getppid(), 9)
                    os._exit(3)
            if beat and os.environ.get("FLOWILLOWER_REPLAY") and epoch == 4:
                while True:  # a segment that would run for ever, until cancelled
                    with open(beat, "a") as fh:
                        fh.write("x")
                    time.sleep(0.05)
'''


def new_script(old: str = OLD) -> str:
    return old.replace('''                w += 0.1 * rng.randn(4)
''', '''                w += 0.1 * rng.randn(4)
                fw.log("gstep", float(w @ w))
''')


def record(root: Path, *kwargs: str) -> None:
    run_script(root, "train.py", OLD, *kwargs)


def fresh(tmp: Path, *kwargs: str) -> dict:
    ref = make_project(tmp)
    run_script(ref, "train.py", new_script(), *kwargs)
    (ref_id,) = run_ids(ref / ".flowillower")
    return values(ref / ".flowillower" / "runs" / ref_id, "gstep")


def use_new_script(root: Path) -> None:
    (root / "train.py").write_text(textwrap.dedent(new_script()).lstrip())


class IsolatedExecutor(Executor):
    """Runs each task's payload in a process of its own whose working directory is
    elsewhere, while the project (repo and store) is renamed away: a worker that read
    the driver's disk would fail."""

    def __init__(self, projects: list[Path], workers: int = 1) -> None:
        super().__init__(workers)
        self.projects = projects  # the replayed one and where its run was recorded
        self.payloads: list[str] = []

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        packer = Packer()
        results = {}
        for task in tasks:
            payload = packer.pack(task)
            self.payloads.append(payload.to_json())
            work = Path(os.environ.get("TMPDIR", "/tmp")) / f"fw-iso-{os.getpid()}"
            work.mkdir(exist_ok=True)
            (work / "payload.json").write_text(payload.to_json())
            (work / "tree.tar").write_bytes(packer.shared(payload.tree_key) or b"")
            (work / "ckpt.tar").write_bytes(packer.shared(payload.ckpt_key) or b"")
            code = ("import json, pickle, sys; from pathlib import Path; "
                    "from flowillower.hindsight.task import run_payload; "
                    "p = json.loads(Path('payload.json').read_text()); "
                    "c = Path('ckpt.tar').read_bytes() or None; "
                    "r = run_payload(p, Path('tree.tar').read_bytes(), c); "
                    "Path('result.pkl').write_bytes(pickle.dumps(r))")
            for project in self.projects:
                project.rename(project.with_name(project.name + "-hidden"))
            try:
                proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=clean_env(),
                                      capture_output=True, text=True, timeout=120)
            finally:
                for project in self.projects:
                    project.with_name(project.name + "-hidden").rename(project)
            assert proc.returncode == 0, proc.stderr
            import pickle

            out = pickle.loads((work / "result.pkl").read_bytes())
            shutil.rmtree(work)
            task.scratch.mkdir(parents=True, exist_ok=True)
            unpack_result(task.scratch, out)
            results[task.id] = TaskResult(task.id, out["returncode"], out["seconds"])
            on_done(task, results[task.id])
        return results


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run of OLD with its default args, and the gstep values a fresh run of the new
    script gives (the marks/kills/beat args change nothing outside a replay): shared by
    the tests, which each replay a copy of the project."""
    base = tmp_path_factory.mktemp("ray-recorded")
    root = make_project(base / "proj")
    record(root)
    # A replay reads the current script where the run was recorded (its git root).
    use_new_script(root)
    return {"root": root, "want": fresh(base / "ref")}


def copy_project(recorded: dict, target: Path) -> Path:
    shutil.copytree(recorded["root"], target, symlinks=True)
    return target


def test_payload_worker_needs_neither_store_nor_repo(tmp_path: Path, recorded: dict) -> None:
    root = copy_project(recorded, tmp_path / "proj")
    want = recorded["want"]
    shutil.copytree(root, tmp_path / "local")
    use_new_script(root)
    use_new_script(tmp_path / "local")
    iso = IsolatedExecutor([root, recorded["root"]], workers=2)
    report = fw.replay("gstep", dir=root, workers=2, yes=True, echo=quiet, executor=iso)
    assert report.ok, str(report)
    assert report.runs[0].tasks == 2  # two segments, each from its own checkpoint
    for text in iso.payloads:  # no path of the driver's machine travels
        assert str(tmp_path) not in text and "/proj" not in text
    local = fw.replay("gstep", dir=tmp_path / "local", workers=2, yes=True, echo=quiet)
    assert local.ok, str(local)
    (run_id,) = run_ids(root / ".flowillower")
    got = values(root / ".flowillower" / "runs" / run_id, "gstep")
    assert len(got) == 24 and got == want
    assert got == values(tmp_path / "local" / ".flowillower" / "runs" / run_id, "gstep")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from tests.ray_cluster import LOOPBACK_ENV, start_cluster

    saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    # One CPU per node: two tasks that run at once must run on both nodes (SPREAD alone
    # is best-effort and, on a loaded machine, sometimes put both on the head).
    running = start_cluster(head_cpus=1, node_cpus=1)
    try:
        yield running.address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        running.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_cli_ray_replay_is_bit_identical_to_local_and_fresh(tmp_path: Path, cluster: str,
                                                             recorded: dict) -> None:
    root = copy_project(recorded, tmp_path / "proj")
    want = recorded["want"]
    shutil.copytree(root, tmp_path / "local")
    for project in (root, tmp_path / "local"):
        use_new_script(project)
    env = clean_env(**{"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    proc = subprocess.run(
        [sys.executable, "-m", "flowillower", "replay", "gstep", "--executor",
         f"ray={cluster}", "-w", "2", "-y", "--json", "--dir", str(root / ".flowillower")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (outcome,) = json.loads(proc.stdout)["runs"]
    assert outcome["status"] == "replayed" and outcome["tasks"] == 2
    assert "ray segments:" in proc.stderr and "estimated time" in proc.stderr
    assert "ray: 2 task(s) on 2 node(s)" in proc.stderr  # both ran at once
    local = fw.replay("gstep", dir=tmp_path / "local", workers=2, yes=True, echo=quiet)
    assert local.ok, str(local)
    (run_id,) = run_ids(root / ".flowillower")
    assert f"ray segments: {run_id[-8:]} 0 done, 2 running, 0 queued" in proc.stderr
    got = values(root / ".flowillower" / "runs" / run_id, "gstep")
    assert len(got) == 24 and got == want
    assert got == values(tmp_path / "local" / ".flowillower" / "runs" / run_id, "gstep")


def test_killed_ray_worker_is_retried(tmp_path: Path, cluster: str, recorded: dict) -> None:
    from flowillower.hindsight.ray_executor import RayExecutor

    marks = tmp_path / "marks"
    root = make_project(tmp_path / "proj")
    record(root, f"marks={marks}", "kills=1")
    want = recorded["want"]  # a fresh run's values: the args act only in a replay
    use_new_script(root)
    executor = RayExecutor(cluster, workers=2, max_retries=2)
    report = fw.replay("gstep", dir=root, workers=2, yes=True, echo=quiet, executor=executor)
    assert report.ok, str(report)
    assert marks.read_text() == "x"  # one worker process was killed, the retry went on
    (run_id,) = run_ids(root / ".flowillower")
    run_dir = root / ".flowillower" / "runs" / run_id
    assert values(run_dir, "gstep") == want
    assert len(list((run_dir / "replays").glob("*.fwl"))) == 1


def test_worker_that_keeps_dying_fails_only_its_run(tmp_path: Path, cluster: str) -> None:
    from flowillower.hindsight.ray_executor import RayExecutor

    marks = tmp_path / "marks"
    root = make_project(tmp_path / "proj")
    record(root, f"marks={marks}", "kills=99")
    record(root, "seed=1")
    executor = RayExecutor(cluster, workers=2, max_retries=1)
    use_new_script(root)
    report = fw.replay("gstep", dir=root, workers=2, yes=True, echo=quiet, executor=executor)
    assert not report.ok
    assert marks.read_text() == "xx"  # the first try and one retry
    store = root / ".flowillower"
    by_status = {o.status: o for o in report.runs}
    assert set(by_status) == {"failed", "replayed"}, str(report)
    failed = by_status["failed"]
    assert "ray: the task failed after up to 1 retries" in failed.message
    assert "no values were written" in failed.message
    assert not list((store / "runs" / failed.run_id).glob("replays/*"))
    assert "gstep" not in RunReader(store / "runs" / failed.run_id).load().series
    assert by_status["replayed"].values == {"gstep": 24}


def test_planner_splits_into_as_many_segments_as_workers_pay_for(tmp_path: Path) -> None:
    """Equal segments are split one after another while workers are idle (the split of
    one of two equal halves does not shorten the schedule by itself); the engine's task
    overhead makes a split cost more."""
    from flowillower.hindsight.analysis import analyze
    from flowillower.hindsight.planner import load_run_info, plan_run, scale_out

    root = make_project(tmp_path / "proj")
    record(root, "epochs=12")
    (run_id,) = run_ids(root / ".flowillower")
    info = load_run_info(root / ".flowillower" / "runs" / run_id)
    assert len(info.iter_times) == 12 and info.setup_s > 0  # the run recorded its timings
    # What a quiet machine records for this script (4 steps of 50 ms per epoch, all in the
    # inner loop); on a loaded one the recorded start-up alone can make 8 splits not pay.
    info = dataclasses.replace(info, iter_times=[0.2] * 12, inner_times=[0.2] * 12,
                               setup_s=0.4, teardown_s=0.0)
    plan = plan_run(info, analyze(textwrap.dedent(new_script()), ["gstep"], info.outer))
    rows = {r["workers"]: r for r in scale_out(plan, [1, 2, 4, 8])}
    assert len(plan.tasks) == 1  # scale_out leaves the plan alone
    assert rows[1]["segments"] == 1 and rows[2]["segments"] == 2
    assert rows[4]["segments"] == 4 and rows[8]["segments"] >= 6
    assert rows[4]["entry_points"] == 4  # each segment starts from a checkpoint
    assert rows[1]["estimate"] > rows[2]["estimate"] > rows[4]["estimate"]
    costly = {r["workers"]: r for r in scale_out(plan, [4], task_overhead=60.0)}
    assert costly[4]["segments"] == 1  # a minute per task: splitting never pays


def test_ctrl_c_cancels_remote_tasks(tmp_path: Path, cluster: str) -> None:
    """Ctrl-C while a segment runs: the driver stays connected to the cluster, so the
    remote script stops only because its task was cancelled."""
    from flowillower.hindsight.ray_executor import RayExecutor
    from flowillower.hindsight.replay import run_replay

    beat = tmp_path / "beat"
    root = make_project(tmp_path / "proj")
    record(root, f"beat={beat}")
    use_new_script(root)

    class CtrlC(RayExecutor):
        def run(self, tasks, on_done, on_tick=None):  # type: ignore[no-untyped-def]
            def tick() -> None:
                if beat.exists():
                    raise KeyboardInterrupt  # where the driver's loop would get it
            return super().run(tasks, on_done, tick)

    executor = CtrlC(cluster, workers=2)
    report = run_replay("gstep", dir=root, workers=2, yes=True, echo=quiet,
                        executor=executor)
    assert report.interrupted and report.runs[0].status == "interrupted"
    import ray

    assert ray.is_initialized()  # still connected: nothing but the cancel stops it
    sizes: list[tuple[float, int]] = []

    def still() -> bool:  # the remote script stopped: the file no longer grows
        sizes.append((time.monotonic(), beat.stat().st_size))
        old = [s for t, s in sizes if t < sizes[-1][0] - 1.0]
        return bool(old) and old[-1] == sizes[-1][1]

    wait_for(still, timeout=60, interval=0.2, what="the cancelled task to stop")
    (run_id,) = run_ids(root / ".flowillower")
    assert not list((root / ".flowillower" / "runs" / run_id).glob("replays/*"))


def test_lab_default_executor_comes_from_the_environment(tmp_path: Path) -> None:
    """`$FLOWILLOWER_REPLAY_EXECUTOR` is read when --executor is not given; the flag wins."""
    root = make_project(tmp_path / "proj")
    record(root, "epochs=1")
    env = clean_env(FLOWILLOWER_REPLAY_EXECUTOR="kubernetes")
    argv = [sys.executable, "-m", "flowillower", "replay", "loss", "-y", "--dir",
            str(root / ".flowillower")]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown executor 'kubernetes'" in proc.stderr
    proc = subprocess.run(argv + ["--executor", "local"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "every selected run already has loss" in proc.stderr
    # From Python the same: the variable names the executor, a name given wins.
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWILLOWER_REPLAY_EXECUTOR", "kubernetes")
        with pytest.raises(ValueError, match="unknown executor 'kubernetes'"):
            fw.replay("loss", dir=root, yes=True, echo=quiet)
        report = fw.replay("loss", dir=root, yes=True, echo=quiet, executor="local")
    assert report.ok, str(report)


def test_tree_archive_carries_no_file_from_outside_the_project(tmp_path: Path) -> None:
    import io
    import tarfile

    from flowillower.hindsight.task import tar_tree

    project, tree = tmp_path / "proj", tmp_path / "work" / "tree"
    project.mkdir()
    (project / "big.bin").write_bytes(b"weights")
    (tmp_path / "secret.txt").write_text("token")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "key").write_text("key")
    (tree / "pkg").mkdir(parents=True)
    (tree / "train.py").write_text("print(1)\n")
    (tree / "pkg" / "empty").mkdir()
    (tree / "big.bin").symlink_to(project / "big.bin")  # linked in: too big for git
    (tree / "alias.py").symlink_to(tree / "train.py")
    (tree / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (tree / "up.txt").symlink_to("../../secret.txt")
    (tree / "outdir").symlink_to(tmp_path / "outside")
    (tree / "gone").symlink_to(tmp_path / "missing")
    with tarfile.open(fileobj=io.BytesIO(tar_tree(tree, [tree, project]))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert not any(m.issym() or m.islnk() for m in members.values())
        assert set(members) == {"tree", "tree/pkg", "tree/pkg/empty", "tree/train.py",
                                "tree/big.bin", "tree/alias.py"}
        assert tar.extractfile("tree/big.bin").read() == b"weights"  # type: ignore[union-attr]


def test_unreachable_ray_cluster_is_an_error_at_once(tmp_path: Path) -> None:
    import socket

    root = make_project(tmp_path / "proj")
    record(root, "epochs=1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "flowillower", "replay", "gstep", "-y", "--executor",
         f"ray=127.0.0.1:{port}", "--dir", str(root / ".flowillower")],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert not list((root / ".flowillower" / "runs").glob("*/replays/*"))
