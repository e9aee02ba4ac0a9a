"""End-to-end hindsight replays: real scripts in git repos, real worker processes.

Correctness bar: replayed values are bit-identical to running the new script from scratch
with the same args. The torch tests share one recorded run (module fixture) to keep the
file fast; failure modes use numpy scripts (no torch import per process).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight import planner
from flowillower.store.reader import RunReader
from tests.conftest import clean_env, wait_for

PY = sys.executable


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    return path


def run_script(root: Path, script: str, source: str, *kwargs: str,
               store: Path | None = None, expect_ok: bool = True) -> subprocess.CompletedProcess:
    (root / script).write_text(textwrap.dedent(source).lstrip())
    env = clean_env(**({"FLOWILLOWER_DIR": str(store)} if store else {}))
    argv = [PY, script] + (["--kwargs", *kwargs] if kwargs else [])
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def run_ids(store_root: Path) -> list[str]:
    return sorted(p.name for p in (store_root / "runs").iterdir() if p.is_dir())


def values(run_dir: Path, name: str, replayed: bool | None = None) -> dict[tuple, float]:
    data = RunReader(run_dir).load([name])
    series = data.series[name]
    out = {}
    for ctx, step, value, rep in zip(series.ctx, series.step, series.values, series.replayed):
        if replayed is not None and bool(rep) != replayed:
            continue
        coords = tuple(int(c) for c in data.ctx_coords[ctx] if c >= 0)
        out[(coords, int(step))] = value.item() if hasattr(value, "item") else value
    return out


def quiet(_text: str) -> None:
    pass


def no_setup_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny test runs: make the planner believe a worker starts for free, so it splits
    the outer iterations among the workers."""
    original = planner.load_run_info

    def patched(run_dir: Path) -> planner.RunInfo:
        info = original(run_dir)
        info.setup_s = 0.0
        return info

    from flowillower.hindsight import replay as replay_module

    monkeypatch.setattr(planner, "load_run_info", patched)
    monkeypatch.setattr(planner, "PROCESS_EXIT_S", 0.0)
    monkeypatch.setattr(planner, "SPLIT_GAIN", 0.999)
    monkeypatch.setattr(replay_module, "load_run_info", patched)


# -- torch: the statements of the issue, bit for bit -------------------------------------------

OLD_TORCH = '''
    import torch
    import flowillower as fw

    torch.set_num_threads(1)
    torch.manual_seed(fw.arg("seed", 0))
    epochs = fw.arg("epochs", 3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=fw.arg("lr", 0.01))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    X = torch.randn(96, 6)
    Y = X.sum(1, keepdim=True) + 0.1 * torch.randn(96, 1)
    with fw.checkpointing(model=net, optimizer=opt, scheduler=sched, every=1):
        for epoch in fw.loop("epoch", range(epochs)):
            net.train()
            perm = torch.randperm(96)
            for step in fw.loop("step", range(6)):
                idx = perm[step * 16:(step + 1) * 16]
                loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                fw.log("loss", loss.item())
            sched.step()
            net.eval()
            with torch.no_grad():
                fw.log("val", torch.nn.functional.mse_loss(net(X), Y).item())
    print("trained")
'''

# The current version: `net` renamed to `model`, a comment line added, and new statements
# before the inner loop, after it (before and after sched.step()), inside it and after
# the loops.
NEW_TORCH = '''
    import torch
    import flowillower as fw

    torch.set_num_threads(1)
    torch.manual_seed(fw.arg("seed", 0))
    epochs = fw.arg("epochs", 3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=fw.arg("lr", 0.01))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    X = torch.randn(96, 6)
    Y = X.sum(1, keepdim=True) + 0.1 * torch.randn(96, 1)
    with fw.checkpointing(model=model, optimizer=opt, scheduler=sched, every=1):
        for epoch in fw.loop("epoch", range(epochs)):
            model.train()
            perm = torch.randperm(96)
            fw.log("w_start", model[0].weight.norm().item())
            for step in fw.loop("step", range(6)):
                idx = perm[step * 16:(step + 1) * 16]
                loss = torch.nn.functional.mse_loss(model(X[idx]), Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                fw.log("w_batch", model[0].weight[0, 0].item())
                fw.log("loss", loss.item())
            fw.log("grad_norm", model[0].weight.grad.norm().item())
            sched.step()
            fw.log("lr_after", sched.get_last_lr()[0])
            model.eval()
            # evaluation
            with torch.no_grad():
                fw.log("val", torch.nn.functional.mse_loss(model(X), Y).item())
    fw.log("final_w", model[-1].weight.sum().item())
    print("trained")
'''

