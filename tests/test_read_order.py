"""Reading values back in logging order, and list values in `fw.dataframe`.

One key may hold floats, ints and JSON values; they are stored in separate blocks of a
frame, threads in separate buffers, ranks and replays in separate files. Read back, a
series is in the order the values were logged (their call times), and `last()` is the
value logged last.
"""

from __future__ import annotations

import threading
from array import array
from pathlib import Path

import flowillower as fw
from flowillower.store.format import encode_frame
from flowillower.store.reader import RunReader

T0 = 1732360000.0


def _only_run(store_dir: Path) -> Path:
    (run_dir,) = (store_dir / "runs").iterdir()
    return run_dir


def _series(store_dir: Path, name: str):
    return RunReader(_only_run(store_dir)).load().series[name]


def test_int_then_float_read_back_in_logging_order(store_dir):
    fw.init(snapshot=False)
    fw.log("v", 2, step=0)
    fw.log("v", 1.5, step=1)
    fw.finish()
    series = _series(store_dir, "v")
    assert series.step.tolist() == [0, 1]
    assert series.values.tolist() == [2.0, 1.5]
    assert series.kind == "float"
    assert series.last() == 1.5
    # The index (run table) reads the same last value.
    assert fw.dataframe(dir=store_dir)["v"].tolist() == [1.5]


def test_json_then_float_read_back_in_logging_order(store_dir):
    fw.init(snapshot=False)
    fw.log("v", "warming up")
    fw.log("v", 0.25)
    fw.log("v", 7)
    fw.finish()
    series = _series(store_dir, "v")
    assert series.values.tolist() == ["warming up", 0.25, 7]
    assert series.step.tolist() == [0, 1, 2]
    assert series.last() == 7


def test_same_step_logged_twice_later_value_wins_in_dataframe(store_dir):
    fw.init(snapshot=False)
    for epoch in fw.loop("epoch", range(2)):
        fw.log("acc", 1)  # an int first, then a float for the same iteration
        fw.log("acc", 0.5 + epoch)
    fw.finish()
    df = fw.dataframe("acc")
    assert df["epoch"].tolist() == [0, 1]
    assert df["acc"].tolist() == [0.5, 1.5]


def test_kinds_across_frames_in_logging_order(store_dir):
    fw.init(snapshot=False)
    fw.log("v", 1.0, step=0)
    fw.flush()  # frame 1: a float; frame 2: an int, then a float, then JSON
    fw.log("v", 2, step=1)
    fw.log("v", 3.0, step=2)
    fw.log("v", [4], step=3)
    fw.flush()
    fw.log("v", 5, step=4)  # frame 3
    fw.finish()
    series = _series(store_dir, "v")
    assert series.step.tolist() == [0, 1, 2, 3, 4]
    assert series.values.tolist() == [1.0, 2, 3.0, [4], 5]
    assert series.last() == 5


def test_threads_logging_one_key_read_back_in_logging_order(store_dir):
    """Two threads take turns logging the same key: each thread has its own buffer, so
    one frame holds one thread's values, then the other's."""
    fw.init(snapshot=False)
    turns = [threading.Event(), threading.Event()]
    n = 20

    def worker(me: int) -> None:
        for i in range(me, n, 2):
            assert turns[me].wait(timeout=30)
            turns[me].clear()
            fw.log("shared", float(i))
            turns[1 - me].set()

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    turns[0].set()
    for thread in threads:
        thread.join(timeout=60)
    fw.finish()
    series = _series(store_dir, "shared")
    assert series.values.tolist() == [float(i) for i in range(n)]
    assert series.last() == n - 1
    assert fw.dataframe(dir=store_dir)["shared"].tolist() == [n - 1]


def _call(step: int, t: float) -> list[array]:
    return [array("I", [0]), array("q", [step]), array("d", [t]), array("I", [1])]


def _write_run(tmp_path: Path, frames: list[bytes]) -> RunReader:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data.fwl").write_bytes(b"".join(frames))
    return RunReader(run_dir)


def test_tied_times_across_kinds_go_by_step(tmp_path):
    """A coarse clock gives two calls the same time: within a frame the lower step was
    logged first (the int at step 0 before the float at step 1)."""
    reader = _write_run(tmp_path, [encode_frame(
        keys={0: ("v", "metric")},
        call_cols=_call(1, T0), float_cols=[array("I", [0]), array("d", [1.5])],
        int_cols=[array("I", [0]), array("I", [0]), array("q", [0]), array("d", [T0]),
                  array("q", [2])])])
    series = reader.load().series["v"]
    assert series.step.tolist() == [0, 1]
    assert series.values.tolist() == [2.0, 1.5]


def test_tied_times_across_frames_keep_frame_order(tmp_path):
    """Equal times in two frames: the earlier frame was written first, whatever the steps
    say (a step may go back, e.g. after a resume)."""
    reader = _write_run(tmp_path, [
        encode_frame(keys={0: ("v", "metric")},
                     int_cols=[array("I", [0]), array("I", [0]), array("q", [5]),
                               array("d", [T0]), array("q", [1])]),
        encode_frame(call_cols=_call(0, T0), float_cols=[array("I", [0]), array("d", [2.5])]),
    ])
    series = reader.load().series["v"]
    assert series.step.tolist() == [5, 0]
    assert series.values.tolist() == [1.0, 2.5]
    assert series.last() == 2.5


def test_one_kind_keeps_written_order_among_tied_times(tmp_path):
    """Steps going back at one time stay as written (no sort by step within a block)."""
    steps = [3, 1, 2]
    reader = _write_run(tmp_path, [
        encode_frame(keys={0: ("v", "metric")},
                     int_cols=[array("I", [0] * 3), array("I", [0] * 3), array("q", steps),
                               array("d", [T0] * 3), array("q", [30, 10, 20])]),
        encode_frame(objects=[(0, 0, 0, T0, "text")]),
    ])
    series = reader.load().series["v"]
    assert series.values.tolist() == [30, 10, 20, "text"]
    assert series.step.tolist() == [3, 1, 2, 0]


def test_list_value_at_run_level_is_one_cell(store_dir):
    fw.init(snapshot=False)
    fw.log("pair", [1.0, 2.0])
    fw.log("one", [7])
    fw.log("opts", {"beta": [0.9, 0.99]})
    fw.log("shape", (3, 4))
    fw.log("x", 3.0)
    fw.finish()
    df = fw.dataframe("x", "pair", "one", "opts", "shape")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["x"] == 3.0
    assert row["pair"] == [1.0, 2.0]
    assert row["one"] == [7] and isinstance(row["one"], list)
    assert row["opts"] == {"beta": [0.9, 0.99]}
    assert row["shape"] == (3, 4)


def test_list_value_broadcast_to_each_loop_row(store_dir):
    fw.init(snapshot=False)
    fw.arg("layers", [64, 64])
    fw.arg("name", "mlp")
    fw.log("one", [7])
    for step in fw.loop("step", range(3)):
        fw.log("loss", 1.0 / (step + 1))
    fw.finish()
    df = fw.dataframe("loss", "layers", "one", "name")
    assert df["step"].tolist() == [0, 1, 2]
    assert df["layers"].tolist() == [[64, 64]] * 3
    assert df["one"].tolist() == [[7]] * 3
    assert df["name"].tolist() == ["mlp"] * 3
