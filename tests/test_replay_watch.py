"""`replay --watch NAME`: `fw.watch` statistics for runs that never watched their model.

The bar: the replayed statistics (activations with their histograms, gradient norms,
weight norms and update ratios) are bit-identical, at the same loop coordinates and
steps, to those of a fresh run of the same script with `fw.watch(model)` added where
`fw.checkpointing` starts — also when the replay is split into segments that start from
checkpoints, and when the segments run as self-contained payloads (the Ray / Slurm path).
One recorded run and one watched reference serve the whole file (module fixture).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight import planner
from flowillower.hindsight.executor import Executor, Task, TaskResult
from flowillower.hindsight.replay import run_replay
from flowillower.hindsight.task import Packer, run_payload, unpack_result
from flowillower.hindsight.watch_replay import fresh_param_steps
from flowillower.model.schedule import Schedule
from flowillower.store.provenance import mark_pulled
from flowillower.store.reader import RunReader
from tests.conftest import clean_env

PY = sys.executable

# Training with a validation loop after the training loop: both report steps to a
# watcher, so the weight statistics' schedule depends on every earlier step (at the start
# of epoch 2, where the replay is split, a fresh run last measured the weights at
# validation step 2: a segment that took its first iteration for step 0 would measure).
SCRIPT = '''
    import os
    import torch
    import flowillower as fw

    torch.set_num_threads(1)
    torch.manual_seed(fw.arg("seed", 0))
    net = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(12, 1))
    opt = torch.optim.SGD(net.parameters(), lr=fw.arg("lr", 0.05), momentum=0.9)
    X = torch.randn(64, 5)
    Y = X[:, :1] - X[:, 1:2] + 0.1 * torch.randn(64, 1)
    #WATCH
    with fw.checkpointing(model=net, optimizer=opt, every=1):
        for epoch in fw.loop("epoch", range(fw.arg("epochs", 4))):
            if epoch == 3 and os.environ.get("WATCH_TEST_FAIL"):
                raise RuntimeError("injected failure")
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
'''


def _project(path: Path, watched: bool) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    source = textwrap.dedent(SCRIPT).lstrip()
    if watched:
        source = source.replace("#WATCH", "fw.watch(net)")
    (path / "train.py").write_text(source)
    return path


def _run_dir(root: Path) -> Path:
    (run,) = [p for p in (root / ".flowillower" / "runs").iterdir() if p.is_dir()]
    return run


def watch_values(run_dir: Path, replayed: bool | None = None) -> dict[str, list]:
    """Every `fw.watch` statistic: name -> sorted (coords, step, value) triples."""
    data = RunReader(run_dir).load()
    out: dict[str, list] = {}
    for name, s in data.series.items():
        if s.role != "watch":
            continue
        rows = []
        for ctx, step, value, rep in zip(s.ctx, s.step, s.values, s.replayed):
            if replayed is not None and bool(rep) != replayed:
                continue
            coords = tuple(int(c) for c in data.ctx_coords[ctx])
            value = value.tolist() if hasattr(value, "tolist") else value
            rows.append((coords, int(step), json.dumps(value)))
        if rows:
            out[name] = sorted(rows, key=lambda r: r[:2])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("watch")
    plain = _project(base / "plain", watched=False)
    ref = _project(base / "ref", watched=True)
    procs = [subprocess.Popen([PY, "train.py", "--kwargs", "seed=7", "epochs=4"], cwd=where,
                              env=clean_env(), stderr=subprocess.PIPE, text=True)
             for where in (plain, ref)]
    for proc in procs:
        _out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    want = watch_values(_run_dir(ref))
    assert any(k.startswith("act/") for k in want) and any(k.startswith("param/") for k in want)
    return {"base": base, "plain": plain, "ref": ref, "want": want}


def _copy(runs: dict, name: str) -> Path:
    """A fresh copy of the unwatched project (each test replays its own)."""
    target = runs["base"] / name
    shutil.copytree(runs["plain"], target, symlinks=True)
    return target


def _split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny runs: make workers free to start and iterations long, so the planner
    splits at checkpoints."""
    original = planner.load_run_info

    def patched(run_dir: Path) -> planner.RunInfo:
        info = original(run_dir)
        info.setup_s = 0.0
        info.iter_times = [1.0] * len(info.iter_times)
        return info

    from flowillower.hindsight import replay as replay_module

    monkeypatch.setattr(planner, "load_run_info", patched)
    monkeypatch.setattr(replay_module, "load_run_info", patched)


def quiet(_text: str) -> None:
    pass


