"""fw.loop / fw.iteration: values keyed by loop coordinates, timings recorded."""

from __future__ import annotations

import flowillower as fw
from flowillower.store.reader import RunReader
from tests.conftest import only_run


def coords(data, series):
    return [tuple(int(c) for c in data.ctx_coords[i]) for i in series.ctx]


def test_nested_loops_key_values(store_dir):
    fw.init()
    for epoch in fw.loop("epoch", range(2)):
        for step in fw.loop("step", range(3)):
            fw.log("loss", float(epoch * 10 + step))
        fw.log("val", float(epoch))
    fw.log("final", 1.0)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    assert data.loop_names == ["epoch", "step"]
    loss = data.series["loss"]
    assert coords(data, loss) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert list(loss.step) == [0, 1, 2, 3, 4, 5]  # global iteration count of the loop
    assert coords(data, data.series["val"]) == [(0, -1), (1, -1)]
    assert coords(data, data.series["final"]) == [(-1, -1)]
    timings = data.series["time/step"]
    assert len(timings.values) == 6 and (timings.values >= 0).all()
    assert data.series["time/step"].role == "sys"
    events = [e["event"] for e in data.events]
    assert events.count("loop_start") == 3 and "finish" in events


def test_iteration_context_for_foreign_loops(store_dir):
    fw.init()
    for epoch in range(2):
        with fw.iteration("epoch", epoch):
            fw.log("acc", epoch / 2)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    assert coords(data, data.series["acc"]) == [(0,), (1,)]


def test_break_restores_context(store_dir):
    fw.init()
    for i in fw.loop("epoch", range(10)):
        if i == 2:
            break
    fw.log("after", 1.0)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    assert coords(data, data.series["after"]) == [(-1,)]


def test_progress_bar_only_when_asked(store_dir, capsys):
    fw.init()
    for _ in fw.loop("epoch", range(3), progress=True):
        fw.log("x", 1.0)
    assert "epoch" in capsys.readouterr().err
    for _ in fw.loop("quiet", range(3)):  # not a TTY under pytest: no bar
        fw.log("x", 1.0)
    assert "quiet" not in capsys.readouterr().err
