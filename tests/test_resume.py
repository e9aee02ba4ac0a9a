"""Resuming a run: `fw.init(id=, resume=)` continues it in a new segment file; a
restarted script finds its run (`resume="auto"`); a restart from an earlier checkpoint
rewinds the run; a resumed run travels through push and pull."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import flowillower as fw
from flowillower.errors import FlowillowerError
from flowillower.run import Run
from flowillower.store.index_rows import run_status
from flowillower.store.reader import RunReader, decode_values
from tests.conftest import only_run, wait_for

# A training script with a checkpoint file: it starts after the last step saved, or at
# $REWIND; it stops (sleeps) after logging step $HANG_AT until the file `go` exists.
TRAIN = """
import json, os, sys, time
from pathlib import Path
import flowillower as fw

ckpt = Path("ckpt.json")
start = json.loads(ckpt.read_text())["step"] + 1 if ckpt.exists() else 0
if os.environ.get("REWIND"):
    start = int(os.environ["REWIND"])
fw.init(resume="auto", snapshot=False)
hang = int(os.environ.get("HANG_AT", "-1"))
for step in range(start, int(sys.argv[1])):
    fw.log("loss", 1.0 / (step + 1), step=step)
    fw.log("pid", os.getpid(), step=step)
    if step == hang:
        fw.flush()
        Path("waiting").write_text(str(step))
        while not Path("go").exists():
            time.sleep(0.05)
        Path("go").unlink()
    ckpt.write_text(json.dumps({"step": step}))
