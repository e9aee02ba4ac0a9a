"""flowillower.fitlog: a fitlog script works after changing one import line."""

from __future__ import annotations

import argparse

import flowillower as fw
import flowillower.fitlog as fitlog


def test_fitlog_style_script(store_dir, tmp_path):
    fitlog.set_log_dir(str(store_dir))
    fitlog.commit(__file__, fit_msg="first try")
    fitlog.add_hyper(argparse.Namespace(lr=0.01, layers=2))
    fitlog.add_hyper(0.5, name="dropout")
    fitlog.set_rng_seed(3)
    for step in range(4):
        fitlog.add_loss(1.0 / (step + 1), step=step)
        fitlog.add_metric({"dev": {"acc": step / 4}}, step=step, epoch=0)
    fitlog.add_best_metric({"dev": {"acc": 0.75}})
    fitlog.add_other("note", name="comment")
    fitlog.finish()
    row = fw.dataframe(dir=store_dir).iloc[0]
    assert row["lr"] == 0.01 and row["layers"] == 2 and row["dropout"] == 0.5
    assert row["rng_seed"] == 3 and row["best-dev-acc"] == 0.75 and row["comment"] == "note"
    assert row["loss"] == 0.25 and row["dev-acc"] == 0.75 and row["status"] == "success"
    values = fw.dataframe("loss", "dev-acc", dir=store_dir)
    assert values["loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25]


def test_fitlog_debug_and_failed_finish(store_dir):
    fitlog.debug()
    fitlog.add_metric(1.0, step=0, name="x")
    fitlog.finish()
    fitlog.debug(False)
    assert not (store_dir / "runs").exists()
    fitlog.set_log_dir(str(store_dir), new_log=True)
    fitlog.add_metric(1.0, step=0, name="x")
    fitlog.finish(status=1)
    assert fw.dataframe(dir=store_dir)["status"].tolist() == ["failed"]
