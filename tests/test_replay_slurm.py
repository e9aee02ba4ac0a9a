"""Replay through Slurm (submitit): a real single-node Slurm when one answers on this
machine (`sinfo`; see tests/slurm_single_node.sh for the set-up .ci/run can use), else
submitit's local executor, the same code path without `sbatch`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import flowillower as fw
from tests.conftest import wait_for
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


_DAEMONS = ("slurmd", "slurmctld", "munged")


@pytest.fixture(scope="module")
def slurm_cluster():
    """"slurm" when a single-node Slurm answers (started here as root from Debian's
    slurm-wlm + munge when installed, and stopped again after the module), else "local"."""
    started = []
    if not _slurm_up() and shutil.which("slurmctld") and shutil.which("munged") \
            and os.geteuid() == 0:
        running = {d for d in _DAEMONS
                   if subprocess.run(["pgrep", "-x", d], capture_output=True).returncode == 0}
        script = Path(__file__).with_name("slurm_single_node.sh")
        if subprocess.run(["sh", str(script)], capture_output=True, timeout=120).returncode == 0:
            started = [d for d in _DAEMONS if d not in running]
            try:
                wait_for(_slurm_up, timeout=60, interval=0.5, what="slurmd to register")
            except AssertionError:
                pass  # not up: the test takes submitit's local path
    try:
        yield "slurm" if _slurm_up() else "local"
    finally:
        for daemon in started:  # services this module started stop with it
            subprocess.run(["pkill", "-x", daemon], capture_output=True)
        if started:
            try:
                wait_for(lambda: all(subprocess.run(["pgrep", "-x", d], capture_output=True
                                                    ).returncode != 0
                                     for d in (*started, "slurmstepd")),
                         timeout=60, interval=0.5, what="the Slurm daemons to stop")
            except AssertionError:
                for daemon in (*started, "slurmstepd"):
                    subprocess.run(["pkill", "-9", "-x", daemon], capture_output=True)


def test_slurm_replay_retries_a_killed_job_and_is_bit_identical(tmp_path: Path,
                                                                 slurm_cluster: str) -> None:
    from flowillower.hindsight.slurm_executor import SlurmExecutor

    cluster = slurm_cluster
    marks = tmp_path / "marks"
    root = make_project(tmp_path / "proj")
    record(root, f"marks={marks}", "kills=1")
    want = fresh(tmp_path / "ref", f"marks={marks}", "kills=1")
    use_new_script(root)
    lines: list[str] = []
    executor = SlurmExecutor(tmp_path / "submitit", workers=2, cluster=cluster,
                             echo=lines.append)
    report = fw.replay("gstep", dir=root, workers=2, yes=True, echo=quiet, executor=executor)
    assert report.ok, str(report)
    assert report.runs[0].tasks == 2
    assert marks.read_text() == "x"  # one job's process was killed, its resubmission ran
    assert sorted(executor.attempts.values()) == [1, 2]
    # Progress per run from the loop every engine shares, then the jobs it took.
    assert lines[0] == f"slurm segments: {report.runs[0].run_id[-8:]} 0 done, 2 running, " \
        "0 queued", lines
    assert lines[-1].startswith("slurm: 2 task(s) as 3 job(s) (1 resubmitted); "), lines
    assert executor.bytes_written > 0
    (run_id,) = run_ids(root / ".flowillower")
    run_dir = root / ".flowillower" / "runs" / run_id
    assert values(run_dir, "gstep") == want
    assert len(list((run_dir / "replays").glob("*.fwl"))) == 1
    assert not list((tmp_path / "submitit" / "shared").iterdir())  # archives cleaned up


def test_ctrl_c_cancels_slurm_jobs(tmp_path: Path, slurm_cluster: str) -> None:
    """Ctrl-C while a segment's job runs: the job is cancelled (the remote script stops),
    the run is interrupted with no values, and the shared archives are removed."""
    import time

    from flowillower.hindsight.replay import run_replay
    from flowillower.hindsight.slurm_executor import SlurmExecutor

    beat = tmp_path / "beat"
    root = make_project(tmp_path / "proj")
    record(root, f"beat={beat}")
    use_new_script(root)

    class CtrlC(SlurmExecutor):
        def run(self, tasks, on_done, on_tick=None):  # type: ignore[no-untyped-def]
            def tick() -> None:
                if beat.exists():
                    raise KeyboardInterrupt  # where the driver's loop would get it
            return super().run(tasks, on_done, tick)

    executor = CtrlC(tmp_path / "submitit", workers=2, cluster=slurm_cluster)
    report = run_replay("gstep", dir=root, workers=2, yes=True, echo=quiet,
                        executor=executor)
    assert report.interrupted and report.runs[0].status == "interrupted", str(report)
    sizes: list[tuple[float, int]] = []

    def still() -> bool:  # the remote script stopped: the file no longer grows
        sizes.append((time.monotonic(), beat.stat().st_size))
        old = [s for t, s in sizes if t < sizes[-1][0] - 2.0]
        return bool(old) and old[-1] == sizes[-1][1]

    wait_for(still, timeout=90, interval=0.2, what="the cancelled job to stop")
    (run_id,) = run_ids(root / ".flowillower")
    assert not list((root / ".flowillower" / "runs" / run_id).glob("replays/*"))
    assert not list((tmp_path / "submitit" / "shared").iterdir())
