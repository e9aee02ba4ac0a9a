"""Hindsight replay of a resumed run and of a fork: each stretch with its own code.

A script trains with code v1, is killed with kill -9 at epoch 3, is edited to v2 (another
learning rate, another scale in what it logs) and restarted from its own checkpoint of
epoch 2 (`fw.init(resume="auto")`, found through $FLOWILLOWER_RUN_ID). Replaying a new
statement must give, bit for bit, what a fresh run of v1 with the statement logs for
epochs 0-2 and what a fresh run of v2 restarted from the same checkpoint logs for 3-5,
each epoch once, and nothing at all when one stretch's worker fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.store.reader import RunReader
from tests.conftest import clean_env

PY = sys.executable
EPOCHS = 6

# argv: EPOCHS CKPT_DIR [--from E] [--die-at E]. Its own checkpoints (one file per epoch,
# never overwritten) are what a restart loads; fw.checkpointing's are what replay uses.
TRAIN = '''
import os, pickle, sys, time
from pathlib import Path
import numpy as np
import flowillower as fw

LR = {lr}
SCALE = {scale}
epochs, ckdir = int(sys.argv[1]), Path(sys.argv[2])
opts = dict(zip(sys.argv[3::2], map(int, sys.argv[4::2])))
start, die_at = opts.get("--from", 0), opts.get("--die-at", -1)
fork = os.environ.get("FORK_FROM")
if fork:  # a variant branching off a finished run
    fw.init(id="child", fork_from=(fork, int(os.environ["FORK_STEP"])))
else:
    fw.init(resume="auto")
rng = np.random.RandomState(0)
w = np.zeros(3)
if start:
    saved_w, saved_rng = pickle.loads((ckdir / f"epoch{{start - 1}}.pkl").read_bytes())
    w[:] = saved_w
    rng.set_state(saved_rng)
with fw.checkpointing(w=w, rng=rng):
    for epoch in fw.loop("epoch", range(start, epochs), start=start):
        for step in fw.loop("step", range(3)):
            w += LR * rng.randn(3)
        fw.log("loss", float((w ** 2).sum()) * SCALE)
        (ckdir / f"epoch{{epoch}}.pkl").write_bytes(pickle.dumps((w.copy(), rng.get_state())))
        if epoch == die_at:  # once the snapshot and the last iteration are on disk
            fw.flush()
            run_dir = fw.current_run().dir
            done = f'"type":"iter","i":{{epoch - 1}},'
            deadline = time.time() + 60
            while time.time() < deadline and not all(
                    p.exists() and text in p.read_text() for p, text in
                    ((run_dir / "run.json", '"snapshot"'),
                     (run_dir / "checkpoints" / "manifest.jsonl", done))):
                time.sleep(0.01)
            os.kill(os.getpid(), 9)
fw.finish()
'''
V1 = TRAIN.format(lr=0.1, scale=1.0)
V2 = TRAIN.format(lr=0.05, scale=1000.0)
PROBE = '''        fw.log("loss", float((w ** 2).sum()) * SCALE)
        fw.log("probe", float(w.sum()) * SCALE)
'''


def _with(source: str, statement: str) -> str:
    anchor = '''        fw.log("loss", float((w ** 2).sum()) * SCALE)\n'''
    assert anchor in source
    return source.replace(anchor, statement)


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


def _train(root: Path, source: str, *argv: str, ckpt: str, expect: int = 0,
           **env: str) -> None:
    """Run the script; `ckpt`: its own checkpoint folder (one per line of runs: a restart
    loads what its earlier process saved there, no other run overwrites it)."""
    (root / "train.py").write_text(textwrap.dedent(source).lstrip())
    (root / ckpt).mkdir(exist_ok=True)
    proc = subprocess.run([PY, "train.py", str(EPOCHS), str(root / ckpt), *argv],
                          cwd=root, env=clean_env(**env), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == expect, proc.stderr


def _by_epoch(run_dir: Path, name: str) -> dict[int, float]:
    """{epoch: value} as readers see the run (rewinds applied); each epoch once."""
    data = RunReader(run_dir).load([name])
    series = data.series[name]
    col = data.loop_names.index("epoch")
    epochs = [int(data.ctx_coords[c][col]) for c in series.ctx]
    assert len(epochs) == len(set(epochs)), f"an epoch appears twice: {epochs}"
    return dict(zip(epochs, (float(v) for v in series.values)))


def _quiet(_text: str) -> None:
    pass


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run killed at epoch 3 under v1 and resumed under v2 from epoch 3, and fresh
    references: v1 with the probe, v2 with the probe restarted from the same epoch 2."""
    base = tmp_path_factory.mktemp("resumed")
    root = _project(base / "proj")
    _train(root, V1, "--die-at", "3", ckpt="c1", expect=-9, FLOWILLOWER_RUN_ID="resumed-run")
    _train(root, V2, "--from", "3", ckpt="c1", FLOWILLOWER_RUN_ID="resumed-run")
    ref = _project(base / "ref")
    _train(ref, _with(V1, PROBE), ckpt="c1", FLOWILLOWER_RUN_ID="ref-v1")
    _train(ref, _with(V2, PROBE), "--from", "3", ckpt="c1", FLOWILLOWER_RUN_ID="ref-v2")
    # A finished v1 run, and a v2 variant forked off it after epoch 2.
    _train(root, V1, ckpt="c2", FLOWILLOWER_RUN_ID="parent")
    parent = root / ".flowillower" / "runs" / "parent"
    data = RunReader(parent).load(["loss"])
    col = data.loop_names.index("epoch")
    series = data.series["loss"]
    step_at = {int(data.ctx_coords[c][col]): int(s) for c, s in zip(series.ctx, series.step)}
    _train(root, V2, "--from", "3", ckpt="c2", FORK_FROM="parent", FORK_STEP=str(step_at[2]))
    # Killed in epoch 1 under v1, restarted from scratch under v2: v1 owns nothing.
    _train(root, V1, "--die-at", "1", ckpt="c3", expect=-9, FLOWILLOWER_RUN_ID="restarted")
    _train(root, V2, ckpt="c3", FLOWILLOWER_RUN_ID="restarted")
    return {"root": root, "run": root / ".flowillower" / "runs" / "resumed-run",
            "parent": parent, "child": root / ".flowillower" / "runs" / "child",
            "v1": _by_epoch(ref / ".flowillower" / "runs" / "ref-v1", "probe"),
            "v2": _by_epoch(ref / ".flowillower" / "runs" / "ref-v2", "probe")}


