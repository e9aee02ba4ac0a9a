"""Hydra: a real `@hydra.main` script with the FlowillowerCallback, run as a user runs it
(a subprocess, `--multirun` over three values): one run per job, in one process, one
sweep, each with its resolved config and overrides; a failing job; a replay of a job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.store.reader import RunReader

pytest.importorskip("hydra")

APP = '''
import hydra
import flowillower as fw


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    if cfg.training.lr < 0:
        raise ValueError("negative learning rate")
    for epoch in fw.loop("epoch", range(cfg.training.epochs)):
        fw.log("loss", cfg.training.lr * (epoch + 1))


if __name__ == "__main__":
    main()
'''

CONFIG = '''
training:
  lr: 0.1
  epochs: 3
  label: lr-${training.lr}
hydra:
  callbacks:
    flowillower:
      _target_: flowillower.integrations.hydra.FlowillowerCallback
      project: sweepy
'''


def _project(root: Path, app: str = APP) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(textwrap.dedent(app).lstrip())
    (root / "config.yaml").write_text(textwrap.dedent(CONFIG).lstrip())
    return root


def _run(root: Path, *argv: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWILLOWER_")}
    env["PYTHONPATH"] = str(Path(fw.__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "app.py", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"app.py {argv} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _runs(root: Path) -> list[dict]:
    out = []
    for d in sorted((root / ".flowillower" / "runs").iterdir()):
        meta = json.loads((d / "run.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        out.append({"dir": d, "meta": meta, "summary": summary})
    return sorted(out, key=lambda r: r["summary"]["args"].get("hydra.job.num", -1))


def _loss(run_dir: Path, name: str = "loss") -> list[float]:
    return RunReader(run_dir).load([name]).series[name].values.tolist()


def test_multirun_makes_one_run_per_job_in_one_sweep(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    _run(root, "--multirun", "training.lr=0.1,0.2,0.3")
    runs = _runs(root)
    assert len(runs) == 3
    sweeps = {r["summary"]["args"]["sweep"] for r in runs}
    assert len(sweeps) == 1 and (root / sweeps.pop()).is_dir()  # Hydra's sweep directory
    # Hydra's basic launcher runs the jobs one after another in one process.
    assert len({r["meta"]["pid"] for r in runs}) == 1
    for num, (run, lr) in enumerate(zip(runs, [0.1, 0.2, 0.3])):
        args = run["summary"]["args"]
        assert args["training.lr"] == lr and args["training.epochs"] == 3
        assert args["training.label"] == f"lr-{lr}"  # resolved, not "${training.lr}"
        assert args["hydra.overrides"] == f"training.lr={lr}"
        assert (args["hydra.job.num"], args["hydra.job.name"], args["hydra.mode"]) == (
            num, "app", "MULTIRUN")
        assert run["meta"]["project"] == "sweepy" and run["meta"]["name"] == f"app-{num}"
        assert run["meta"]["tags"] == [f"sweep:{args['sweep']}"]
        # The command that re-runs this job alone, not the whole sweep.
        assert run["meta"]["argv"] == ["app.py", f"training.lr={lr}"]
        assert run["summary"]["status"] == "success"
        # Nothing leaks from the job before: each run has only its own values.
        assert _loss(run["dir"]) == pytest.approx([lr, 2 * lr, 3 * lr])
    # The store's table lists the sweep as an arg column, and the UI's runs table groups
    # by it (its API answers what the page shows).
    table = fw.runs(dir=root / ".flowillower")
    assert sorted(table["sweep"].tolist()) == [args["sweep"]] * 3
    import warnings

    from flowillower.server.app import create_app

    with warnings.catch_warnings():  # starlette's note about httpx is not ours
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    with TestClient(create_app(root / ".flowillower"), base_url="http://127.0.0.1:8686") as c:
        grouped = c.get("/api/runs", params={"group": "arg:sweep"}).json()
    assert grouped["groups"] == [{"value": args["sweep"], "count": 3}]


def test_failed_job_is_a_failed_run_and_the_sweep_goes_on(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    proc = _run(root, "--multirun", "training.lr=0.5,-1,0.25", ok=False)
    assert "negative learning rate" in proc.stderr
    runs = _runs(root)
    # Hydra's launcher goes on after a failing job and reports the failure at the end.
    statuses = [(r["summary"]["args"]["training.lr"], r["summary"]["status"]) for r in runs]
    assert statuses == [(0.5, "success"), (-1, "failed"), (0.25, "success")]
    failed = runs[1]["summary"]
    assert "negative learning rate" in failed["error"]
    assert failed["args"]["training.label"] == "lr--1"  # the config is kept with the failure


def test_single_run_records_config_without_a_sweep(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    _run(root, "training.lr=0.5", "training.epochs=2")
    (run,) = _runs(root)
    args = run["summary"]["args"]
    assert "sweep" not in args and args["hydra.mode"] == "RUN"
    assert args["hydra.overrides"] == "training.lr=0.5 training.epochs=2"
    assert run["meta"]["tags"] == []
    assert _loss(run["dir"]) == pytest.approx([0.5, 1.0])


def test_job_calling_fw_init_joins_the_job(tmp_path: Path) -> None:
    app = APP.replace("    for epoch", '    fw.init(name=f"mine-{cfg.training.lr}", tags=["own"])\n'
                      "    for epoch")
    root = _project(tmp_path / "proj", app)
    _run(root, "--config-name", "config", "--multirun", "training.lr=0.1,0.2")
    runs = _runs(root)
    assert [r["meta"]["name"] for r in runs] == ["mine-0.1", "mine-0.2"]
    # Hydra's own flags stay in the job's command line, the sweep switch does not.
    assert [r["meta"]["argv"] for r in runs] == [
        ["app.py", "--config-name", "config", f"training.lr={lr}"] for lr in (0.1, 0.2)]
    for run in runs:
        assert run["meta"]["tags"] == ["own", f"sweep:{run['summary']['args']['sweep']}"]
        assert run["summary"]["args"]["training.label"].startswith("lr-")



DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "hydra.md"


def _doc_example() -> tuple[str, str, list[str]]:
    """The page's config.yaml, app.py and sweep command."""
    text = DOC.read_text()
    (config,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (app,) = re.findall(r"```python\n(.*?)```", text, re.S)
    command = re.findall(r"```bash\n(.*?)```", text, re.S)[0].splitlines()[0].split()
    assert command[:2] == ["python", "app.py"]
    return config, app, command[2:]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=root, check=True, capture_output=True)


