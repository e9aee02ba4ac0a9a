"""A resumed run's later segment records its own checkpoints (`checkpoints/seg<N>/`).

A real kill -9 mid-run, a restart with resume="auto" from the user's own checkpoint
file, which is then overwritten as a later run would: segment 2's captures are in their
own folder with their own digests, hold the state segment 2 really had, leave segment
1's files untouched, are refused once changed, and count in `du`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight import ledger
from flowillower.hindsight.ckpt_store import CheckpointStore
from flowillower.store.reader import RunReader
from flowillower.store.usage import measure

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
        for step in fw.loop("step", range(3)):
            w += 0.1 * rng.randn(3)
        fw.log("loss", float((w ** 2).sum()))
        ckpt.write_bytes(pickle.dumps((w.copy(), rng.get_state(), epoch + 1)))
        if epoch == die_at:
            fw.flush()
            man = fw.current_run().dir / "checkpoints" / "manifest.jsonl"
            deadline = time.time() + 60
            while time.time() < deadline and not (
                    man.exists() and f'"type":"iter","i":{{epoch - 1}},' in man.read_text()):
                time.sleep(0.01)
            os.kill(os.getpid(), 9)
fw.finish()
'''


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FLOWILLOWER_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(fw.__file__).resolve().parent.parent)
    env.update(extra)
    return env


def _train(root: Path, *argv: str, expect: int = 0) -> None:
    proc = subprocess.run([sys.executable, "train.py", "6", *argv], cwd=root,
                          env=_env(FLOWILLOWER_RUN_ID="resumed"), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == expect, proc.stderr


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("resumed-ckpt") / "proj"
    root.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    (root / ".gitignore").write_text("ckpt.pkl\n")
    (root / "train.py").write_text(textwrap.dedent(TRAIN.format()).lstrip())
    _train(root, "--die-at", "2", expect=-9)
    run_dir = root / ".flowillower" / "runs" / "resumed"
    first = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()
             if p.is_file()}
    _train(root)
    (root / "ckpt.pkl").write_bytes(b"overwritten by a later run")
    return {"root": root, "run": run_dir, "first": first}


def test_segment_two_records_its_own_folder_and_leaves_segment_one_alone(
        resumed: dict) -> None:
    run_dir = resumed["run"]
    assert json.loads((run_dir / "run.json").read_text())["segments"] == 2
    now = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()
           if p.is_file()}
    assert now == resumed["first"]  # not a byte of segment 1's recording changed
    seg1, seg2 = CheckpointStore(run_dir), CheckpointStore(run_dir, "seg2")
    assert seg2.exists and seg2.dir == run_dir / "checkpoints" / "seg2"
    assert seg1.ended is None and seg2.ended == 3  # segment 1 was killed
    # Segment 2 restarted at epoch 3 (the user's file said so): its own entry points.
    assert min(i for kind, i, _m in seg2.entries if kind == "start") == 3
    assert all(seg2.skippable(i) for i in range(3, 6))
    recorded = ledger.read(ledger.run_ledger(run_dir))
    assert {n for n in recorded if n.startswith("seg2/")} == {
        "seg2/" + e["file"] for e in seg2.entries.values()}
    assert set(seg1.digests) == {n for n in recorded if "/" not in n}
    assert set(seg2.digests) == {e["file"] for e in seg2.entries.values()}


def test_segment_two_captures_hold_what_it_computed(resumed: dict) -> None:
    run_dir = resumed["run"]
    seg2 = CheckpointStore(run_dir, "seg2")
    data = RunReader(run_dir).load(["loss"])
    col = data.loop_names.index("epoch")
    series = data.series["loss"]
    loss = {int(data.ctx_coords[c][col]): float(v) for c, v in zip(series.ctx, series.values)}
    assert sorted(loss) == list(range(6))
    for i in range(3, 6):
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