fw.finish()
"""


def _start(tmp_path, env: dict[str, str], *argv: str) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN))
    (tmp_path / "waiting").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(script), *argv], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_hanging(proc: subprocess.Popen, tmp_path) -> None:
    wait_for(lambda: (tmp_path / "waiting").exists() or proc.poll() is not None,
             timeout=120, what="the script to reach its hang step")
    assert proc.poll() is None, proc.stderr.read().decode()


def _frame(run_id: str, dir=None):
    # fw.dataframe(runs=[ids]) reads the index without syncing it (queries/dataframe.py
    # `_select`, reported): a listing syncs it first.
    fw.runs(dir=dir)
    df = fw.dataframe("loss", "pid", runs=[run_id], dir=dir)
    return df.sort_values("step").reset_index(drop=True)


def test_kill_9_then_auto_resume_is_one_contiguous_run(tmp_path, store_dir):
    first = _start(tmp_path, {"HANG_AT": "5"}, "10")
    try:
        _wait_hanging(first, tmp_path)
        run_dir = only_run(store_dir)
        assert run_status(run_dir) == "running"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert run_status(run_dir) == "killed"
    # Restarted (same script, same arguments): the same run continues, running again.
    second = _start(tmp_path, {"HANG_AT": "8"}, "10")
    try:
        _wait_hanging(second, tmp_path)
        assert only_run(store_dir) == run_dir
        assert run_status(run_dir) == "running"
        assert RunReader(run_dir).status == "running"
        (tmp_path / "go").write_text("")
        assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    finally:
        if second.poll() is None:
            second.kill()
    assert only_run(store_dir) == run_dir
    assert run_status(run_dir) == "success"
    assert sorted(p.name for p in run_dir.glob("data*.fwl")) == ["data.fwl", "data.seg2.fwl"]
    assert json.loads((run_dir / "run.json").read_text())["segments"] == 2
    from click.testing import CliRunner

    from flowillower.cli import main as cli_main

    shown = CliRunner().invoke(cli_main, ["show", run_dir.name, "--dir", str(store_dir.parent)])
    assert "segments  2 (resumed 1 time(s))" in shown.output, shown.output
    df = _frame(run_dir.name)
    # Step 5 was logged, then killed before its checkpoint: logged again, kept once.
    assert df["step"].tolist() == list(range(10))
    assert df["loss"].tolist() == pytest.approx([1.0 / (s + 1) for s in range(10)])
    assert df["pid"].tolist() == [first.pid] * 5 + [second.pid] * 5
    table = fw.runs()
    assert table[table["run_id"] == run_dir.name]["status"].tolist() == ["success"]


def test_restart_from_an_earlier_checkpoint_rewinds(tmp_path, store_dir):
    first = _start(tmp_path, {"HANG_AT": "8"}, "10")
    try:
        _wait_hanging(first, tmp_path)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    second = _start(tmp_path, {"REWIND": "4"}, "10")  # its checkpoint was at step 3
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    run_dir = only_run(store_dir)
    df = _frame(run_dir.name)
    assert df["step"].tolist() == list(range(10))
    assert df["pid"].tolist() == [first.pid] * 4 + [second.pid] * 6
    # The UI's charts read the run as the dataframe does: each step once.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from flowillower.server.app import create_app

    with TestClient(create_app(store_dir), base_url="http://127.0.0.1:8686") as client:
        got = client.get("/api/series", params={"run": run_dir.name, "key": "pid"}).json()
    (series,) = got["runs"]
    assert series["x"] == list(range(10)) and series["count"] == 10, got
    assert series["y"] == [float(first.pid)] * 4 + [float(second.pid)] * 6
    # Superseded, never deleted: the first segment still holds steps 4..8.
    old = decode_values((run_dir / "data.fwl").read_bytes())
    steps = {s for name, *_r, s, _t, _v in old.rows(lambda n, r: n == "loss")}
    assert steps == set(range(9))


def test_auto_after_success_starts_a_new_run(tmp_path, store_dir):
    for _ in range(2):
        (tmp_path / "ckpt.json").unlink(missing_ok=True)
        proc = _start(tmp_path, {}, "3")
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert len(list((store_dir / "runs").iterdir())) == 2


@pytest.mark.parametrize("env, run_id", [
    ({"FLOWILLOWER_RUN_ID": "job-7"}, "job-7"),
    ({"SLURM_JOB_ID": "4242"}, "slurm-4242"),
    ({"SLURM_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "3"}, "slurm-4242-3"),
])
def test_auto_finds_the_run_of_a_scheduler_job(env, run_id, monkeypatch, store_dir):
    for name in ("FLOWILLOWER_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = fw.init(resume="auto", snapshot=False)
    assert run.id == run_id
    fw.log("loss", 1.0, step=0)
    fw.finish("failed")  # pre-empted
    again = fw.init(resume="auto", snapshot=False)
    assert again.id == run_id and again.segment == 2
    fw.log("loss", 0.5, step=1)
    fw.finish()
    assert only_run(store_dir).name == run_id
    assert _frame(run_id)["loss"].tolist() == [1.0, 0.5]
    # The pre-empted segment's summary is kept aside, the final one rules.
    assert json.loads((store_dir / "runs" / run_id / "summary.seg1.json").read_text()
                      )["status"] == "failed"
    assert run_status(store_dir / "runs" / run_id) == "success"


def test_resume_modes_say_what_is_wrong(store_dir):
    with pytest.raises(FlowillowerError, match="no such run.*resume='must'"):
        fw.init(id="unknown-run", resume="must", snapshot=False)
    with pytest.raises(FlowillowerError, match="needs|give its id"):
        fw.init(resume="must", snapshot=False)
    with pytest.raises(ValueError, match="resume must be one of"):
        fw.init(id="x", resume="sometimes", snapshot=False)
    fw.init(id="base", snapshot=False)
    fw.log("loss", 1.0, step=0)
    fw.finish()
    with pytest.raises(FlowillowerError, match="already exists.*resume='allow'"):
        fw.init(id="base", snapshot=False)
    # allow: a missing id starts the run; an existing one continues it.
    assert fw.init(id="fresh", resume="allow", snapshot=False).segment == 1
    fw.finish()
    assert fw.init(id="base", resume="allow", snapshot=False).segment == 2
    fw.finish()
    with pytest.raises(Exception, match="not a run|path"):
        fw.init(id="../escape", resume="allow", snapshot=False)


def test_a_live_run_is_not_continued_twice(store_dir):
    live = Run(run_id="live", snapshot=False)
    live.log("loss", 1.0, step=0)  # on disk, its process (this one) alive
    try:
        with pytest.raises(FlowillowerError, match="still running"):
            fw.init(id="live", resume="allow", snapshot=False)
    finally:
        live.finish()


def test_a_resumed_run_reads_the_same_after_push_and_pull(tmp_path, monkeypatch):
    from flowillower.gitops.sync import pull, push
    from tests.conftest_git import bare_remote, isolate_home, make_repo

    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "clean")
    store = repo / ".flowillower"
    fw.init(id="moving", dir=store, snapshot=False)
    for step in range(6):
        fw.log("loss", float(step), step=step)
    fw.finish("killed")
    fw.init(id="moving", dir=store, resume="must", snapshot=False)
    for step in range(3, 8):
        fw.log("loss", 10.0 + step, step=step)
    fw.finish()
    remote = bare_remote(tmp_path / "remote.git")
    assert push(store, str(remote))["rejected"] == []
    bob = tmp_path / "bob" / ".flowillower"
    got = pull(bob, f"file://{remote}")
    assert got["runs_added"] == 1, got
    names = sorted(p.name for p in (bob / "runs" / "moving").iterdir()
                   if not p.name.startswith("."))
    assert {"data.fwl", "data.seg2.fwl", "summary.json", "summary.seg1.json"} <= set(names)
    mine, theirs = _frame("moving", store), _frame("moving", bob)
    assert theirs["loss"].tolist() == mine["loss"].tolist() == [0.0, 1.0, 2.0] + [
        10.0 + s for s in range(3, 8)]
    assert RunReader(bob / "runs" / "moving").status == "success"


def test_the_guide_example_runs_and_reads_as_it_says(tmp_path, monkeypatch, capsys):
    """docs/guide.md, "Resume and fork": its example, run as written."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    section = guide.split("## Resume and fork\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```py\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "guide.md", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(list(range(10))), str(list(range(12)))]
    df = namespace["df"]
    child = namespace["child"].id
    losses = df[df["run_id"] == child]["loss"].tolist()
    assert losses == pytest.approx([1 / (s + 1) for s in range(8)]
                                   + [0.1 / (s + 1) for s in range(8, 12)])
    meta = json.loads((namespace["child"].dir / "run.json").read_text())
    assert meta["fork_of"]["run"] == "sweep-a" and meta["fork_of"]["step"] == 7