OUTER_NAMES = ["w_start", "grad_norm", "lr_after", "final_w"]


@pytest.fixture(scope="module")
def torch_project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch")  # the scripts train a torch model
    base = tmp_path_factory.mktemp("torch")
    root = make_project(base / "proj")
    # The reference: the new script run from scratch with the same args, elsewhere
    # (both runs at once: two cores).
    ref_root = make_project(base / "ref")
    procs = []
    for where, source in ((root, OLD_TORCH), (ref_root, NEW_TORCH)):
        (where / "train.py").write_text(textwrap.dedent(source).lstrip())
        procs.append(subprocess.Popen([PY, "train.py", "--kwargs", "epochs=5", "lr=0.02",
                                       "seed=3"], cwd=where, env=clean_env(),
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = root / ".flowillower"
    (run_id,) = run_ids(store)
    (ref_id,) = run_ids(ref_root / ".flowillower")
    (root / "train.py").write_text(textwrap.dedent(NEW_TORCH).lstrip())
    return {"root": root, "run_dir": store / "runs" / run_id,
            "ref_dir": ref_root / ".flowillower" / "runs" / ref_id}


def _check_identical(project: dict, names: list[str]) -> None:
    for name in names:
        got = values(project["run_dir"], name, replayed=True)
        want = values(project["ref_dir"], name)
        assert got and got == want, name  # same coordinates, steps and bits


def test_outer_loop_statements_skip_inner_loops(torch_project: dict) -> None:
    root, run_dir = torch_project["root"], torch_project["run_dir"]
    status_before = _git(root, "status", "--porcelain")
    report = fw.replay(",".join(OUTER_NAMES), dir=root, yes=True, echo=quiet)
    assert report.ok, str(report)
    outcome = report.runs[0]
    assert "inner loops skipped via checkpoints" in outcome.strategy
    assert "after the loops" in outcome.strategy
    assert outcome.values == {"w_start": 5, "grad_norm": 5, "lr_after": 5, "final_w": 1}
    _check_identical(torch_project, OUTER_NAMES)
    # Written into the original run, same rows as the original values.
    (replay_file,) = (run_dir / "replays").glob("*.fwl")
    assert replay_file.name == f"{report.replay_id}.fwl"
    frame = fw.dataframe("loss", "val", "grad_norm", runs=run_dir.name, dir=root)
    assert frame["grad_norm"].notna().all() and len(frame) == 30
    epoch_rows = frame.drop_duplicates("epoch")
    assert epoch_rows["grad_norm"].tolist() == [
        v for _, v in sorted(values(torch_project["ref_dir"], "grad_norm").items())]
    events = [e for e in RunReader(run_dir).load().events if e.get("event") == "replay"]
    assert events[0]["code_version"] == outcome.code_version and events[0]["replayed"]
    assert "\n+        fw.log('grad_norm', net[0].weight.grad.norm().item())\n" in events[0]["patch"]
    # The user's working tree was never touched.
    assert (root / "train.py").read_text() == textwrap.dedent(NEW_TORCH).lstrip()
    assert _git(root, "status", "--porcelain") == status_before
    # Nothing left to do: a second replay finds every value present.
    again = fw.replay(OUTER_NAMES, dir=root, yes=True, echo=quiet)
    assert [r.status for r in again.runs] == ["complete"]


def test_outer_loop_statements_with_two_workers(torch_project: dict,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(torch_project["run_dir"] / "replays", ignore_errors=True)
    no_setup_cost(monkeypatch)
    lines: list[str] = []
    report = fw.replay(OUTER_NAMES, dir=torch_project["root"], workers=2, yes=True,
                       echo=lines.append)
    assert report.ok, str(report)
    assert report.runs[0].tasks >= 2  # split among the workers
    assert f"{report.runs[0].tasks} tasks" in lines[0]  # the schedule came first
    _check_identical(torch_project, OUTER_NAMES)


def test_inner_loop_statement_two_workers(torch_project: dict,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    no_setup_cost(monkeypatch)
    report = fw.replay("w_batch", dir=torch_project["root"], workers=2, yes=True, echo=quiet)
    assert report.ok, str(report)
    assert "re-executed from the nearest checkpoint" in report.runs[0].strategy
    assert report.runs[0].values == {"w_batch": 30}
    _check_identical(torch_project, ["w_batch"])


# -- failure modes and fall-backs (numpy scripts: fast workers) --------------------------------

OLD_NP = '''
    import os
    import time
    import numpy as np
    import flowillower as fw

    rng = np.random.RandomState(fw.arg("seed", 0))
    w = np.zeros(4)
    state = {"t": 0}
    with fw.checkpointing(w=w, rng=rng, state=state):
        for epoch in fw.loop("epoch", range(fw.arg("epochs", 5))):
            for step in fw.loop("step", range(4)):
                w += 0.1 * rng.randn(4)
                state["t"] += 1
            fw.log("loss", float(w.sum()))
            if epoch == fw.arg("die_at", -1):
                # kill -9 once the run has recorded its code snapshot (replay needs it)
                meta = fw.current_run().dir / "run.json"
                deadline = time.time() + 30
                while time.time() < deadline and '"snapshot"' not in (
                        meta.read_text() if meta.exists() else ""):
                    time.sleep(0.01)
                os.kill(os.getpid(), 9)
    fw.log("end", 1.0)
'''


def _new_np(old: str, extra: str = "") -> str:
    return old.replace('''            fw.log("loss", float(w.sum()))''', '''            fw.log("loss", float(w.sum()))
            fw.log("wmax", float(w.max()))''' + extra).replace(
        '''    fw.log("end", 1.0)''', '''    fw.log("end", 1.0)
    fw.log("wfinal", float(w.min()))''')


def test_killed_run_replays_what_exists(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    proc = run_script(root, "train.py", OLD_NP, "die_at=3", expect_ok=False)
    assert proc.returncode == -9
    ref = make_project(tmp_path / "ref")
    run_script(ref, "train.py", _new_np(OLD_NP), "die_at=-1")
    (root / "train.py").write_text(textwrap.dedent(_new_np(OLD_NP)).lstrip())
    report = fw.replay("wmax,wfinal", dir=root, yes=True, echo=quiet)
    (outcome,) = report.runs
    assert outcome.status == "replayed", str(report)
    assert any("wfinal" in note and "cannot be replayed" in note for note in outcome.notes)
    (run_id,) = run_ids(root / ".flowillower")
    got = values(root / ".flowillower" / "runs" / run_id, "wmax")
    (ref_id,) = run_ids(ref / ".flowillower")
    want = values(ref / ".flowillower" / "runs" / ref_id, "wmax")
    assert sorted(got) == [((e,), e) for e in range(3)]  # the 3 completed epochs
    assert got == {k: want[k] for k in got}


def test_run_without_checkpoints_is_re_executed(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    plain = OLD_NP.replace("    with fw.checkpointing(w=w, rng=rng, state=state):\n", "    if True:\n")
    run_script(root, "train.py", plain, "epochs=3")
    ref = make_project(tmp_path / "ref")
    run_script(ref, "train.py", _new_np(plain), "epochs=3")
    (root / "train.py").write_text(textwrap.dedent(_new_np(plain)).lstrip())
    lines: list[str] = []
    report = fw.replay("wmax", dir=root, yes=True, echo=lines.append)
    assert report.ok, str(report)
    assert "no checkpoints recorded" in "\n".join(lines)
    assert "re-executed from the start" in report.runs[0].strategy
    (run_id,) = run_ids(root / ".flowillower")
    (ref_id,) = run_ids(ref / ".flowillower")
    assert values(root / ".flowillower" / "runs" / run_id, "wmax") == values(
        ref / ".flowillower" / "runs" / ref_id, "wmax")


def test_run_whose_checkpoints_hit_max_disk_replays_exactly(tmp_path: Path) -> None:
    """Recording stops at the disk budget (with a warning); the replay restores what was
    recorded and re-executes the rest, bit-identical to running the new script."""
    capped = OLD_NP.replace("with fw.checkpointing(w=w, rng=rng, state=state):",
                            'with fw.checkpointing(w=w, rng=rng, state=state, every=1, '
                            'max_disk=fw.arg("max_disk", "40kB")):')
    root = make_project(tmp_path / "proj")
    proc = run_script(root, "train.py", capped, "epochs=6")
    assert "checkpoints stopped at iteration" in proc.stderr and "max_disk=40,000" in proc.stderr
    (run_id,) = run_ids(root / ".flowillower")
    ckpt_dir = root / ".flowillower" / "runs" / run_id / "checkpoints"
    files = list(ckpt_dir.glob("c*"))
    assert 0 < len(files) < 13  # unbounded, every=1 over 6 epochs writes 13
    assert sum(f.stat().st_size for f in files) <= 40_000
    from flowillower.hindsight.checkpoint import CheckpointStore

    store = CheckpointStore(ckpt_dir.parent)
    skippable = [i for i in range(6) if store.skippable(i)]
    assert skippable and skippable == list(range(len(skippable))) and len(skippable) < 6
    ref = make_project(tmp_path / "ref")
    run_script(ref, "train.py", _new_np(capped), "epochs=6", "max_disk=1GB")
    (root / "train.py").write_text(textwrap.dedent(_new_np(capped)).lstrip())
    report = fw.replay("wmax", dir=root, yes=True, echo=quiet)
    assert report.ok, str(report)
    (ref_id,) = run_ids(ref / ".flowillower")
    got = values(root / ".flowillower" / "runs" / run_id, "wmax")
    assert sorted(got) == [((e,), e) for e in range(6)]
    assert got == values(ref / ".flowillower" / "runs" / ref_id, "wmax")


def test_failures_are_reported_and_other_runs_go_on(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", OLD_NP, "epochs=2")  # never reaches epoch 2
    run_script(root, "train.py", OLD_NP, "epochs=4", "seed=1")  # will raise in replay
    run_script(root, "train.py", OLD_NP, "epochs=2", "seed=2")  # its snapshot goes missing
    run_script(root, "train.py", OLD_NP, "epochs=2", "seed=4")  # its worker gets Ctrl-C
    store = root / ".flowillower"
    seeds = {}
    for run_id in run_ids(store):
        series = RunReader(store / "runs" / run_id).load(["seed"]).series
        seeds[series["seed"].last() if "seed" in series else 0] = run_id
    ok_id, raising_id, broken_id, sigint_id = (seeds[k] for k in (0, 1, 2, 4))
    meta_path = store / "runs" / broken_id / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["git"]["snapshot"] = "0" * 40
    meta_path.write_text(json.dumps(meta))
    new = _new_np(OLD_NP, "\n            fw.log(\"ratio\", 1.0 / (2 - epoch) + (os.kill(os.getpid(), 2)"
                          " or 0.0 if fw.arg(\"seed\", 0) == 4 and epoch == 1 else 0.0))")
    (root / "train.py").write_text(textwrap.dedent(new).lstrip())
    report = fw.replay("wmax,ratio", dir=root, yes=True, echo=quiet)
    assert not report.ok
    ok, raising, broken, sigint = (report.outcome(r) for r in (ok_id, raising_id, broken_id,
                                                                sigint_id))
    assert ok.status == "replayed" and ok.values == {"wmax": 2, "ratio": 2}
    assert raising.status == "failed"
    assert "ZeroDivisionError" in raising.message and "no values were written" in raising.message
    assert broken.status == "failed" and "snapshot" in broken.message
    assert sigint.status == "failed" and "SIGINT" in sigint.message
    for run_id in (raising_id, broken_id, sigint_id):
        assert not list((store / "runs" / run_id).glob("replays/*"))
        assert "wmax" not in RunReader(store / "runs" / run_id).load().series
    assert "wmax" in RunReader(store / "runs" / ok_id).load().series


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", OLD_NP, "epochs=3")
    slow = _new_np(OLD_NP, "\n            fw.log(\"slow\", time.sleep(2) or 1.0)")
    (root / "train.py").write_text(textwrap.dedent(slow).lstrip())
    code = "import flowillower as fw; fw.replay('slow', yes=True)"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([PY, "-c", code], cwd=root, env=clean_env(TMPDIR=str(scratch)),
                            stderr=subprocess.PIPE, text=True)

    def in_slow_epoch() -> bool:
        # "skipped": the worker restored epoch 0's inner loop and runs the slow statement
        return any("skipped" in p.read_text().split("\n") for p in
                   scratch.glob("flowillower-replay-*/*/attempt0-task0/progress"))

    wait_for(in_slow_epoch, timeout=30, what="a replay worker inside the slow epoch")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert "interrupted" in err, err
    assert proc.returncode != 0
    (run_id,) = run_ids(root / ".flowillower")
    assert not list((root / ".flowillower" / "runs" / run_id).glob("replays/*"))
    assert not list(scratch.iterdir())  # temporary checkouts removed


def test_cli_confirmation_and_json(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flowillower.cli import main

    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", OLD_NP, "epochs=2")
    (root / "train.py").write_text(textwrap.dedent(_new_np(OLD_NP)).lstrip())
    runner = CliRunner()
    declined = runner.invoke(main, ["replay", "wmax", "--dir", str(root)], input="n\n")
    assert declined.exit_code == 0, declined.output
    assert "strategy: outer loop (epoch); inner loops" in declined.output
    (run_id,) = run_ids(root / ".flowillower")
    assert not (root / ".flowillower" / "runs" / run_id / "replays").exists()
    done = runner.invoke(main, ["replay", "wmax", "-y", "--json", "--dir", str(root)])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.output[done.output.index("{\n"):])
    assert payload["ok"] and payload["runs"][0]["values"] == {"wmax": 2}


def test_script_without_fw_loop_is_re_executed(tmp_path: Path) -> None:
    old = '''
        import numpy as np
        import flowillower as fw

        w = np.zeros(3)
        for e in range(3):
            with fw.iteration("epoch", e):
                w += e
                fw.log("loss", float(w.sum()))
    '''
    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", old)
    new = old.replace('fw.log("loss", float(w.sum()))',
                      'fw.log("loss", float(w.sum()))\n                fw.log("w0", float(w[0]))')
    (root / "train.py").write_text(textwrap.dedent(new).lstrip())
    report = fw.replay("w0", dir=root, yes=True, echo=quiet)
    assert report.ok, str(report)
    assert "no fw.loop" in report.runs[0].strategy
    (run_id,) = run_ids(root / ".flowillower")
    assert values(root / ".flowillower" / "runs" / run_id, "w0") == {
        ((0,), 0): 0.0, ((1,), 1): 1.0, ((2,), 2): 3.0}


def test_a_notebook_run_says_how_to_replay_it(tmp_path: Path) -> None:
    """A run started in Jupyter (the integration writes notebook.json) is refused with the
    way out, not a misleading message about ipykernel's launcher script."""
    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", OLD_NP, "epochs=2")
    store = root / ".flowillower"
    (run_id,) = run_ids(store)
    (store / "runs" / run_id / "notebook.json").write_text('{"path": "explore.ipynb"}')
    report = fw.replay("extra", dir=root, yes=True, echo=quiet)
    (outcome,) = report.runs
    assert outcome.status == "failed" and "Jupyter notebook" in outcome.message
    assert "nbconvert" in outcome.message
