"""Finishing a run: every thread's values, the summary, the memory bound's dropped count."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import flowillower as fw
from flowillower.store.reader import RunReader
from tests.conftest import fill_disk


def test_values_dropped_past_max_buffer_are_counted_in_the_summary(tiny_disk):
    run = fw.init(project="finish", dir=str(tiny_disk / "store"), snapshot=False,
                  max_buffer="64kB")
    fw.log_metrics({"loss": 0.0}, step=0)
    run.flush()  # on disk before the disk fills up
    ballast = fill_disk(tiny_disk)
    logged = 1
    for _ in range(10):
        for _ in range(600):  # ~22 kB of pending frame each: the bound holds ~2 of them
            fw.log_metrics({"loss": float(logged)}, step=logged)
            logged += 1
        run.flush()  # fails: the values stay pending, past 64 kB the oldest go
    ballast.unlink()
    with pytest.warns(UserWarning, match="writer hit an error"):  # values were lost
        fw.finish()
    summary = json.loads((run.dir / "summary.json").read_text())
    loss = RunReader(run.dir).load().series["loss"]
    dropped = summary["dropped_values"]
    assert dropped > 0
    assert len(loss.values) + dropped == logged  # the exact count of what is missing
    assert np.array_equal(loss.values, loss.step.astype(float))  # the rest is intact
    assert summary["last"]["loss"] == float(logged - 1)


def test_no_dropped_values_no_entry(tmp_path):
    run = fw.init(project="finish", snapshot=False, max_buffer=50_000_000)
    fw.log("loss", 1.0)
    fw.finish()
    assert "dropped_values" not in json.loads((run.dir / "summary.json").read_text())


@pytest.mark.parametrize("bad", ["lots", -1, 1.5, True])
def test_a_bad_max_buffer_is_refused_at_init(bad):
    with pytest.raises(ValueError, match="max_buffer|size"):
        fw.init(project="finish", snapshot=False, max_buffer=bad)


def test_finish_takes_what_a_live_thread_logged():
    run = fw.init(project="finish", snapshot=False)
    logged, release = threading.Event(), threading.Event()

    def worker() -> None:
        for i in range(1000):
            fw.log_metrics({"side": float(i)}, step=i)
        logged.set()
        release.wait(10)  # still alive, holding its buffer, while the run finishes

    thread = threading.Thread(target=worker)
    thread.start()
    assert logged.wait(10)
    fw.log("main", 1.0)
    fw.finish()
    release.set()
    thread.join()
    series = RunReader(run.dir).load().series
    assert series["side"].values.tolist() == [float(i) for i in range(1000)]
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["last"] == {"side": 999.0, "main": 1.0}


def test_summary_last_values_are_metrics_only():
    run = fw.init(project="finish", snapshot=False)
    fw.config({"lr": 0.1})
    for i in fw.loop("epoch", range(3), progress=False):
        fw.log("loss", float(i))
    fw.finish()
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["last"] == {"loss": 2.0}  # no args, no loop timings
    assert summary["args"] == {"lr": 0.1}