def test_a_restart_inside_loops_rewinds_by_the_outer_loop_index(store_dir):
    """Loop steps restart in a new process; the loop indices (the script's own, from
    its checkpoint) say where it rewound to: epochs 2 and 3 are the restart's."""
    fw.init(id="epochs", snapshot=False)
    fw.arg("lr", 0.1)
    for epoch in range(4):
        with fw.iteration("epoch", epoch):
            for _batch in fw.loop("batch", range(2)):
                fw.log("loss", float(epoch))
    fw.log("best", 3.0, step=3)  # a run-level value at step 3: kept, nothing redid it
    fw.finish("killed")
    fw.init(id="epochs", resume="must", snapshot=False)
    for epoch in range(2, 4):  # the checkpoint was taken after epoch 1
        with fw.iteration("epoch", epoch):
            for _batch in fw.loop("batch", range(2)):
                fw.log("loss", 10.0 + epoch)
    fw.finish()
    fw.runs()
    df = fw.dataframe("loss", "best", runs=["epochs"])
    got = sorted(zip(df["epoch"], df["batch"], df["loss"]))
    assert got == [(0, 0, 0.0), (0, 1, 0.0), (1, 0, 1.0), (1, 1, 1.0),
                   (2, 0, 12.0), (2, 1, 12.0), (3, 0, 13.0), (3, 1, 13.0)]
    series = RunReader(store_dir / "runs" / "epochs").load().series
    assert series["best"].values.tolist() == [3.0]
    assert series["lr"].values.tolist() == [0.1]


