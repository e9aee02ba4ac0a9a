"""`replay --watch` of a resumed run and of a fork: each stretch with its own code.

A torch script trains with code v1, is killed with kill -9 in epoch 2, is edited to v2
(another learning rate) and restarted from its own checkpoint of epoch 1
(`fw.init(resume="auto")`); a variant forks off it at the end of epoch 2 and trains on
from its own checkpoint. The same happens, at the same points, to the same scripts with
`fw.watch(net)` added. Replaying `--watch model` on the unwatched runs must give, bit for
bit, at the same loop coordinates and steps, the statistics of the watched ones: each
stretch watched by its own code from its own start (a restarted process calls
`fw.watch` afresh: its weight statistics follow their schedule from there), each step
once, the fork's inherited steps from its parent's stretches; and nothing at all when
one stretch's worker fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import flowillower as fw
from flowillower.hindsight import groups
from flowillower.hindsight.replay import run_replay
from flowillower.hindsight.task import Packer
from flowillower.store.provenance import mark_pulled
from flowillower.store.reader import RunReader
from tests.conftest import clean_env
from tests.test_replay_watch import PayloadExecutor, watch_values

PY = sys.executable
EPOCHS = 4
DIE_AT = 2  # v1 is killed in this epoch; v2 restarts it from the end of the one before
FORK_STEP = 3 * 6 - 1  # the last training step of epoch 2 (6 steps an epoch)

# argv: CKPT_DIR [--from E] [--die-at E]. Its own checkpoints (one file per epoch) are
# what a restart loads; fw.checkpointing's are what the replay enters segments from.
TRAIN = '''
import os, sys, time
from pathlib import Path
import torch
import flowillower as fw

LR = {lr}
torch.set_num_threads(1)
ckdir = Path(sys.argv[1])
opts = dict(zip(sys.argv[2::2], map(int, sys.argv[3::2])))
start, die_at = opts.get("--from", 0), opts.get("--die-at", -1)
if os.environ.get("FORK_FROM"):
    fw.init(id="child", fork_from=(os.environ["FORK_FROM"], int(os.environ["FORK_STEP"])))
else:
    fw.init(resume="auto")
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                          torch.nn.Linear(12, 1))
opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
X = torch.randn(64, 5)
Y = X[:, :1] - X[:, 1:2] + 0.1 * torch.randn(64, 1)
if start:
    saved = torch.load(ckdir / f"epoch{{start - 1}}.pt")
    net.load_state_dict(saved["net"])
    opt.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
#WATCH
with fw.checkpointing(model=net, optimizer=opt, every=1):
    for epoch in fw.loop("epoch", range(start, {epochs}), start=start):
        if epoch == 1 and os.environ.get("WATCH_TEST_FAIL") and LR > 0.06:
            raise RuntimeError("injected failure in v1")
        net.train()
        perm = torch.randperm(64)
        for step in fw.loop("step", range(6)):
            idx = perm[step * 10:(step + 1) * 10]
            loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            fw.log("loss", loss.item())
        net.eval()
        with torch.no_grad():
            for vb in fw.loop("val", range(2)):
                fw.log("val", torch.nn.functional.mse_loss(net(X[vb::2]), Y[vb::2]).item())
        torch.save({{"net": net.state_dict(), "opt": opt.state_dict(),
                    "rng": torch.get_rng_state()}}, ckdir / f"epoch{{epoch}}.pt")
        if epoch == die_at:  # once the code snapshot and the last iteration are on disk
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
V1 = TRAIN.format(lr=0.08, epochs=EPOCHS)
V2 = TRAIN.format(lr=0.03, epochs=EPOCHS)


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    (path / "ck").mkdir()
    return path


def _train(root: Path, source: str, watched: bool, *argv: str, expect: int = 0,
           **env: str) -> subprocess.Popen:
    if watched:
        source = source.replace("#WATCH", "fw.watch(net)")
    (root / "train.py").write_text(textwrap.dedent(source).lstrip())
    return subprocess.Popen([PY, "train.py", str(root / "ck"), *argv], cwd=root,
                            env=clean_env(**env), stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen], expect: int) -> None:
    for proc in procs:
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == expect, err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 killed in epoch 2 and resumed under v2 from epoch 2; a v2 fork of it at the end
    of epoch 2 trained on from epoch 3 — once unwatched, once with fw.watch (the two
    projects' processes run side by side, step by step)."""
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("watch_resumed")
    plain, ref = _project(base / "unwatched"), _project(base / "watched")
    both = [(plain, False), (ref, True)]
    _wait([_train(r, V1, w, "--die-at", str(DIE_AT), FLOWILLOWER_RUN_ID="resumed")
           for r, w in both], -9)
    _wait([_train(r, V2, w, "--from", str(DIE_AT), FLOWILLOWER_RUN_ID="resumed")
           for r, w in both], 0)
    _wait([_train(r, V2, w, "--from", "3", FORK_FROM="resumed", FORK_STEP=str(FORK_STEP))
           for r, w in both], 0)
    runs = {name: {key: root / ".flowillower" / "runs" / name for key, root in
                   (("plain", plain), ("ref", ref))} for name in ("resumed", "child")}
    want = {name: watch_values(paths["ref"]) for name, paths in runs.items()}
    assert any(k.startswith("param/") for k in want["resumed"])
    return {"plain": plain, "runs": runs, "want": want}


