"""`fw.loop(name, items, start=K)` in a resumed run: a script killed with `kill -9` and
restarted from its checkpoint at epoch K logs epochs K.. with the run's own loop
coordinates and global steps, and the reader gives each epoch (and batch) once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import flowillower as fw
from flowillower.hindsight.session import ReplaySession
from flowillower.store.reader import RunReader
from tests.conftest import only_run, wait_for

# Checkpoint after every epoch; starts after the last one saved, or at $REWIND; stops
# (sleeps) after logging epoch $HANG_AT until the file `go` exists.
TRAIN = """
import json, os, time
from pathlib import Path
import flowillower as fw

ckpt = Path("ckpt.json")
start = json.loads(ckpt.read_text())["epoch"] + 1 if ckpt.exists() else 0
if os.environ.get("REWIND"):
    start = int(os.environ["REWIND"])
fw.init(resume="auto", snapshot=False)
hang = int(os.environ.get("HANG_AT", "-1"))
for epoch in fw.loop("epoch", range(start, 6), start=start):
    for batch in fw.loop("batch", range(3)):
        fw.log("loss", 10.0 * epoch + batch)
        fw.log("pid", os.getpid())
    fw.log("val", float(epoch))
    if epoch == hang:
        fw.flush()
        Path("waiting").write_text(str(epoch))
        while not Path("go").exists():
            time.sleep(0.05)
    ckpt.write_text(json.dumps({"epoch": epoch}))
fw.finish()
"""


def _start(tmp_path, env: dict[str, str]) -> subprocess.Popen:
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    return subprocess.Popen([sys.executable, "train.py"], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _killed_at(tmp_path, epoch: int) -> int:
    """Run until epoch `epoch` is logged, then kill -9; the killed process's pid."""
    proc = _start(tmp_path, {"HANG_AT": str(epoch)})
    try:
        wait_for(lambda: (tmp_path / "waiting").exists() or proc.poll() is not None,
                 timeout=120, what="the script to reach its hang epoch")
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp_path / "waiting").unlink()
    return proc.pid


def _frame(run_id: str, *names: str):
    fw.runs()  # sync the index (as tests/test_resume.py does)
    return fw.dataframe(*names, runs=[run_id])


def _steps(run_dir, name: str) -> list[tuple[tuple[int, ...], int]]:
    """(loop coordinates, global step) of each value the reader gives, in step order."""
    data = RunReader(run_dir).load([name])
    series = data.series[name]
    rows = [(tuple(int(c) for c in data.ctx_coords[ctx] if c >= 0), int(step))
            for ctx, step in zip(series.ctx, series.step)]
    return sorted(rows, key=lambda r: r[1])


def test_restarted_loop_continues_coordinates_and_steps(tmp_path, store_dir):
    first = _killed_at(tmp_path, 4)  # epoch 4 logged, its checkpoint never written
    second = _start(tmp_path, {})  # restarts at epoch 4 (checkpoint of epoch 3)
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    run_dir = only_run(store_dir)
    assert sorted(p.name for p in run_dir.glob("data*.fwl")) == ["data.fwl", "data.seg2.fwl"]
    df = _frame(run_dir.name, "loss", "pid").sort_values(["epoch", "batch"])
    # Each (epoch, batch) once, with the restarted script's values from epoch 4 on.
    assert list(zip(df["epoch"], df["batch"])) == [(e, b) for e in range(6) for b in range(3)]
    assert df["loss"].tolist() == [10.0 * e + b for e in range(6) for b in range(3)]
    assert df["pid"].tolist() == [float(first)] * 12 + [float(second.pid)] * 6
    # Global steps go on: the batch loop's count (epoch 4 starts at step 12).
    assert _steps(run_dir, "loss") == [((e, b), 3 * e + b) for e in range(6) for b in range(3)]
    assert _steps(run_dir, "val") == [((e,), e) for e in range(6)]


def test_restart_from_an_earlier_checkpoint_rewinds_to_it(tmp_path, store_dir):
    first = _killed_at(tmp_path, 4)
    second = _start(tmp_path, {"REWIND": "2"})  # an older checkpoint: epochs 2.. again
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    run_dir = only_run(store_dir)
    df = _frame(run_dir.name, "loss", "pid").sort_values(["epoch", "batch"])
    assert list(zip(df["epoch"], df["batch"])) == [(e, b) for e in range(6) for b in range(3)]
    assert df["pid"].tolist() == [float(first)] * 6 + [float(second.pid)] * 12
    assert _steps(run_dir, "loss") == [((e, b), 3 * e + b) for e in range(6) for b in range(3)]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "success"


def test_start_in_a_new_run_and_in_a_replay_worker(tmp_path, store_dir):
    fw.init(snapshot=False)
    seen = [(e, i) for i, e in enumerate(fw.loop("warmup", ["c", "d"], start=2))]
    for e in fw.loop("epoch", range(3, 5), start=3):
        fw.log("val", float(e))
    run = fw.current_run()
    fw.finish()
    assert seen == [("c", 0), ("d", 1)]
    assert _steps(store_dir / "runs" / run.id, "val") == [((3,), 3), ((4,), 4)]
    with pytest.raises(ValueError, match="start must be >= 0"):
        next(iter(fw.loop("epoch", range(2), start=-1)))
    fw.finish()
    # A replay worker's plan names the run's own iterations: 4 and 5 of a loop that a
    # restarted script began at 3 are its third and fourth items.
    (tmp_path / "scratch").mkdir()
    session = ReplaySession({"scratch": str(tmp_path / "scratch"), "run_dir": str(tmp_path),
                             "outer": "epoch", "first": 4, "stop": 6})
    fw.init(snapshot=False)
    run = fw.current_run()
    run.set_loop_control(session.control)
    got = [(run.thread_state().coords, item)
           for item in fw.loop("epoch", ["e3", "e4", "e5", "e6"], start=3)]
    run.set_loop_control(None)
    fw.finish()
    assert got == [((("epoch", 4),), "e4"), ((("epoch", 5),), "e5")]
