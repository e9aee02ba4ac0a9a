"""`fw.checkpointing(min_entry_points=N)`: enough evenly spread entry points for a replay
split over N workers, within the disk budget (issue 18, item 3).

What is kept is read back from the run's checkpoint folder (`CheckpointStore`: the
manifest and the files that exist), never from the recorder's own bookkeeping.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import flowillower as fw
from flowillower.hindsight.analysis import analyze
from flowillower.hindsight.ckpt_store import CheckpointStore
from flowillower.hindsight.planner import load_run_info, plan_run, scale_out

# What `analyze` reads to place the new statement: inside the inner loop, so every
# iteration is re-executed and segments are the only way to go faster.
SOURCE = '''
import torch
import flowillower as fw
w = torch.zeros(8192)
with fw.checkpointing(w=w, max_overhead=0.0, min_entry_points=16):
    for epoch in fw.loop("epoch", range(200)):
        for step in fw.loop("step", range(2)):
            w += 0.5
            fw.log("w_sum", float(w.sum()))
'''


def _record(tmp_path: Path, iterable, **policy) -> Path:
    """A 2-step inner loop per outer iteration; `policy` goes to fw.checkpointing."""
    # 32 KiB of state that changes every step: every capture's file has the same size
    # (a tensor's bytes are stored raw; numpy arrays' pickled size depends on the values).
    w = torch.zeros(8192)
    run = fw.init(dir=tmp_path, snapshot=False)
    policy.setdefault("max_overhead", 0.0)
    with fw.checkpointing(w=w, **policy):
        for _epoch in fw.loop("epoch", iterable):
            for _step in fw.loop("step", range(2)):
                w += 0.5
    fw.finish()
    return run.dir


def _starts(run_dir: Path) -> list[int]:
    store = CheckpointStore(run_dir)
    return sorted(i for kind, i, _ in store.entries if kind == "start")


def _evenly_spread(starts: list[int], total: int) -> int:
    """The one stride between consecutive entry points (asserted), the tail included."""
    gaps = {b - a for a, b in zip(starts, starts[1:])}
    assert starts[0] == 0 and len(gaps) == 1, starts
    stride = gaps.pop()
    assert total - starts[-1] <= stride, (starts, total)
    return stride


def test_sixteen_entry_points_spread_over_200_iterations_and_16_segments(tmp_path: Path
                                                                          ) -> None:
    """max_overhead=0 alone keeps iteration 0 only (one segment); with min_entry_points=16
    the 200-iteration run keeps >= 16 evenly spread starts and the planner splits an
    inner-loop replay over 16 workers into >= 16 segments."""
    plain = _record(tmp_path / "plain", range(200))
    assert _starts(plain) == [0]
    with pytest.warns(UserWarning, match=r"past max_overhead=0% \(entry points win\)"):
        run_dir = _record(tmp_path / "spread", range(200), min_entry_points=16)
    starts = _starts(run_dir)
    assert len(starts) >= 16 and _evenly_spread(starts, 200) == 12
    assert CheckpointStore(run_dir).meta["min_entry_points"] == 16

    rows = {}
    for name, folder in (("plain", plain), ("spread", run_dir)):
        info = load_run_info(folder)
        assert info.completed == 200
        # The layout is what is tested: as if each epoch had taken a minute (the recorded
        # microseconds make any split pointless next to a worker's start-up).
        info.iter_times = [60.0] * 200
        info.inner_times = [59.0] * 200
        info.setup_s = 5.0
        plan = plan_run(info, analyze(SOURCE, ["w_sum"], info.outer))
        (rows[name],) = scale_out(plan, [16])
    assert rows["plain"]["segments"] == 1
    assert rows["spread"]["segments"] >= 16 and rows["spread"]["entry_points"] >= 16
    assert rows["spread"]["estimate"] < rows["plain"]["estimate"] / 8


def test_a_disk_budget_for_eight_keeps_eight_spread_and_warns(tmp_path: Path) -> None:
    """The disk budget wins: max_disk holding iteration 0's two captures, 7 more starts
    and the final state keeps 8 entry points spread over the whole loop (not the first
    8), and says so once."""
    sized = _record(tmp_path / "sized", range(200), min_entry_points=16)
    files = {e["seq"]: e["bytes"] for e in CheckpointStore(sized).entries.values()}
    first = files.pop(0)  # it also holds the tensors later files point to (RNG states)
    each = max(files.values())
    assert each - min(files.values()) < 512
    budget = first + files[1] + 8 * each + each // 2
    with pytest.warns(UserWarning, match="holds only 8 of the 16 entry points") as caught:
        run_dir = _record(tmp_path / "capped", range(200), min_entry_points=16,
                          max_disk=budget)
    budget_warnings = [w for w in caught if "disk budget" in str(w.message)]
    assert len(budget_warnings) == 1  # once, though later captures meet the budget too
    starts = _starts(run_dir)
    assert len(starts) == 8 and _evenly_spread(starts, 200) == 25
    store = CheckpointStore(run_dir)
    assert store.final() is not None  # the final state was kept room for
    on_disk = sum(p.stat().st_size for p in store.dir.glob("c*"))
    assert on_disk <= budget


def test_entry_points_win_the_disk_over_adaptive_captures(tmp_path: Path) -> None:
    """A generous time budget would capture every iteration until max_disk is full and
    then stop recording; under the entry policy the other captures leave room for the
    entry points still to come (skipped, with a manifest line), and recording goes on."""
    sized = _record(tmp_path / "sized", range(10), min_entry_points=16)
    size = max(e["bytes"] for e in CheckpointStore(sized).entries.values())
    run_dir = _record(tmp_path / "busy", range(100), min_entry_points=8,
                      max_overhead=10.0, max_disk=12 * size)
    starts = _starts(run_dir)
    assert set(range(0, 100, 12)) <= set(starts) and len(starts) < 12
    lines = [json.loads(x) for x in (run_dir / "checkpoints/manifest.jsonl").read_text()
             .splitlines()]
    assert not [x for x in lines if x["type"] in ("stopped", "thinned")]
    assert [x for x in lines if x["type"] == "skipped" and "max_disk" in x["reason"]]
    assert CheckpointStore(run_dir).final() is not None


def test_a_file_being_finished_is_never_counted_twice(tmp_path: Path, monkeypatch) -> None:
    """Between a file's write and its job's end (its manifest line) the writer's count
    must not hold the capture both as written and as still queued: that made a capture
    that fits look past max_disk, and an entry capture then thinned the kept ones. The
    manifest line is slowed here so the training thread decides inside that window."""
    import threading
    import time

    from flowillower.hindsight.ckpt_files import BackgroundWriter

    line = BackgroundWriter._line

    def slow_line(self, entry):
        if entry.get("type") == "ckpt" and threading.current_thread().name.startswith(
                "flowillower-checkpoints"):
            time.sleep(0.02)
        return line(self, entry)

    sized = _record(tmp_path / "sized", range(10), min_entry_points=16)
    size = max(e["bytes"] for e in CheckpointStore(sized).entries.values())
    monkeypatch.setattr(BackgroundWriter, "_line", slow_line)
    run_dir = _record(tmp_path / "busy", range(100), min_entry_points=8,
                      max_overhead=10.0, max_disk=12 * size)
    assert set(range(0, 100, 12)) <= set(_starts(run_dir))
    lines = [json.loads(x) for x in (run_dir / "checkpoints/manifest.jsonl").read_text()
             .splitlines()]
    assert not [x for x in lines if x["type"] in ("stopped", "thinned")]


def test_unknown_length_thins_old_entry_points_and_keeps_shared_files(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """A generator (no len): entry points double their stride at 2N, the odd ones' files
    are deleted, and a thinned file that later captures still point into (a tensor that
    stopped changing) stays: every kept entry loads. `$FLOWILLOWER_REPLAY_PARALLELISM`
    is the default; an explicit 0 turns it off."""
    monkeypatch.setenv("FLOWILLOWER_REPLAY_PARALLELISM", "8")
    net = torch.nn.Linear(4, 4)
    settled = torch.zeros(64)  # changes in the first 43 iterations, then never again
    run = fw.init(dir=tmp_path, snapshot=False)
    with fw.checkpointing(net=net, settled=settled, max_overhead=0.0):
        for epoch in fw.loop("epoch", (i for i in range(100))):
            with torch.no_grad():
                net.weight += 0.01
                if epoch < 43:
                    settled += 1
    fw.finish()
    store = CheckpointStore(run.dir)
    starts = _starts(run.dir)
    lines = [json.loads(x) for x in (store.dir / "manifest.jsonl").read_text().splitlines()]
    thinned = [x for x in lines if x["type"] == "thinned"]
    deleted = {f for x in thinned for f in x["files"]}
    protected = {f for x in thinned for f in x["kept"]}
    assert deleted and not any((store.dir / f).exists() for f in deleted)
    # Captured at stride 4, the start of iteration 44 is the first to hold `settled`'s
    # last value and later captures point into it: thinned at stride 8, its file stays
    # (whole, so it is still an entry point, one more than the stride gives).
    c44 = next(x["file"] for x in lines if x["type"] == "ckpt" and x["i"] == 44)
    assert protected == {c44} and (store.dir / c44).exists() and 44 in starts
    spread = [i for i in starts if i != 44]
    assert 8 <= len(spread) <= 16 and _evenly_spread(spread, 100) == 8
    for i in starts:
        tree = store.load(store.start(i))
        assert float(tree["objects"]["settled"].sum()) == 64 * min(i, 43)

    monkeypatch.setenv("FLOWILLOWER_REPLAY_PARALLELISM", "8")
    w = np.zeros(4)
    fw.init(dir=tmp_path / "off", snapshot=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: no policy
        with fw.checkpointing(w=w, max_overhead=0.0, min_entry_points=0) as rec:
            for _ in fw.loop("epoch", range(50)):
                w += 1
    fw.finish()
    assert rec.entries is None and rec.stats()["start_iterations"] == [0]


def test_bad_min_entry_points_fail_before_anything_is_recorded(tmp_path: Path,
                                                               monkeypatch) -> None:
    fw.init(dir=tmp_path, snapshot=False)
    try:
        with pytest.raises(ValueError, match="must not be negative"):
            with fw.checkpointing(w=np.zeros(2), min_entry_points=-1):
                pass
        monkeypatch.setenv("FLOWILLOWER_REPLAY_PARALLELISM", "lots")
        with pytest.raises(ValueError, match="FLOWILLOWER_REPLAY_PARALLELISM"):
            with fw.checkpointing(w=np.zeros(2)):
                pass
    finally:
        fw.finish()
    assert not list(tmp_path.rglob("manifest.jsonl"))  # no checkpoint folder started
