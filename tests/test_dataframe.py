"""fw.dataframe / fw.query / reindex: FlorDB's table shape over real runs."""

from __future__ import annotations

import shutil

import pandas as pd

import flowillower as fw


def _train(lr: float, epochs: int = 2, steps: int = 3) -> str:
    run = fw.init(project="p", name=f"lr{lr}")
    fw.arg("lr", lr)
    for epoch in fw.loop("epoch", range(epochs)):
        for step in fw.loop("step", range(steps)):
            fw.log("loss", lr * (epoch * steps + step))
        fw.log("val_acc", 0.5 + epoch / 10)
    fw.log("test_acc", 0.9)
    fw.finish()
    return run.id


def test_rows_per_loop_coordinates_with_broadcast(store_dir):
    _train(0.1)
    df = fw.dataframe("lr", "loss", "val_acc", "test_acc")
    assert set(df.columns) == {"run_id", "run_name", "epoch", "step", "lr", "loss", "val_acc",
                               "test_acc"}
    assert list(df.columns[:4]) == ["run_id", "run_name", "epoch", "step"]
    assert len(df) == 6
    assert df["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    assert df["step"].tolist() == [0, 1, 2, 0, 1, 2]
    assert (df["lr"] == 0.1).all()  # run level broadcast
    assert (df["test_acc"] == 0.9).all()
    # epoch-level value repeated on each step row of its epoch
    assert df["val_acc"].tolist() == [0.5, 0.5, 0.5, 0.6, 0.6, 0.6]
    assert df["loss"].dtype == "float64"


def test_only_shallow_names_give_epoch_rows(store_dir):
    _train(0.1)
    df = fw.dataframe("val_acc")
    assert df["epoch"].tolist() == [0, 1] and "step" not in df.columns


def test_runs_filter_and_many_runs(store_dir):
    ids = [_train(lr) for lr in (0.1, 0.2, 0.3)]
    df = fw.dataframe("loss", runs="lr >= 0.2")
    assert set(df["run_id"]) == set(ids[1:])
    df = fw.dataframe("loss", runs="${'hyper-lr':[0.1,0.3]}$")
    assert set(df["run_id"]) == {ids[0], ids[2]}
    summary = fw.dataframe()
    assert len(summary) == 3
    assert {"lr", "loss", "loss.min", "loss.max", "status"} <= set(summary.columns)
    row = summary.set_index("run_id").loc[ids[2]]
    assert row["loss.max"] == 0.3 * 5 and row["status"] == "success"


def test_int_and_bool_columns_keep_types(store_dir):
    fw.init()
    for i in fw.loop("epoch", range(3)):
        fw.log("count", i * 2)
        fw.log("flag", i % 2 == 0)
    fw.finish()
    df = fw.dataframe("count", "flag")
    assert str(df["count"].dtype) == "Int64" and df["count"].tolist() == [0, 2, 4]
    assert str(df["flag"].dtype) == "boolean" and df["flag"].tolist() == [True, False, True]


def test_missing_names_are_na_columns(store_dir):
    _train(0.1)
    df = fw.dataframe("loss", "grad_norm")
    assert "grad_norm" in df.columns and df["grad_norm"].isna().all()


def test_query_sql_over_index(store_dir):
    for lr in (0.1, 0.2):
        _train(lr)
    df = fw.query("SELECT r.name, a.value AS lr FROM runs r JOIN args a ON a.run_id = r.id "
                  "WHERE a.name = 'lr' ORDER BY lr")
    assert df["lr"].tolist() == [0.1, 0.2] and df["name"].tolist() == ["lr0.1", "lr0.2"]


def test_index_is_a_cache(store_dir):
    _train(0.1)
    before = fw.dataframe()
    (store_dir / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (store_dir / extra).unlink(missing_ok=True)
    from flowillower.store.catalog import Store

    after = fw.dataframe()
    pd.testing.assert_frame_equal(before, after)
    assert Store(store_dir).index.rebuild() == 1


def test_deleted_run_leaves_index(store_dir):
    ids = [_train(lr) for lr in (0.1, 0.2)]
    assert len(fw.dataframe()) == 2
    shutil.rmtree(store_dir / "runs" / ids[0])
    assert fw.dataframe()["run_id"].tolist() == [ids[1]]


def test_million_values_read_back(store_dir):
    run = fw.init()
    import numpy as np

    values = np.random.default_rng(0).random(1_000_000)
    for i in range(0, 1_000_000, 4):
        run.log_metrics({"a": values[i].item(), "b": values[i + 1].item(),
                         "c": values[i + 2].item(), "d": values[i + 3].item()}, step=i // 4)
    fw.finish()
    df = fw.dataframe("a", "b", "c", "d")
    assert len(df) == 250_000
    assert np.array_equal(df["a"].to_numpy(), values[0::4])
    assert np.array_equal(df["d"].to_numpy(), values[3::4])


def test_named_runs_read_their_latest_values(tmp_path):
    """A run listed while it was still logging, then finished: naming it by its full id
    gives its final values, not the index row of the earlier listing."""
    root = tmp_path / ".flowillower"
    run = fw.init(project="p", dir=root)
    fw.log("loss", 1.0, step=0)
    fw.flush()
    fw.runs(dir=root)  # the index now holds the run as running, with one value
    fw.log("loss", 0.5, step=1)
    fw.finish()
    df = fw.dataframe("loss", runs=[run.id], dir=root)
    assert sorted(df["step"].tolist()) == [0, 1]
    table = fw.runs([run.id], dir=root)
    assert table["status"].tolist() == ["success"] and table["loss"].tolist() == [0.5]