def test_replayed_statistics_are_a_fresh_watched_runs_bit_for_bit(
        runs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(runs, "local")
    _split(monkeypatch)
    report = fw.replay(watch="model", dir=root, workers=2, yes=True, echo=quiet)
    assert report.ok, str(report)
    outcome = report.runs[0]
    assert outcome.status == "replayed" and outcome.tasks == 2  # two segments
    assert "inner loops re-executed" in outcome.strategy
    run_dir = _run_dir(root)
    got = watch_values(run_dir)
    assert got == runs["want"]  # same names, coordinates, steps and bits
    assert watch_values(run_dir, replayed=False) == {}  # every one marked replayed
    assert outcome.values == {"watch:model": sum(len(v) for v in got.values())}
    (event,) = [e for e in RunReader(run_dir).load().events if e.get("event") == "replay"]
    assert event["watch"] == {"name": "model", "every": 1, "param_every": 10}
    # Readers see them: the index row (runs table, model page) and fw.dataframe.
    frame = fw.dataframe("act/0/mean", "loss", runs=run_dir.name, dir=root)
    assert frame["act/0/mean"].notna().sum() == len(got["act/0/mean"])
    from flowillower.store.catalog import Store

    (index_row,) = Store(root / ".flowillower").runs()
    stats = index_row["metrics"]["grad/0.weight/norm"]
    assert stats["role"] == "watch" and stats["replayed"]
    # Asked again: refused clearly, unless forced.
    again = fw.replay(watch="model", dir=root, yes=True, echo=quiet)
    assert again.runs[0].status == "skipped"
    assert "already has fw.watch statistics" in again.runs[0].message
    # --force-watch gets past that (here to the next refusal: no such registered name).
    from click.testing import CliRunner

    from flowillower.cli import main

    forced = CliRunner().invoke(main, ["replay", "--watch", "net", "--force-watch", "-y",
                                       "--dir", str(root / ".flowillower")])
    assert "registered no 'net' with fw.checkpointing" in forced.output, forced.output


def test_segments_as_self_contained_payloads(runs: dict,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of the Ray and Slurm executors: each task packed, run where neither the
    store nor the repository is, its files (the side file too) shipped back. With a
    value name too: one replay, one file."""
    root = _copy(runs, "payload")
    script = root / "train.py"
    script.write_text(script.read_text().replace(
        '    fw.log("val", ', '    fw.log("w_norm", net[0].weight.norm().item())\n'
        '                fw.log("val", '))
    _split(monkeypatch)
    executor = PayloadExecutor(workers=2)
    report = fw.replay("w_norm", watch="model", dir=root, script=script, workers=2, yes=True,
                       echo=quiet, executor=executor)
    assert report.ok, str(report)
    assert report.runs[0].tasks == 2 and executor.ran == 2
    assert report.runs[0].values["w_norm"] == 8  # 4 epochs x 2 validation batches
    assert watch_values(_run_dir(root)) == runs["want"]
    assert len(list((_run_dir(root) / "replays").glob("*.fwl"))) == 1


class PayloadExecutor(Executor):
    """Runs each task as `ray_executor` does on a node: packed, unpacked elsewhere."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.ran = 0

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        from concurrent.futures import ThreadPoolExecutor

        packer = Packer()
        payloads = [packer.pack(task) for task in tasks]
        for payload in payloads:
            assert "/plain" not in payload.to_json()  # no driver path travels
        with ThreadPoolExecutor(self.workers) as pool:  # each payload in its own folder
            outs = list(pool.map(lambda p: run_payload(p, packer.shared(p.tree_key) or b"",
                                                       packer.shared(p.ckpt_key)), payloads))
        results = {}
        for task, out in zip(tasks, outs):
            unpack_result(task.scratch, out)
            self.ran += 1
            results[task.id] = TaskResult(task.id, out["returncode"], out["seconds"])
            on_done(task, results[task.id])
        return results


def test_cli_refusals_and_a_failed_segment_stores_nothing(
        runs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from flowillower.cli import main

    root = _copy(runs, "refusals")
    store = str(root / ".flowillower")
    cli = CliRunner()
    result = cli.invoke(main, ["replay", "--dir", store, "-y"])
    assert result.exit_code == 2 and "--watch model" in result.output
    result = cli.invoke(main, ["replay", "--watch", "nope", "--dir", store, "-y"])
    assert result.exit_code == 1
    assert "registered no 'nope' with fw.checkpointing (registered: model, optimizer)" \
        in result.output
    result = cli.invoke(main, ["replay", "--watch", "optimizer", "--dir", store, "-y"])
    assert result.exit_code == 1 and "'optimizer' was a stateful, not a torch module" \
        in result.output
    run_dir = _run_dir(root)
    # A segment that fails: no statistics at all, not even the other segment's.
    _split(monkeypatch)
    monkeypatch.setenv("WATCH_TEST_FAIL", "1")
    report = run_replay(watch="model", dir=root, workers=2, yes=True, echo=quiet)
    assert report.runs[0].tasks == 2
    assert report.runs[0].status == "failed" and "injected failure" in report.runs[0].message
    assert _replay_files(run_dir) == []
    monkeypatch.delenv("WATCH_TEST_FAIL")
    # A run from elsewhere is not executed without trust, as for any replay.
    mark_pulled(root / ".flowillower", run_dir.name, "origin", author="mallory", host="far")
    result = cli.invoke(main, ["replay", "--watch", "model", "--dir", store, "-y"])
    assert "left out 1 run(s) from elsewhere" in result.output
    assert "--trust-author mallory" in result.output
    assert _replay_files(run_dir) == []


def _replay_files(run_dir: Path) -> list[str]:
    folder = run_dir / "replays"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_weight_statistics_follow_the_fresh_runs_schedule() -> None:
    """The driver's pick over all segments' watched steps is `Schedule.params_due`'s."""
    steps = [0, 0, 1, 2, 3, 0, 1, 4, 5, 6, 7, 2, 3, 8, 9, 10, 11, 12, 4, 5]
    schedule = Schedule(1, None, 3)
    assert fresh_param_steps(steps, 1, 3) == [schedule.params_due(s) for s in steps]
    assert fresh_param_steps([0, 1, 2, 3, 0], 1, 3) == [True, False, False, True, True]