def _quiet(_text: str) -> None:
    pass


def _split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny runs: make workers free to start and iterations long, so the planner splits
    each stretch at its checkpoints (later workers of a stretch start mid-process)."""
    original = groups.stretch_info

    def patched(stretch, whole=None):
        info = original(stretch, whole)
        info.setup_s = 0.0
        info.iter_times = [1.0] * len(info.iter_times)
        return info

    monkeypatch.setattr(groups, "stretch_info", patched)


def test_refusals_name_the_stretch_and_a_failed_stretch_stores_nothing(
        recorded: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "copy"
    shutil.copytree(recorded["plain"], root, symlinks=True)
    resumed = root / ".flowillower" / "runs" / "resumed"
    assert RunReader(resumed).meta["segments"] == 2
    bad = run_replay(watch="optimizer", runs="id == 'resumed'", dir=root, yes=True,
                     echo=_quiet)
    assert bad.runs[0].status == "failed"
    assert "'optimizer' was a stateful, not a torch module in segment 1 of 2" \
        in bad.runs[0].message
    # One stretch's worker fails (v1's code only): the run gets nothing at all, not
    # even the statistics of segment 2, whose worker succeeded.
    monkeypatch.setenv("WATCH_TEST_FAIL", "1")
    failed = run_replay(watch="model", runs="id == 'resumed'", dir=root, workers=2,
                        yes=True, echo=_quiet)
    (outcome,) = failed.runs
    assert outcome.status == "failed", str(failed)
    assert "segment 1 of 2" in outcome.message and "injected failure in v1" in outcome.message
    assert _replay_files(resumed) == []
    assert watch_values(resumed) == {}
    # A fork whose parent came from elsewhere (untrusted): its own part is watched, its
    # inherited steps are left without statistics, and the report says so.
    mark_pulled(root / ".flowillower", "resumed", "origin", author="mallory", host="far")
    child = root / ".flowillower" / "runs" / "child"
    report = fw.replay(watch="model", runs="id == 'child'", dir=root, yes=True, echo=_quiet)
    (outcome,) = report.runs
    assert outcome.status == "replayed" and outcome.tasks == 1, str(report)
    assert any("computed by run resumed" in n and "left without the new values" in n
               for n in outcome.notes), outcome.notes
    own = {k: [r for r in v if r[0][0] > DIE_AT] for k, v in recorded["want"]["child"].items()}
    assert watch_values(child) == {k: v for k, v in own.items() if v}


def _check(run_dir: Path, outcome, want: dict) -> dict:
    got = watch_values(run_dir)
    assert got == want  # the same names, loop coordinates, steps and bits
    assert watch_values(run_dir, replayed=False) == {}  # every one marked replayed
    assert len(list((run_dir / "replays").glob("*.fwl"))) == 1
    assert outcome.values == {"watch:model": sum(len(v) for v in got.values())}
    return got


def test_a_resumed_run_gets_a_fresh_watched_runs_statistics(
        recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root, resumed = recorded["plain"], recorded["runs"]["resumed"]["plain"]
    _split(monkeypatch)
    lines: list[str] = []
    report = fw.replay(watch="model", runs="id == 'resumed'", dir=root, workers=3,
                       yes=True, echo=lines.append)
    assert report.ok, str(report)
    (outcome,) = report.runs
    assert outcome.status == "replayed"
    assert outcome.tasks == 3  # segment 1, and segment 2 split: a worker starts mid-way
    schedule = "\n".join(lines)
    assert "segment 1 of 2" in schedule and "segment 2 of 2" in schedule
    got = _check(resumed, outcome, recorded["want"]["resumed"])
    epochs = [c[0] for c, _s, _v in got["act/0/mean"]]
    assert sorted(set(epochs)) == list(range(EPOCHS))
    # Segment 2's restarted process watched from its first step, the epoch's own, and
    # measured the weights there: a schedule over the whole run would not have.
    assert any(c[1:] == (-1, -1) and c[0] == DIE_AT
               for c, _s, _v in got["param/0.weight/norm"])


def test_a_fork_gets_its_parents_statistics_up_to_the_fork_step(
        recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Ray / Slurm executors' path: each stretch's task a self-contained
    payload (its own code tree and checkpoint folder), run where the store is not."""
    root, child = recorded["plain"], recorded["runs"]["child"]["plain"]
    pack = Packer.pack

    def checked(self: Packer, task: Any) -> Any:
        payload = pack(self, task)
        assert str(root / ".flowillower") not in payload.to_json()  # no store path travels
        return payload

    monkeypatch.setattr(Packer, "pack", checked)
    parent = recorded["runs"]["resumed"]["plain"]
    before = _replay_files(parent)
    executor = PayloadExecutor(workers=2)
    report = fw.replay(watch="model", runs="id == 'child'", dir=root, workers=2, yes=True,
                       echo=_quiet, executor=executor)
    assert report.ok, str(report)
    (outcome,) = report.runs
    assert executor.ran == outcome.tasks >= 3  # the parent's two segments, the fork's own
    assert "inherited from run resumed" in outcome.code_version
    _check(child, outcome, recorded["want"]["child"])
    assert _replay_files(parent) == before  # the parent gets nothing from the fork's


def _replay_files(run_dir: Path) -> list[str]:
    folder = run_dir / "replays"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
