"""Notebook runs become replay scripts: nbclient executes a real .ipynb on a real kernel,
the run's executed cells become a script, the edited notebook's new statement is carried
into it, and running that script gives the values a fresh execution of the edited
notebook gives, bit for bit. Notebooks a script cannot reproduce are refused, naming the
cell and the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight.notebook import (
    NotReplayable,
    job_sources,
    out_of_order,
    replay_source,
)
from flowillower.hindsight.transplant import transplant
from flowillower.store.reader import RunReader

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    "%load_ext flowillower.integrations.jupyter\nimport random\nimport flowillower as fw",
    "random.seed(3)\nweights = [random.gauss(0, 1) for _ in range(4)]",
    'run = fw.init(project="nb")',
    "for epoch in fw.loop(\"epoch\", range(4)):\n"
    "    weights = [w - 0.1 * w + random.gauss(0, 0.01) for w in weights]\n"
    "    fw.log(\"loss\", sum(w * w for w in weights))",
    "fw.show()",
    "run",
    "fw.finish()",
]
NEW = '    fw.log("w_sum", sum(weights))\n'


def _execute(folder: Path, cells: list[str], store: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / "analysis.ipynb")
    old = os.environ.get("FLOWILLOWER_DIR")
    os.environ["FLOWILLOWER_DIR"] = str(store)  # the kernel inherits it
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        if old is None:
            os.environ.pop("FLOWILLOWER_DIR", None)
        else:
            os.environ["FLOWILLOWER_DIR"] = old


def _values(store: Path, name: str) -> list[tuple[tuple, float]]:
    out = []
    for run in sorted((store / "runs").iterdir()):
        data = RunReader(run).load([name])
        if name in data.series:
            s = data.series[name]
            out += [(tuple(int(c) for c in coords if c >= 0), v)
                    for coords, v in zip(data.ctx_coords[s.ctx], s.values.tolist())]
    return out


def test_executed_cells_replay_a_new_statement_to_fresh_notebook_values(
        tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(Path(fw.__file__).resolve().parent.parent))
    for var in ("JPY_SESSION_NAME", "FLOWILLOWER_NOTEBOOK"):
        monkeypatch.delenv(var, raising=False)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)  # a snapshot to replay
    _execute(folder, CELLS, folder / ".flowillower")
    (run_dir,) = (folder / ".flowillower" / "runs").iterdir()
    meta = RunReader(run_dir).meta

    # The user adds a statement to the loop's cell and saves the notebook.
    edited = list(CELLS)
    edited[3] += "\n" + NEW.rstrip()
    nb = nbformat.read(folder / "analysis.ipynb", as_version=4)
    nb.cells[3].source = edited[3]
    nbformat.write(nb, folder / "analysis.ipynb")
    rel, old, new, notes = job_sources(run_dir, meta)
    assert rel == "analysis.replay.py" and notes == []
    assert "%load_ext" not in old and "fw.show" not in old  # dropped: no effect in a script
    result = transplant(old, new, ["w_sum"])
    assert "w_sum" in result.source and "w_sum" not in old

    # What a replay worker runs: the script, as a plain Python process.
    script = tmp_path / "tree" / rel
    script.parent.mkdir()
    script.write_text(result.source)
    replay_store = tmp_path / "replay" / ".flowillower"
    env = {**os.environ, "FLOWILLOWER_DIR": str(replay_store)}
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # A fresh execution of the edited notebook on a new kernel.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _execute(fresh, edited, fresh / ".flowillower")
    replayed, expected = _values(replay_store, "w_sum"), _values(fresh / ".flowillower",
                                                                  "w_sum")
    assert replayed == expected and len(expected) == 4  # bit-identical, keyed by epoch
    assert [c for c, _ in expected] == [(0,), (1,), (2,), (3,)]
    assert _values(replay_store, "loss") == _values(folder / ".flowillower", "loss")

    # The same end to end through fw.replay: the driver builds the script itself and
    # stores the values in the notebook's run.
    report = fw.replay("w_sum", dir=folder, yes=True, echo=lambda *_: None)
    (outcome,) = report.runs
    assert outcome.status == "replayed", str(report)
    assert _values(folder / ".flowillower", "w_sum") == expected


@pytest.mark.parametrize("cell, why", [
    ("!pip install numpy", "runs a shell command (`!pip install numpy`)"),
    ("files = !ls", "runs a shell command (`files = !ls`)"),
    ("%run other.py", "uses the magic `%run other.py`"),
    ("%%bash\necho hi", "uses the cell magic `%%bash`"),
    ("x = 1\n%cd /tmp", "line 2 uses the magic `%cd /tmp`"),
])
def test_cells_a_script_cannot_reproduce_are_named(cell: str, why: str) -> None:
    with pytest.raises(NotReplayable, match="executed cell 2 .*" + why.replace(
            "(", r"\(").replace(")", r"\)").replace("%", "%").replace("!", "!")):
        replay_source(["import flowillower as fw", cell, 'fw.init(project="p")'])


def test_harmless_magics_are_dropped_and_earlier_runs_refused() -> None:
    source = replay_source(["%matplotlib inline\n%load_ext autoreload\n%autoreload 2\nx = 1",
                            "import flowillower as fw\nfw.init()", "fw.show()"])
    assert "x = 1" in source and "%" not in source and "show" not in source
    with pytest.raises(NotReplayable, match="started runs in executed cells 2, 4"):
        replay_source(["import flowillower as fw", "fw.init()", "fw.finish()", "fw.init()"])


def test_cells_run_out_of_the_notebooks_order_are_noted() -> None:
    notebook = ["a = 1", "b = a + 1", "c = b + 1"]
    assert out_of_order(["a = 1", "c = b + 1", "b = a + 1"], notebook) == [
        "executed cell 3 (notebook cell 2) ran after a cell placed below it: replayed in "
        "the order it ran"]
    assert out_of_order(notebook, notebook) == []


def test_a_run_without_recorded_cells_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotReplayable, match="no executed cells") as refused:
        job_sources(tmp_path, {})
    assert "Jupyter notebook" in str(refused.value) and "nbconvert" in str(refused.value)
    (tmp_path / "notebook.json").write_text(json.dumps({"path": "x", "cells": [],
                                                        "left_out": "a secret pattern"}))
    with pytest.raises(NotReplayable, match="a secret pattern"):
        job_sources(tmp_path, {})