def test_each_segment_replays_with_its_own_code(recorded: dict) -> None:
    root, run_dir = recorded["root"], recorded["run"]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["segments"] == 2
    assert meta["segments_env"][0]["argv"][3:] == ["--die-at", "3"]  # how v1 was started
    assert meta["argv"][3:] == ["--from", "3"]
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE)).lstrip())
    lines: list[str] = []
    report = fw.replay("probe", runs="id == 'resumed-run'", dir=root, yes=True,
                       echo=lines.append)
    (outcome,) = report.runs
    assert outcome.status == "replayed", str(report)
    v1, v2 = recorded["v1"], recorded["v2"]
    want = {e: v1[e] for e in range(3)} | {e: v2[e] for e in range(3, EPOCHS)}
    assert _by_epoch(run_dir, "probe") == want  # bit for bit, each epoch once
    assert all(abs(want[e]) > 100 * abs(want[2]) for e in range(3, EPOCHS))  # v2's scale
    assert _by_epoch(run_dir, "loss").keys() == want.keys()
    schedule = "\n".join(lines)
    assert "segment 1 of 2" in schedule and "segment 2 of 2" in schedule
    assert "owns iterations 0..2 of 'epoch'" in schedule
    # Segment 1 with its checkpoints, segment 2 with its own (checkpoints/seg2/).
    assert "segment 1 of 2: outer loop (epoch); inner loops skipped" in outcome.strategy
    assert "segment 2 of 2: outer loop (epoch); inner loops skipped" in outcome.strategy
    (replay_file,) = (run_dir / "replays").glob("*.fwl")
    from flowillower.store.reader import decode_values

    (event,) = [ev for evs, _b in decode_values(replay_file.read_bytes()).frames
                for ev in evs if ev.get("event") == "replay"]
    first, second = event["stretches"]
    assert (first["segment"], second["segment"]) == (1, 2)
    assert first["snapshot"] != second["snapshot"]  # two code versions
    assert first["snapshot"] == meta["segments_git"][0]["snapshot"]
    assert second["snapshot"] == meta["git"]["snapshot"]
    df = fw.dataframe("probe", runs=["resumed-run"], dir=root)
    assert sorted(df["epoch"].tolist()) == list(range(EPOCHS))