def test_a_teammate_who_pulled_the_killed_run_sees_it_resumed(tmp_path, monkeypatch):
    """Pulled while dead (no summary), pulled again after the resume: the new segment
    and the final summary arrive, and both machines read the same values."""
    from flowillower.gitops.sync import pull, push
    from tests.conftest_git import bare_remote, isolate_home, make_repo

    isolate_home(monkeypatch, tmp_path)
    store = make_repo(tmp_path, "clean") / ".flowillower"
    remote = bare_remote(tmp_path / "remote.git")
    bob = tmp_path / "bob" / ".flowillower"
    died = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        import flowillower as fw
        fw.init(id="pre-empted", dir={str(store)!r}, snapshot=False)
        for step in range(5):
            fw.log("loss", float(step), step=step)
        fw.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr
    run_dir = store / "runs" / "pre-empted"
    assert run_status(run_dir) == "killed"
    assert push(store, str(remote))["rejected"] == []
    assert pull(bob, f"file://{remote}")["runs_added"] == 1
    fw.init(id="pre-empted", dir=store, resume="must", snapshot=False)
    for step in range(3, 7):
        fw.log("loss", 10.0 + step, step=step)
    fw.finish()
    assert push(store, str(remote))["rejected"] == []
    pull(bob, f"file://{remote}")
    assert (bob / "runs" / "pre-empted" / "data.seg2.fwl").exists()
    assert RunReader(bob / "runs" / "pre-empted").status == "success"
    expected = [0.0, 1.0, 2.0, 13.0, 14.0, 15.0, 16.0]
    assert _frame("pre-empted", store)["loss"].tolist() == expected
    assert _frame("pre-empted", bob)["loss"].tolist() == expected


def test_two_restarts_racing_never_share_a_segment_file(store_dir):
    from flowillower.store.continuation import resolve

    fw.init(id="raced", snapshot=False)
    fw.log("loss", 1.0, step=0)
    fw.finish("killed")
    first = resolve(store_dir, "raced", "must")
    second = resolve(store_dir, "raced", "must")  # before the first wrote anything
    assert (first.segment, second.segment) == (2, 3)
    assert (store_dir / "runs" / "raced" / "data.seg2.fwl").exists()
    run = fw.init(id="raced", resume="must", snapshot=False)
    assert run.segment == 4
    fw.log("loss", 0.5, step=1)
    fw.finish()
    data = RunReader(store_dir / "runs" / "raced").load()
    assert data.series["loss"].values.tolist() == [1.0, 0.5]


def test_resume_is_refused_with_record_all_ranks(store_dir):
    with pytest.raises(ValueError, match="record_all_ranks"):
        fw.init(id="x", resume="allow", record_all_ranks=True, snapshot=False)


def test_a_damaged_run_json_does_not_break_the_restart(store_dir):
    fw.init(id="damaged", snapshot=False)
    fw.log("loss", 1.0, step=0)
    fw.finish("failed")
    path = store_dir / "runs" / "damaged" / "run.json"
    meta = json.loads(path.read_text())
    meta.update(fork_of="not a mapping", segments_git=7, name=["not", "text"], created="x")
    path.write_text(json.dumps(meta))
    run = fw.init(id="damaged", resume="must", snapshot=False)
    fw.log("loss", 0.5, step=1)
    fw.finish()
    meta = json.loads(path.read_text())
    assert meta["segments"] == 2 and "fork_of" not in meta
    assert isinstance(meta["created"], float) and run.name == meta["name"]
    assert RunReader(store_dir / "runs" / "damaged").load().series["loss"].values.tolist() \
        == [1.0, 0.5]
