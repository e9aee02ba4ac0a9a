"""An arg and a metric of the same name (`fw.arg("lr", ...)` and `fw.log("lr", ...)`) are
two series wherever they are read, never one merged series."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

import flowillower as fw
from flowillower.store import index_journal
from flowillower.store.index_rows import scan_run
from flowillower.store.reader import RunReader
from tests.conftest import ok


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


@pytest.fixture(params=["finish row", "scanned"])
def store_root(request, run_dir):
    """The store of `run_dir`, its index row as the run wrote it at finish (from the
    writer's statistics) or gone (readers decode the run: `index_rows.scan_run`)."""
    if request.param == "scanned":
        (run_dir / index_journal.ROW_FILE).unlink()
    return run_dir.parent.parent


def test_the_runs_table_and_filters_keep_them_apart(store_root, run_dir, tmp_path):
    table = fw.runs(dir=tmp_path)
    assert table["lr"].tolist() == [0.1] and table["metric.lr"].tolist() == [0.03]
    assert table["metric.lr.min"].tolist() == [0.01]
    assert table["metric.lr.max"].tolist() == [0.03]
    assert len(fw.runs("args.lr == 0.1", dir=tmp_path)) == 1
    assert len(fw.runs("metrics.lr > 0.02", dir=tmp_path)) == 1
    assert len(fw.runs("metrics.lr < 0.02", dir=tmp_path)) == 0
    series = RunReader(run_dir).load().series  # a whole-run load too
    assert series["lr"].role == "metric" and series["lr"].values.tolist() == [0.01, 0.02, 0.03]
    assert (series["args.lr"].name, series["args.lr"].role, series["args.lr"].last()) == (
        "lr", "arg", 0.1)


def test_the_index_row_keeps_them_apart(store_root, run_dir):
    parts = scan_run(run_dir)
    assert parts.args == [("lr", "0.1")]
    assert [m[:7] for m in parts.metrics if m[0] == "lr"] == [
        ("lr", "metric", "float", 3, "0.03", 0.01, 0.03)]
    row = index_journal.read_row(run_dir)
    if row is not None:  # the writer's own row says the same as the reader's scan
        assert (row.args, row.metrics) == (parts.args, parts.metrics)


def test_ls_json_keeps_them_apart(store_root):
    def ls(*args: str) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "flowillower", "ls", *args, "--json",
                               "--dir", str(store_root)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    [row] = ls()
    assert row["args"] == {"lr": 0.1}
    stats = row["metrics"]["lr"]
    assert (stats["last"], stats["min"], stats["max"], stats["count"]) == (0.03, 0.01, 0.03, 3)
    assert len(ls("args.lr == 0.1")) == 1 and len(ls("args.lr > 0.1")) == 0
    assert len(ls("metrics.lr == 0.03")) == 1 and len(ls("metrics.lr == 0.1")) == 0


def test_the_uis_runs_table_keeps_them_apart(store_root):
    with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from flowillower.server.app import create_app

    with TestClient(create_app(store_root, sync_interval=0.1),
                    base_url="http://127.0.0.1:8686") as client:
        data = ok(client.get("/api/runs", params={"col": ["arg:lr", "last:lr", "best:lr"]}))
        columns = {c["key"]: c for c in data["columns"]}
        assert columns["arg:lr"]["group"] == "args" and columns["last:lr"]["group"] == "metrics"
        assert data["rows"][0]["cells"] == {"arg:lr": 0.1, "last:lr": 0.03, "best:lr": 0.03}
        for q, matched in (("args.lr == 0.1", 1), ("metrics.lr == 0.1", 0),
                           ("metrics.lr < 0.05", 1), ("args.lr < 0.05", 0)):
            assert ok(client.get("/api/runs", params={"q": q}))["matched"] == matched, q


def test_a_replay_plans_with_the_arg_not_the_metric(run_dir):
    from flowillower.hindsight.planner import load_run_info

    info = load_run_info(run_dir)
    assert info.args == {"lr": 0.1}  # the run's hyper-parameter, as a replay passes it on
    assert {"lr", "loss"} <= info.present  # the metric is one the run already has


def test_a_metric_named_like_the_args_spelling_loses_nothing(tmp_path):
    run = fw.init(dir=tmp_path, snapshot=False)
    fw.arg("lr", 0.1)
    fw.log("args.lr", 7.0, step=0)  # odd, but a name the user may pick
    fw.log("lr", 0.5, step=0)
    fw.finish()
    series = RunReader(run.dir).load().series
    by_role = sorted((s.name, s.role, s.last()) for s in series.values())
    assert by_role == [("args.lr", "metric", 7.0), ("lr", "arg", 0.1), ("lr", "metric", 0.5)]
    written = json.loads((run.dir / index_journal.ROW_FILE).read_text())
    parts = scan_run(run.dir)  # the reader's row is the writer's, all three in it
    assert written["args"] == [list(a) for a in parts.args] == [["lr", "0.1"]]
    assert written["metrics"] == [list(m) for m in parts.metrics]
    assert sorted(m[0] for m in parts.metrics) == ["args.lr", "lr"]


def test_a_fork_inherits_the_arg_and_the_metric_apart(run_dir):
    child = fw.init(fork_from=(run_dir.name, 1), dir=run_dir.parent.parent.parent,
                    snapshot=False)
    fw.log("lr", 0.5, step=2)  # the child's own schedule from the fork on
    fw.finish()
    assert json.loads((child.dir / "summary.json").read_text())["args"] == {"lr": 0.1}
    series = RunReader(child.dir).load().series
    assert series["args.lr"].last() == 0.1  # the parent's hyper-parameter, as it was
    assert series["lr"].values.tolist() == [0.01, 0.02, 0.5]  # its values to step 1, then ours


def test_a_row_from_before_the_split_is_not_trusted(tmp_path):
    """Rows written before args and metrics of one name were kept apart (version 1) are
    checked against the summary, so old runs show the right values too."""
    run = fw.init(dir=tmp_path, snapshot=False)
    fw.arg("lr", 0.1)
    for step in range(3):
        fw.log("lr", 0.01 * (step + 1), step=step)
    fw.finish()
    path = run.dir / index_journal.ROW_FILE
    doc = json.loads(path.read_text())
    # the merged form the old writer recorded, its summary stamp intact
    doc.update(version=1, args=[["lr", "0.03"]],
               metrics=[m for m in doc["metrics"] if m[0] != "lr"])
    path.write_text(json.dumps(doc))
    [row] = fw.runs(dir=tmp_path).to_dict("records")
    assert row["lr"] == 0.1 and row["metric.lr"] == 0.03


def test_one_column_never_mixes_one_runs_arg_with_anothers_metric(tmp_path):
    with fw.init(dir=tmp_path, name="with-arg", snapshot=False):
        fw.arg("lr", 0.1)
        fw.log("loss", 1.0, step=0)
    with fw.init(dir=tmp_path, name="with-metric", snapshot=False):
        fw.log("lr", 0.03, step=0)
    rows = {r["run_name"]: r for r in fw.runs(dir=tmp_path).to_dict("records")}
    assert rows["with-arg"]["lr"] == 0.1
    assert rows["with-metric"]["metric.lr"] == 0.03
    assert rows["with-metric"]["lr"] != rows["with-metric"]["lr"]  # NaN: it has no such arg
