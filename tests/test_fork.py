"""Forking a run: `fw.init(fork_from=(run, step))` starts a new run that holds its
parent's values up to the step (its own copy), its args, and records the parent."""

from __future__ import annotations

import json

import pytest

import flowillower as fw
from flowillower.store.reader import RunReader


def _frame(run_id: str, *names: str):
    fw.runs()  # fw.dataframe(runs=[ids]) reads the index unsynced (reported)
    return fw.dataframe(*names, runs=[run_id]).sort_values("step").reset_index(drop=True)


def _parent() -> str:
    run = fw.init(id="parent", snapshot=False)
    fw.arg("lr", 0.01)
    fw.config({"model": {"width": 64}})
    for step in range(10):
        fw.log("loss", 100.0 - step, step=step)
    fw.log("note", {"text": "done"}, step=9)
    fw.finish()
    return run.id


def test_fork_inherits_values_up_to_the_step_args_and_parent(store_dir):
    parent = _parent()
    child = fw.init(fork_from=(parent, 6), snapshot=False)
    assert child.id != parent
    # On disk at once, parent recorded, even before the fork logs anything.
    assert json.loads((child.dir / "run.json").read_text())["fork_of"]["run"] == parent
    assert fw.arg("lr", 1.0) == 1.0  # the child's own arg (no --kwargs) ...
    for step in range(7, 10):
        fw.log("loss", -float(step), step=step)
    fw.finish()
    df = _frame(child.id, "loss")
    assert df["step"].tolist() == list(range(10))
    assert df["loss"].tolist() == [100.0 - s for s in range(7)] + [-7.0, -8.0, -9.0]
    # Args: the parent's, with the child's own on top; the parent's config too.
    summary = json.loads((child.dir / "summary.json").read_text())
    assert summary["args"]["lr"] == 1.0 and summary["args"]["model.width"] == 64
    meta = json.loads((child.dir / "run.json").read_text())
    assert meta["fork_of"]["run"] == parent and meta["fork_of"]["step"] == 6
    # A value past the fork step (the note at 9) stays with the parent.
    assert "note" not in RunReader(child.dir).load().series
    # The parent is untouched.
    assert _frame(parent, "loss")["loss"].tolist() == [100.0 - s for s in range(10)]
    # `flowillower show` names the parent and the step.
    from click.testing import CliRunner

    from flowillower.cli import main as cli_main

    out = CliRunner().invoke(cli_main, ["show", child.id, "--dir", str(store_dir.parent)])
    assert out.exit_code == 0, out.output
    assert f"fork of   {parent} at step 6" in out.output


def test_fork_of_a_rewound_run_copies_what_readers_see(store_dir):
    fw.init(id="p", snapshot=False)
    for step in range(8):
        fw.log("loss", float(step), step=step)
    fw.finish("killed")
    fw.init(id="p", resume="must", snapshot=False)
    for step in range(3, 6):
        fw.log("loss", 50.0 + step, step=step)
    fw.finish()
    child = fw.init(fork_from=("p", 4), snapshot=False)
    fw.finish()
    assert _frame(child.id, "loss")["loss"].tolist() == [0.0, 1.0, 2.0, 53.0, 54.0]


def test_fork_arguments_are_checked(store_dir):
    with pytest.raises(ValueError, match="fork_from must be"):
        fw.init(fork_from="parent", snapshot=False)
    with pytest.raises(ValueError, match="step must be an int"):
        fw.init(fork_from=("parent", -1), snapshot=False)
    with pytest.raises(fw.FlowillowerError if hasattr(fw, "FlowillowerError") else Exception,
                       match="no run"):
        fw.init(fork_from=("missing", 3), snapshot=False)
    with pytest.raises(Exception, match="path"):
        fw.init(fork_from=("../x", 3), snapshot=False)


def test_fork_keeps_loop_coordinates(store_dir):
    fw.init(id="looped", snapshot=False)
    for _epoch in fw.loop("epoch", range(2)):
        for _batch in fw.loop("batch", range(3)):
            fw.log("loss", 1.0)
    fw.finish()
    child = fw.init(fork_from=("looped", 4), snapshot=False)
    fw.finish()
    data = RunReader(child.dir).load()
    loss = data.series["loss"]
    coords = [dict(zip(data.loop_names, data.ctx_coords[c].tolist())) for c in loss.ctx]
    assert loss.step.tolist() == [0, 1, 2, 3, 4]  # the innermost loop's global step
    assert [(c["epoch"], c["batch"]) for c in coords] == [(0, 0), (0, 1), (0, 2), (1, 0),
                                                           (1, 1)]
