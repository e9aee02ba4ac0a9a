"""An arg and a metric of the same name (`fw.arg("lr", ...)` and `fw.log("lr", ...)`) are
two series wherever they are read, never one merged series."""

from __future__ import annotations

import pytest

import flowillower as fw
from flowillower.store.reader import RunReader


@pytest.fixture
def run_dir(tmp_path):
    run = fw.init(dir=tmp_path, snapshot=False)
    fw.arg("lr", 0.1)  # the starting rate, a hyper-parameter
    for step in range(3):
        fw.log("lr", 0.01 * (step + 1), step=step)  # the schedule's rate at each step
        fw.log("loss", 1.0 / (step + 1), step=step)
    fw.finish()
    return run.dir


def test_the_reader_keeps_an_arg_and_a_metric_of_one_name_apart(run_dir):
    # asked for by name: both come, apart
    series = RunReader(run_dir).load(["lr", "loss"]).series
    assert (series["lr"].role, series["lr"].values.tolist()) == ("metric", [0.01, 0.02, 0.03])
    arg = series["args.lr"]
    assert (arg.name, arg.role, arg.values.tolist()) == ("lr", "arg", [0.1])
    assert series["loss"].values.tolist() == [1.0, 0.5, 1.0 / 3]
    # asked for by the filter engine's spellings: that role only, under that name
    only_arg = RunReader(run_dir).load(["args.lr"]).series
    assert only_arg["args.lr"].name == "args.lr" and only_arg["args.lr"].last() == 0.1
    assert only_arg["lr"].role == "arg"
    only_metric = RunReader(run_dir).load(["metrics.lr"]).series
    assert only_metric["metrics.lr"].values.tolist() == [0.01, 0.02, 0.03]
    assert "args.lr" not in only_metric


def test_dataframe_columns_keep_them_apart(run_dir, tmp_path):
    frame = fw.dataframe("lr", "loss", dir=tmp_path)
    assert frame["step"].tolist() == [0, 1, 2]
    assert frame["lr"].tolist() == [0.01, 0.02, 0.03]  # the metric, step by step
    both = fw.dataframe("lr", "args.lr", dir=tmp_path)
    assert both["lr"].tolist() == [0.01, 0.02, 0.03]
    assert both["args.lr"].tolist() == [0.1, 0.1, 0.1]  # the arg, on every row
    assert fw.dataframe("metrics.lr", dir=tmp_path)["metrics.lr"].tolist() == [
        0.01, 0.02, 0.03]


def test_an_arg_alone_reads_as_before(tmp_path):
    run = fw.init(dir=tmp_path, snapshot=False)
    fw.arg("lr", 0.1)
    fw.log("loss", 0.5, step=0)
    fw.finish()
    series = RunReader(run.dir).load().series
    assert set(series) == {"lr", "loss"} and series["lr"].role == "arg"
    assert fw.dataframe("args.lr", "loss", dir=tmp_path)["args.lr"].tolist() == [0.1]
    assert fw.dataframe("lr", "loss", dir=tmp_path)["lr"].tolist() == [0.1]