def test_one_failing_segment_stores_nothing(recorded: dict) -> None:
    """v1's SCALE is 1.0: the statement divides by zero in segment 1's worker only."""
    root, run_dir = recorded["root"], recorded["run"]
    before = sorted((run_dir / "replays").glob("*")) if (run_dir / "replays").exists() else []
    bad = '''        fw.log("loss", float((w ** 2).sum()) * SCALE)
        fw.log("ratio", float(w.sum()) / (SCALE - 1.0))
'''
    (root / "train.py").write_text(textwrap.dedent(_with(V2, bad)).lstrip())
    report = fw.replay("ratio", runs="id == 'resumed-run'", dir=root, yes=True, echo=_quiet)
    (outcome,) = report.runs
    assert outcome.status == "failed", str(report)
    assert "segment 1 of 2" in outcome.message and "ZeroDivisionError" in outcome.message
    assert "no values were written" in outcome.message
    after = sorted((run_dir / "replays").glob("*")) if (run_dir / "replays").exists() else []
    assert after == before  # segment 2 succeeded, yet the run got nothing
    assert "ratio" not in RunReader(run_dir).load(["ratio"]).series


def test_fork_replays_its_inherited_part_with_the_parents_code(recorded: dict) -> None:
    root, parent, child = recorded["root"], recorded["parent"], recorded["child"]
    assert json.loads((child / "run.json").read_text())["fork_of"]["run"] == "parent"
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE.replace(
        '"probe"', '"probe_fork"'))).lstrip())
    report = fw.replay("probe_fork", runs="id == 'child'", dir=root, yes=True, echo=_quiet)
    assert report.ok, str(report)
    assert "inherited from run parent" in report.runs[0].code_version
    v1, v2 = recorded["v1"], recorded["v2"]
    want = {e: v1[e] for e in range(3)} | {e: v2[e] for e in range(3, EPOCHS)}
    assert _by_epoch(child, "probe_fork") == want
    assert "probe_fork" not in RunReader(parent).load(["probe_fork"]).series  # untouched


@pytest.mark.parametrize("engine", ["local", "slurm-local"])
def test_workers_and_self_contained_tasks(recorded: dict, tmp_path: Path, engine: str) -> None:
    """Two local workers, or submitit's local executor (each task a self-contained
    payload: its stretch's own code tree and checkpoints, no shared store)."""
    root, run_dir = recorded["root"], recorded["run"]
    name = f"probe_{engine.replace('-', '_')}"
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE.replace(
        '"probe"', f'"{name}"'))).lstrip())
    executor = None
    if engine == "slurm-local":
        pytest.importorskip("submitit")
        from flowillower.hindsight.slurm_executor import SlurmExecutor

        executor = SlurmExecutor(tmp_path / "submitit", workers=2, cluster="local")
    report = fw.replay(name, runs="id == 'resumed-run'", dir=root, yes=True, workers=2,
                       echo=_quiet, executor=executor)
    assert report.ok, str(report)
    assert report.runs[0].tasks >= 2  # one task per stretch at least
    v1, v2 = recorded["v1"], recorded["v2"]
    want = {e: v1[e] for e in range(3)} | {e: v2[e] for e in range(3, EPOCHS)}
    assert _by_epoch(run_dir, name) == want