def test_docs_example_sweeps_and_each_job_replays_alone(tmp_path: Path) -> None:
    """docs/integrations/hydra.md as written: three runs in one sweep; then the page's
    replay re-runs `app.py <the job's overrides>` (not the whole sweep) for each run,
    which gets the forgotten value computed with its own learning rate."""
    config, app, argv = _doc_example()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "config.yaml").write_text(config)
    (root / "app.py").write_text(app)
    (root / ".gitignore").write_text("multirun/\noutputs/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "sweep")
    _run(root, *argv)
    runs = _runs(root)
    lrs = [0.1, 0.2, 0.3]
    assert [r["summary"]["args"]["training.lr"] for r in runs] == lrs
    assert len({r["summary"]["args"]["sweep"] for r in runs}) == 1
    assert {r["meta"]["project"] for r in runs} == {"sweeps"}
    (root / "app.py").write_text(app.replace(
        '            fw.log("loss", 1 / w)\n',
        '            fw.log("loss", 1 / w)\n            fw.log("double", 2 * w)\n'))
    report = fw.replay("double", dir=root, yes=True, echo=lambda line: None)
    assert report.ok and len(report.runs) == 3, str(report)
    for run, lr in zip(_runs(root), lrs):
        w = [(1 + lr) ** (e + 1) for e in range(3)]
        assert _loss(run["dir"]) == pytest.approx([1 / x for x in w])
        assert _loss(run["dir"], "double") == pytest.approx([2 * x for x in w])
