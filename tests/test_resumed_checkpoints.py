"""A resumed run's later segment records its own checkpoints (`checkpoints/seg<N>/`).

A real kill -9 mid-run, a restart with resume="auto" from the user's own checkpoint
file, which is then overwritten as a later run would: segment 2's captures are in their
own folder with their own digests, hold the state segment 2 really had, leave segment
1's files untouched, are refused once changed, and count in `du`.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import flowillower as fw
from flowillower.hindsight import ledger
from flowillower.hindsight.ckpt_store import CheckpointStore
from flowillower.store.reader import RunReader
from flowillower.store.usage import measure, plan_prune
from tests.conftest import clean_env

# argv: EPOCHS [--die-at E]. Restarts from the user's own `ckpt.pkl` (overwritten each
# epoch, git-ignored), as the colleague's reproduction did.
TRAIN = '''
import os, pickle, sys, time
from pathlib import Path
import numpy as np
import flowillower as fw

epochs = int(sys.argv[1])
die_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1
ckpt = Path("ckpt.pkl")
fw.init(resume="auto")
w, rng, start = np.zeros(3), np.random.RandomState(0), 0
if ckpt.exists():
    w[:], state, start = pickle.loads(ckpt.read_bytes())
    rng.set_state(state)
with fw.checkpointing(w=w, rng=rng, every=1):
    for epoch in fw.loop("epoch", range(start, epochs), start=start):
        ckpt.write_bytes(pickle.dumps((w.copy(), rng.get_state(), epoch)))  # entering it
        for step in fw.loop("step", range(3)):
            w += {lr} * rng.randn(3)
        fw.log("loss", float((w ** 2).sum()))
        if epoch == die_at:
            fw.flush()
            run_dir = fw.current_run().dir  # once its code snapshot and manifest are out
            waits = ((run_dir / "run.json", '"snapshot"'), (run_dir / "checkpoints" /
                     "manifest.jsonl", f'"type":"iter","i":{{epoch - 1}},'))
            deadline = time.time() + 60
            while time.time() < deadline and not all(
                    p.exists() and text in p.read_text() for p, text in waits):
                time.sleep(0.01)
            os.kill(os.getpid(), 9)
fw.finish()
'''
# groups.py's note when the plan a worker is handed cannot name segment 2's folder.
V1, V2 = TRAIN.format(lr=0.1), TRAIN.format(lr=0.05)  # edited between crash and restart
LOSS = '''        fw.log("loss", float((w ** 2).sum()))
'''
PROBE = LOSS + '''        fw.log("probe", float(w.sum()) * 3.0)
'''


def _train(root: Path, source: str, *argv: str, expect: int = 0) -> None:
    (root / "train.py").write_text(textwrap.dedent(source).lstrip())
    proc = subprocess.run([sys.executable, "train.py", "6", *argv], cwd=root,
                          env=clean_env(FLOWILLOWER_RUN_ID="resumed"), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == expect, proc.stderr


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    (path / ".gitignore").write_text("ckpt.pkl\n")
    return path


def _by_epoch(run_dir: Path, name: str) -> dict[int, float]:
    """{epoch: value} as readers see the run (rewinds applied), each epoch once."""
    data = RunReader(run_dir).load([name])
    col = data.loop_names.index("epoch")
    series = data.series[name]
    epochs = [int(data.ctx_coords[c][col]) for c in series.ctx]
    assert len(epochs) == len(set(epochs)), epochs
    return dict(zip(epochs, (float(v) for v in series.values)))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("resumed-ckpt")
    root = _project(base / "proj")
    _train(root, V1, "--die-at", "2", expect=-9)
    run_dir = root / ".flowillower" / "runs" / "resumed"
    first = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()
             if p.is_file()}
    _train(root, V2)
    # A later run overwrites the user's git-ignored file: restarting segment 2's script
    # now would start from the wrong state.
    (root / "ckpt.pkl").write_bytes(pickle.dumps(
        (np.ones(3), np.random.RandomState(1).get_state(), 3)))
    # The reference: the same crash and restart, each segment's code with the statement.
    ref = _project(base / "ref")
    _train(ref, V1.replace(LOSS, PROBE), "--die-at", "2", expect=-9)
    _train(ref, V2.replace(LOSS, PROBE))
    return {"root": root, "run": run_dir, "first": first,
            "want": _by_epoch(ref / ".flowillower" / "runs" / "resumed", "probe")}


def test_segment_two_records_its_own_folder_and_leaves_segment_one_alone(
        resumed: dict) -> None:
    run_dir = resumed["run"]
    assert json.loads((run_dir / "run.json").read_text())["segments"] == 2
    now = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()
           if p.is_file()}
    assert now == resumed["first"]  # not a byte of segment 1's recording changed
    seg1, seg2 = CheckpointStore(run_dir), CheckpointStore(run_dir, "seg2")
    assert seg2.exists and seg2.dir == run_dir / "checkpoints" / "seg2"
    assert seg1.ended is None and seg2.ended == 4  # segment 1 was killed
    # Segment 2 redid epoch 2 (the user's file said so): its own entry points.
    assert min(i for kind, i, _m in seg2.entries if kind == "start") == 2
    assert all(seg2.skippable(i) for i in range(2, 6))
    recorded = ledger.read(ledger.run_ledger(run_dir))
    assert {n for n in recorded if n.startswith("seg2/")} == {
        "seg2/" + e["file"] for e in seg2.entries.values()}
    assert set(seg1.digests) == {n for n in recorded if "/" not in n}
    assert set(seg2.digests) == {e["file"] for e in seg2.entries.values()}


def test_segment_two_captures_hold_what_it_computed(resumed: dict) -> None:
    run_dir = resumed["run"]
    seg2 = CheckpointStore(run_dir, "seg2")
    loss = _by_epoch(run_dir, "loss")
    assert sorted(loss) == list(range(6))
    for i in range(2, 6):
        w = seg2.load(seg2.entries[("inner", i, 0)])["objects"]["w"]
        # The state after epoch i's inner loop gives exactly the loss the run logged.
        assert float((w ** 2).sum()) == loss[i]


def test_a_tampered_segment_capture_is_refused(resumed: dict, tmp_path: Path) -> None:
    run_dir = resumed["run"]
    seg2 = CheckpointStore(run_dir, "seg2")
    entry = seg2.entries[("start", 3, 0)]
    path = seg2.dir / entry["file"]
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(ledger.UntrustedCheckpoint, match="changed since"):
            CheckpointStore(run_dir, "seg2").load(entry)
    finally:
        path.write_bytes(original)
    # A segment folder name can never point elsewhere.
    for bad in ("../resumed", "seg2/..", "seg0", "/tmp"):
        with pytest.raises(ValueError):
            CheckpointStore(run_dir, bad)


def test_du_counts_the_segment_folders(resumed: dict) -> None:
    run_dir = resumed["run"]
    usage = {r.id: r for r in measure(run_dir.parent.parent).runs}["resumed"]
    on_disk = sum(p.stat().st_size for p in (run_dir / "checkpoints").rglob("*")
                  if p.is_file())
    seg2 = sum(p.stat().st_size for p in (run_dir / "checkpoints" / "seg2").rglob("*")
               if p.is_file())
    assert seg2 > 0 and usage.kinds["checkpoints"] == on_disk
    # gc frees the whole folder, the segment's own included (values are never touched).
    (cand,) = plan_prune([{"id": "resumed", "created": 0.0, "status": "success"}],
                         run_dir.parent.parent, keep_last=0, older_than_days=None)
    assert cand.bytes["checkpoints"] == on_disk and "values" not in cand.bytes


def test_replay_enters_segment_two_at_its_own_checkpoints(resumed: dict) -> None:
    """The statement added after the crash replays bit for bit as each segment's code
    computes it fresh, segment 2 from its own captures (its restart file is gone)."""
    root, run_dir = resumed["root"], resumed["run"]
    (root / "train.py").write_text(textwrap.dedent(V2.replace(LOSS, PROBE)).lstrip())
    lines: list[str] = []
    report = fw.replay("probe", runs="id == 'resumed'", dir=root, yes=True,
                       echo=lines.append)
    (outcome,) = report.runs
    schedule = "\n".join(lines)
    assert outcome.status == "replayed", str(report)
    assert _by_epoch(run_dir, "probe") == resumed["want"]  # bit for bit, each epoch once
    assert sorted(resumed["want"]) == list(range(6))
    assert "segment 2 of 2: outer loop (epoch); inner loops skipped" in outcome.strategy
    assert "re-executed from the start" not in outcome.strategy
    assert "no checkpoints of its own" not in schedule


def test_replay_refuses_a_changed_segment_two_capture(resumed: dict) -> None:
    root, run_dir = resumed["root"], resumed["run"]
    (root / "train.py").write_text(textwrap.dedent(V2.replace(LOSS, PROBE.replace(
        '"probe"', '"probe_tampered"'))).lstrip())
    seg2 = CheckpointStore(run_dir, "seg2")
    path = seg2.dir / seg2.entries[("inner", 3, 0)]["file"]  # what skipping epoch 3 loads
    original = path.read_bytes()
    before = sorted((run_dir / "replays").glob("*"))
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size
        lines: list[str] = []
        report = fw.replay("probe_tampered", runs="id == 'resumed'", dir=root, yes=True,
                           echo=lines.append)
    finally:
        path.write_bytes(original)
    (outcome,) = report.runs
    assert outcome.status == "failed", str(report)
    assert "refusing to load checkpoint" in outcome.message
    assert "seg2" in outcome.message
    assert sorted((run_dir / "replays").glob("*")) == before  # nothing stored


@pytest.mark.parametrize("engine", ["local", "slurm-local"])
def test_workers_and_self_contained_tasks_use_segment_two_captures(
        resumed: dict, tmp_path: Path, engine: str) -> None:
    """Two workers; with submitit's local executor each task carries only the files it
    reads, from segment 2's own folder (and its digest record), in its payload."""
    root, run_dir = resumed["root"], resumed["run"]
    name = f"probe_{engine.replace('-', '_')}"
    (root / "train.py").write_text(textwrap.dedent(V2.replace(LOSS, PROBE.replace(
        '"probe"', f'"{name}"'))).lstrip())
    executor = None
    if engine == "slurm-local":
        pytest.importorskip("submitit")
        from flowillower.hindsight.slurm_executor import SlurmExecutor

        executor = SlurmExecutor(tmp_path / "submitit", workers=2, cluster="local")
    lines: list[str] = []
    report = fw.replay(name, runs="id == 'resumed'", dir=root, yes=True, workers=2,
                       echo=lines.append, executor=executor)
    assert report.ok, str(report)
    (outcome,) = report.runs
    assert "segment 2 of 2: outer loop (epoch); inner loops skipped" in outcome.strategy
    assert _by_epoch(run_dir, name) == resumed["want"]


def test_min_entry_points_spread_from_a_resumed_loops_first_index(tmp_path: Path) -> None:
    """A segment's loop restarted at epoch 5 of 45 (`fw.loop(..., start=5)`) with
    min_entry_points=4 gets its own four evenly spread entry points: 5, 15, 25, 35."""
    w = np.zeros(64)
    run = fw.init(dir=tmp_path, snapshot=False)
    with pytest.warns(UserWarning, match="entry points win"):
        with fw.checkpointing(w=w, max_overhead=0.0, min_entry_points=4):
            for _epoch in fw.loop("epoch", range(40), start=5):
                for _step in fw.loop("step", range(2)):
                    w += 0.5
    fw.finish()
    store = CheckpointStore(run.dir)
    assert sorted(i for kind, i, _m in store.entries if kind == "start") == [5, 15, 25, 35]
