"""Replay through Slurm (submitit): a real single-node Slurm when one answers on this
machine (`sinfo`; see tests/slurm_single_node.sh for the set-up .ci/run can use), else
submitit's local executor, the same code path without `sbatch`."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

import flowillower as fw
from tests.test_hindsight_replay import make_project, quiet, run_ids, values
from tests.test_replay_ray import fresh, record, use_new_script

pytestmark = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                reason="submitit is not installed (extra flowillower[slurm])")


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


def test_slurm_replay_retries_a_killed_job_and_is_bit_identical(tmp_path: Path) -> None:
    from flowillower.hindsight.slurm_executor import SlurmExecutor

    cluster = "slurm" if _slurm_up() else "local"
    marks = tmp_path / "marks"
    root = make_project(tmp_path / "proj")
    record(root, f"marks={marks}", "kills=1")
    want = fresh(tmp_path / "ref", f"marks={marks}", "kills=1")
    use_new_script(root)
    executor = SlurmExecutor(tmp_path / "submitit", workers=2, cluster=cluster)
    report = fw.replay("gstep", dir=root, workers=2, yes=True, echo=quiet, executor=executor)
    assert report.ok, str(report)
    assert report.runs[0].tasks == 2
    assert marks.read_text() == "x"  # one job's process was killed, its resubmission ran
    assert sorted(executor.attempts.values()) == [1, 2]
    (run_id,) = run_ids(root / ".flowillower")
    run_dir = root / ".flowillower" / "runs" / run_id
    assert values(run_dir, "gstep") == want
    assert len(list((run_dir / "replays").glob("*.fwl"))) == 1
    assert not list((tmp_path / "submitit" / "shared").iterdir())  # archives cleaned up
