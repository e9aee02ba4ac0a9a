"""`flowillower demo train --multirun ...`: the demo as Hydra users expect it, one run per
job of the sweep (in one process), each tagged with the sweep and trained with its own
value; a job with tracking off does not turn tracking off for the next job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hydra")

from flowillower.store.reader import RunReader  # noqa: E402

SMALL = ["data.n_samples=512", "evaluation.n_samples=128", "visualization.n_samples=200",
         "visualization.n_sampling_steps=10", "training.threads=1", "training.log_interval=0",
         "training.n_epochs=2", "tracking.watch_every=0", "visualization.gif=false"]


def test_demo_train_multirun_makes_a_sweep_of_runs(tmp_path: Path) -> None:
    store = tmp_path / ".flowillower"
    env = {k: v for k, v in os.environ.items() if k != "FLOWILLOWER_DIR"}
    env.update(FLOWILLOWER_DIR=str(store), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "flowillower", "demo", "train", "--multirun",
         "training.learning_rate=0.001,0.003", "tracking.enabled=false,true", *SMALL],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sweep recorded 2 runs" in proc.stdout
    runs = []
    for d in (store / "runs").iterdir():
        runs.append((json.loads((d / "summary.json").read_text()),
                     json.loads((d / "run.json").read_text()), d))
    # Four jobs; the two with tracking.enabled=false record nothing, and the jobs after
    # them (tracking on) are recorded: the switch did not leak into the next job.
    lrs = sorted(s["args"]["training.learning_rate"] for s, _, _ in runs)
    assert lrs == [0.001, 0.003]
    sweeps = {s["args"]["sweep"] for s, _, _ in runs}
    assert len(sweeps) == 1 and (tmp_path / sweeps.pop()).is_dir()  # Hydra's folders
    assert len({m["pid"] for _, m, _ in runs}) == 1  # the jobs ran in one process
    for summary, meta, run_dir in runs:
        lr = summary["args"]["training.learning_rate"]
        assert summary["status"] == "success" and summary["args"]["tracking.enabled"]
        assert meta["tags"] == ["demo", "trex", f"sweep:{summary['args']['sweep']}"]
        # The command that re-runs this job alone (what a replay executes).
        # (Hydra writes the job's overrides its own way: `true` becomes `True`.)
        assert [a.lower() for a in meta["argv"][1:3]] == [
            f"training.learning_rate={lr}", "tracking.enabled=true"]
        losses = RunReader(run_dir).load(["epoch_loss"]).series["epoch_loss"].values
        assert len(losses) == 2


def test_demo_train_multirun_reports_a_bad_value(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWILLOWER_DIR"}
    env["FLOWILLOWER_DIR"] = str(tmp_path / ".flowillower")
    proc = subprocess.run(
        [sys.executable, "-m", "flowillower", "demo", "train", "-m",
         "training.batch_size=64,abc", *SMALL],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "training.batch_size" in proc.stderr and "abc" in proc.stderr
    assert "sweep recorded no run" in proc.stdout