def test_a_statement_before_the_loop_is_read_once_from_the_last_segment(recorded: dict
                                                                          ) -> None:
    """Every segment's set-up logs it at the same step: the later one rewinds it."""
    root, run_dir = recorded["root"], recorded["run"]
    source = _with(V2, PROBE).replace('''w = np.zeros(3)
''', '''w = np.zeros(3)
fw.log("scale_at_start", SCALE)
''')
    (root / "train.py").write_text(textwrap.dedent(source).lstrip())
    report = fw.replay("scale_at_start", runs="id == 'resumed-run'", dir=root, yes=True,
                       echo=_quiet)
    assert report.ok, str(report)
    series = RunReader(run_dir).load(["scale_at_start"]).series["scale_at_start"]
    assert series.values.tolist() == [1000.0]  # v2's, once (v1's is rewound)


def test_replay_workers_never_resume_or_fork_in_the_real_store(
        recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's script forks when FORK_FROM is set and finds the store through
    $FLOWILLOWER_DIR: with both in the replay's environment its workers would continue
    or fork runs of the real store (and fail: `child` exists). They start fresh runs in
    their scratch stores instead; the store gains nothing but the replay file."""
    root, child = recorded["root"], recorded["child"]
    store = root / ".flowillower"
    monkeypatch.setenv("FLOWILLOWER_DIR", str(root))
    monkeypatch.setenv("FORK_FROM", "parent")
    monkeypatch.setenv("FORK_STEP", "2")
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE.replace(
        '"probe"', '"probe_env"'))).lstrip())
    runs_before = sorted(p.name for p in (store / "runs").iterdir())
    files_before = sorted(p.name for p in child.iterdir())
    report = fw.replay("probe_env", runs="id == 'child'", dir=root, yes=True, echo=_quiet)
    assert report.ok, str(report)
    assert sorted(p.name for p in (store / "runs").iterdir()) == runs_before
    assert sorted(p.name for p in child.iterdir()) == sorted({*files_before, "replays"})
    v1, v2 = recorded["v1"], recorded["v2"]
    want = {e: v1[e] for e in range(3)} | {e: v2[e] for e in range(3, EPOCHS)}
    assert _by_epoch(child, "probe_env") == want


def test_a_fork_whose_parent_is_gone_says_what_it_replays(recorded: dict) -> None:
    root, parent, child = recorded["root"], recorded["parent"], recorded["child"]
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE.replace(
        '"probe"', '"probe_orphan"'))).lstrip())
    aside = parent.parent.parent / "parent-aside"
    parent.rename(aside)
    try:
        report = fw.replay("probe_orphan", runs="id == 'child'", dir=root, yes=True,
                           echo=_quiet)
    finally:
        aside.rename(parent)
    assert report.ok, str(report)
    (outcome,) = report.runs
    assert any("computed by run parent" in n and "left without the new values" in n
               for n in outcome.notes), outcome.notes
    v2 = recorded["v2"]
    assert _by_epoch(child, "probe_orphan") == {e: v2[e] for e in range(3, EPOCHS)}


def test_a_segment_rewound_entirely_is_not_replayed(recorded: dict) -> None:
    root = recorded["root"]
    run_dir = root / ".flowillower" / "runs" / "restarted"
    (root / "train.py").write_text(textwrap.dedent(_with(V2, PROBE.replace(
        '"probe"', '"probe_restarted"'))).lstrip())
    report = fw.replay("probe_restarted", runs="id == 'restarted'", dir=root, yes=True,
                       echo=_quiet)
    assert report.ok, str(report)
    (outcome,) = report.runs
    assert outcome.tasks == 1  # segment 2 alone
    assert any("segment 1 of 2: every iteration it ran was rewound" in n
               for n in outcome.notes), outcome.notes
    got = _by_epoch(run_dir, "probe_restarted")
    assert sorted(got) == list(range(EPOCHS))
    assert all(abs(v) > 10 for v in got.values())  # v2's scale: all from segment 2
