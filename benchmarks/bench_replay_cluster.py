"""Replay on a cluster: 2 Ray workers against 1 local worker, Ray's task overhead, the
planner's scale-out table, and what each task ships.

In one go, in scratch git projects, with a two-node Ray cluster on loopback
(tests/ray_cluster.py: a head with 2 CPUs and a second node with 1):

1. records a run of `--epochs` epochs (numpy, one BLAS thread, every epoch checkpointed)
   and replays an inner-loop statement (every step re-executed) with 1 local worker (the
   baseline) and with 2 Ray workers; the values must be bit-identical;
2. measures Ray's per-task overhead (empty task round trips) and prints what each task
   shipped and the driver's peak memory: the checkpoint files its segment reads (one
   shared archive each), against the naive baseline of the same run, the whole
   checkpoint folder in one tar per task (what tasks shipped before);
3. records a `--long-epochs` (100) run and prints the planner's predicted replay time,
   segments and checkpointed entry points for W = 1, 2, 8, 32, 128 Ray workers from its
   recorded timings; the same model's predictions for the first run at W = 1 (local)
   and W = 2 (Ray) are checked against the measured times (bar: within 20%).

Run: python benchmarks/bench_replay_cluster.py [--epochs 20] [--steps 8] [--long-epochs 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

SCRIPT = '''
import numpy as np
import flowillower as fw

rng = np.random.RandomState(0)
w = rng.randn(192, 192) / 14
x = rng.randn(192, 192)
with fw.checkpointing(w=w, rng=rng, every=1):
    for epoch in fw.loop("epoch", range(fw.arg("epochs", 20))):
        for step in fw.loop("step", range(fw.arg("steps", 8))):
            for _ in range(fw.arg("work", 200)):
                y = np.tanh(x @ w)
            w -= 1e-4 * (x.T @ y) / 192
            # NEW
        fw.log("loss", float((y * y).mean()))
'''
NEW_LINE = 'fw.log("wnorm", float(np.linalg.norm(w)))'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWILLOWER_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def _project(path: Path, *kwargs: str) -> float:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "b@example.com"],
                 ["config", "user.name", "b"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "train.py").write_text(textwrap.dedent(SCRIPT).lstrip())
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--kwargs", *kwargs], cwd=path, env=_env(),
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    text = (path / "train.py").read_text().replace("# NEW", NEW_LINE)
    (path / "train.py").write_text(text)
    return seconds


def _alive(pid: int) -> bool:
    try:
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return False


def _values(project: Path) -> dict:
    from flowillower.store.reader import RunReader

    (run_dir,) = (project / ".flowillower" / "runs").iterdir()
    series = RunReader(run_dir).load(["wnorm"]).series["wnorm"]
    return dict(zip(series.step.tolist(), series.values.tolist()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--long-epochs", type=int, default=100)
    opts, _ = ap.parse_known_args()
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("skipped: Ray is not installed (pip install 'flowillower[ray]')")
        return 0
    os.environ.update(_env())
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only (read at import)
    import flowillower as fw
    from flowillower.hindsight.analysis import analyze
    from flowillower.hindsight.planner import load_run_info, plan_run, scale_out
    from flowillower.hindsight.ray_executor import RayExecutor
    from flowillower.hindsight.task import checkpoint_archive
    from tests.ray_cluster import start_cluster

    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-cluster-"))
    cluster = None
    try:
        train_s = _project(tmp / "local", f"epochs={opts.epochs}", f"steps={opts.steps}")
        shutil.copytree(tmp / "local", tmp / "ray")
        long_s = _project(tmp / "long", f"epochs={opts.long_epochs}", f"steps={opts.steps}",
                          "work=20")
        t0 = time.perf_counter()
        cluster = start_cluster(head_cpus=2, node_cpus=1)
        cluster_s = time.perf_counter() - t0
        executor = RayExecutor(cluster.address, workers=2)
        overhead = executor.task_overhead_s

        t0 = time.perf_counter()
        local = fw.replay("wnorm", dir=tmp / "local", workers=1, yes=True, echo=lambda s: None)
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = fw.replay("wnorm", dir=tmp / "ray", workers=2, yes=True,
                           echo=lambda s: None, executor=executor)
        ray_s = time.perf_counter() - t0
        assert local.ok and remote.ok, (str(local), str(remote))
        same = _values(tmp / "local") == _values(tmp / "ray")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def predict(project: Path, counts: list[int], task_overhead: float) -> list[dict]:
            (run_dir,) = (project / ".flowillower" / "runs").iterdir()
            info = load_run_info(run_dir)
            source = (project / "train.py").read_text()
            plan = plan_run(info, analyze(source, ["wnorm"], info.outer))
            return scale_out(plan, counts, task_overhead)

        p1 = predict(tmp / "local", [1], 0.0)[0]
        p2 = predict(tmp / "local", [2], overhead)[0]
        table = predict(tmp / "long", [1, 2, 8, 32, 128], overhead)
        executor.close()

        print(f"box: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; ray cluster "
              f"start {cluster_s:.1f} s; training the {opts.epochs}-epoch run {train_s:.1f} s")
        print()
        print("| replay of an inner-loop statement | wall | planner predicted | error |")
        print("|---|---|---|---|")
        print(f"| 1 local worker (baseline) | {local_s:.1f} s | {p1['estimate']:.1f} s | "
              f"{(p1['estimate'] - local_s) / local_s:+.0%} |")
        print(f"| 2 Ray workers ({remote.runs[0].tasks} segments) | {ray_s:.1f} s | "
              f"{p2['estimate']:.1f} s | {(p2['estimate'] - ray_s) / ray_s:+.0%} |")
        print(f"\nspeed-up 2 Ray workers vs 1 local: {local_s / ray_s:.2f}x (bar >= 1.7x); "
              f"values bit-identical: {same}")
        print(f"Ray per-task overhead (median empty task round trip): {overhead * 1000:.1f} ms")
        shipped = sorted(executor.bytes_shipped.values())
        print(f"bytes per task (inputs, payload + shared archives): "
              f"{', '.join(f'{b / 1e6:.2f} MB' for b in shipped)}; put into the object "
              f"store once: {executor.bytes_put / 1e6:.2f} MB; driver peak RSS {peak_mb:.0f} MB")
        (ray_run,) = (tmp / "ray" / ".flowillower" / "runs").iterdir()
        whole = len(checkpoint_archive(ray_run))
        print("\n| task | checkpoint bytes shipped | naive: whole checkpoint folder | "
              "share |")
        print("|---|---|---|---|")
        for task_id, ckpt in sorted(executor.ckpt_shipped.items()):
            print(f"| {task_id[-12:]} | {ckpt / 1e3:.1f} kB | {whole / 1e3:.1f} kB | "
                  f"{ckpt / whole:.1%} |")
        within = all(abs(p["estimate"] - m) / m <= 0.2 for p, m in ((p1, local_s), (p2, ray_s)))
        print(f"predictions within 20% of measured W=1, W=2: {within}")
        print(f"\nplanner scale-out, {opts.long_epochs}-epoch run recorded in {long_s:.1f} s "
              f"(Ray overhead {overhead * 1000:.0f} ms per task):")
        print("| workers | predicted replay | speed-up | segments | entry points |")
        print("|---|---|---|---|---|")
        for row in table:
            print(f"| {row['workers']} | {row['estimate']:.2f} s | "
                  f"{table[0]['estimate'] / row['estimate']:.1f}x | {row['segments']} | "
                  f"{row['entry_points']} |")
        return 0
    finally:
        if cluster is not None:
            cluster.stop()  # this cluster's processes only
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
