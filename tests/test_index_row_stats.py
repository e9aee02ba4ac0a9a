"""The finish row comes from the writer's own statistics (store/written.py), and it is
exactly the row the reader derives from the run's files: counts, finite min/max, last
value and step by logging order, kinds, loops, args. Finish reads nothing back."""

from __future__ import annotations

import errno
import json
import math
import random
import subprocess
import sys
import textwrap
import threading
from array import array
from pathlib import Path
from typing import Any

import pytest

import flowillower as fw
from flowillower.store import index_journal
from flowillower.store.index_rows import scan_run
from flowillower.store.reader import RunReader
from flowillower.store.writer import FrameWriter
from tests.test_io_faults import Faults

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
ROLES = ["metric", "metric", "metric", "watch", "arg", "sys"]
ODD = [math.nan, math.inf, -math.inf]


class Batches:
    """The writer's source: hands out prepared batches in `BufferSet.drain()` shape."""

    def __init__(self) -> None:
        self.queue: list[dict[str, Any]] = []

    def drain(self) -> dict[str, Any] | None:
        return self.queue.pop(0) if self.queue else None


def _float_calls(rng: random.Random, kids: list[int], clock: list[float],
                 pattern: list[int] | None) -> tuple[list[array], list[array]]:
    """One thread's float calls (its times never go back); with a `pattern`, every call
    logs those keys in that order, as a training loop does."""
    calls = [array("I"), array("q"), array("d"), array("I")]
    floats = [array("I"), array("d")]
    periodic = pattern is not None
    for _ in range(rng.randint(1, 40)):
        names = pattern if periodic else rng.sample(kids, rng.randint(1, len(kids)))
        clock[0] += rng.choice((0.0, 0.0, 0.5, 1.0))  # ties in time are common here
        for col, item in zip(calls, (rng.randint(0, 3), rng.randint(-2, 30), clock[0],
                                     len(names))):
            col.append(item)
        for kid in names:
            floats[0].append(kid)
            floats[1].append(rng.choice(ODD) if rng.random() < 0.08
                             else rng.choice((rng.uniform(-5, 5), float(rng.randint(-9, 9)))))
    return calls, floats


def _rows(rng: random.Random, kids: list[int], clock: list[float], objects: bool) -> list:
    rows = []
    for _ in range(rng.randint(0, 12)):
        clock[0] += rng.choice((0.0, 0.0, 1.0))
        kid = rng.choice(kids)
        if objects:
            value = rng.choice(["text", True, None, (1, math.inf), {"a": [1, 2], 3: "x"},
                                2**70, -1.5, [math.nan], {None: 1, True: (2,)}])
        else:
            value = rng.choice((rng.randint(-50, 50), 2**62, -(2**62)))
        rows.append((kid, rng.randint(0, 3), rng.randint(-2, 30), clock[0], value))
    return rows


def _random_batches(rng: random.Random) -> list[dict[str, Any]]:
    # Few keys or many (value by value); ids of one byte, of two (k and k + 256 apart
    # by their high byte alone) or more.
    nkeys, spread = rng.choice((3, 12, 24, 40)), rng.choice((1, 1, 300, 70_000))
    kids = sorted(rng.sample(range(nkeys * spread), nkeys))
    keys = {kid: (f"k{kid}", rng.choice(ROLES) if kid > kids[0] else "metric")
            for kid in kids}
    batches = []
    context_ids = rng.sample(range(1, 100), 15)  # defined in any order
    for b in range(rng.randint(1, 5)):
        threads = rng.choice((1, 1, 2, 3))
        pattern = rng.sample(kids, rng.randint(1, len(kids))) if rng.random() < 0.5 else None
        calls = [array("I"), array("q"), array("d"), array("I")]
        floats = [array("I"), array("d")]
        start = 100.0 + 3 * b
        for _ in range(threads):  # buffers one after another, as BufferSet.drain does
            c, f = _float_calls(rng, kids, [start + rng.choice((0.0, 1.0))], pattern)
            for col, part in zip(calls + floats, c + f):
                col.extend(part)
        clock = [start]
        batches.append({
            "call_cols": calls, "float_cols": floats,
            "ints": _rows(rng, kids, clock, False), "objects": _rows(rng, kids, [start], True),
            # Some keys are defined a frame after their first values; contexts with
            # loops in varying order.
            "keys": {k: v for k, v in keys.items() if (k + b) % 3 == 0 or b >= 1},
            "contexts": {context_ids[3 * b + i]: dict(rng.sample([("epoch", b), ("batch", i),
                                                     ("phase", 0)], rng.randint(1, 3)))
                         for i in range(3)},
            "events": []})
    return batches


def _written_and_read(folder: Path, batches: list[dict[str, Any]]) -> tuple[tuple, tuple]:
    source = Batches()
    writer = FrameWriter(folder / "data.fwl", source, interval=3600.0)
    for batch in batches:
        source.queue.append(batch)
        writer.flush(sync=False)
    writer.close()
    written = writer.written()
    assert written is not None and written.size == (folder / "data.fwl").stat().st_size
    parts = scan_run(folder)
    return written.row_parts(), (parts.loops, parts.args, parts.metrics)


@pytest.mark.parametrize("seed", range(80))
def test_writer_statistics_equal_what_the_reader_derives(tmp_path, seed):
    rng = random.Random(seed)
    ours, theirs = _written_and_read(tmp_path, _random_batches(rng))
    assert ours == theirs


def test_kinds_logged_at_the_same_time_in_one_frame_order_by_step(tmp_path):
    # One key as a float, an int and a JSON value, all at t=5 in one frame: the reader
    # takes the one with the largest step so far as the last (then the later kind).
    t = 5.0
    batch = {"call_cols": [array("I", [0, 0]), array("q", [9, 1]), array("d", [t, t]),
                           array("I", [1, 1])],
             "float_cols": [array("I", [0, 0]), array("d", [1.5, 2.5])],
             "ints": [(0, 0, 4, t, 7)], "objects": [(0, 0, 3, t, "late kind, low step")],
             "keys": {0: ("x", "metric")}, "contexts": {}, "events": []}
    ours, theirs = _written_and_read(tmp_path, [batch])
    assert ours == theirs
    assert theirs[2][0][4] == "2.5" and theirs[2][0][7] == 1


def _varied_run(store: Path, fault: Faults | None = None) -> fw.Run:
    run = fw.init(project="stats", dir=str(store), snapshot=False)
    fw.config({"lr": 0.1, "layers": [64, 64], "name": "varied"})
    if fault is not None:
        fault.path = str(run.dir / "data.fwl")  # fails every write from here
        fault.code = errno.ENOSPC

    def worker(k: int) -> None:
        for i in range(200):
            fw.log_metrics({"shared": k * 1000.0 + i, f"own{k}": float(i)}, step=i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for epoch in fw.loop("epoch", range(3)):
        for i in fw.loop("batch", range(50)):
            fw.log_metrics({"loss": 1.0 / (i + 1), "acc": i, "note": f"e{epoch}"})
            if i % 7 == 0:
                fw.log_metrics({"odd": [math.nan, math.inf, -math.inf, 2.5][i % 4],
                                "flag": i % 2 == 0, "big": 2**70 + i})
        fw.log_image("sample", PNG)
        fw.flush()  # a frame per epoch (while the disk fails: kept, retried)
        if fault is not None and epoch == 1:
            fault.code = None  # the disk is back: everything pending is caught up
        fw.log("mixed", epoch if epoch != 1 else 0.5)  # an int and a float
        fw.log("lr", 0.1 / (epoch + 1))  # an arg's name as a metric: two series
    for th in threads:
        th.join()
    fw.finish()
    return run


def _compare_row_with_scan(run: fw.Run) -> dict:
    doc = json.loads((run.dir / index_journal.ROW_FILE).read_text())
    parts = scan_run(run.dir)
    assert doc["status"] == parts.status == "success"
    assert (doc["created"], doc["ended"], doc["error"]) == (parts.created, parts.ended,
                                                            parts.error)
    assert doc["meta"] == parts.meta and doc["loops"] == parts.loops == ["epoch", "batch"]
    assert doc["args"] == [list(a) for a in parts.args]
    assert doc["metrics"] == [list(m) for m in parts.metrics]
    return {m[0]: m for m in doc["metrics"]}


def test_a_varied_runs_finish_row_is_the_readers_row(tmp_path):
    run = _varied_run(tmp_path / ".flowillower")
    metrics = _compare_row_with_scan(run)
    args = dict(json.loads((run.dir / index_journal.ROW_FILE).read_text())["args"])
    assert args["lr"] == "0.1" and args["name"] == '"varied"'
    assert metrics["shared"][3] == 600 and metrics["odd"][5:7] == [2.5, 2.5]
    assert metrics["acc"][2] == "int" and metrics["mixed"][2] == "float"
    assert metrics["note"][2] == "object" and metrics["sample"][2] == "object"
    assert metrics["big"][4] == str(2**70 + 49)
    # the metric `lr` and the arg `lr` (fw.config) are two entries, each with its values
    assert metrics["lr"][1:5] == ["metric", "float", 3, json.dumps(0.1 / 3)]
    assert metrics["lr"][5:7] == [0.1 / 3, 0.1]


def test_a_run_whose_disk_failed_and_caught_up_gets_the_readers_row(tmp_path, monkeypatch,
                                                                    capsys):
    fault = Faults(monkeypatch, tmp_path / "nothing-yet")
    run = _varied_run(tmp_path / ".flowillower", fault)
    assert fault.writes_failed > 0 and "resumed" in capsys.readouterr().err
    metrics = _compare_row_with_scan(run)
    assert metrics["loss"][3] == 150 and metrics["shared"][3] == 600


FRESH = textwrap.dedent("""
    import json, sys
    import flowillower as fw
    run = fw.init(project="fresh", dir=sys.argv[1], snapshot=False)
    fw.config({"lr": 0.1})
    for i in range(2000):
        fw.log_metrics({"loss": 1.0 / (i + 1), "acc": i % 7, "tag": "a"}, step=i)
    fw.flush()
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                     if event == "open" and str(args[0]).endswith(".fwl") else None)
    fw.finish()
    print(json.dumps({"numpy": "numpy" in sys.modules, "opened": opened,
                      "dir": str(run.dir)}))
""")


def test_finish_imports_no_numpy_and_opens_no_data_file(tmp_path):
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / ".flowillower")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    seen = json.loads(out.splitlines()[-1])
    assert seen["numpy"] is False and seen["opened"] == []
    doc = json.loads((Path(seen["dir"]) / index_journal.ROW_FILE).read_text())
    assert doc["status"] == "success"
    assert doc["metrics"] == [["loss", "metric", "float", 2000, json.dumps(1 / 2000),
                               1 / 2000, 1.0, 1999, False],
                              ["acc", "metric", "int", 2000, "4", 0.0, 6.0, 1999, False],
                              ["tag", "metric", "object", 2000, '"a"', None, None, 1999,
                               False]]


def test_finish_never_decodes_the_run(tmp_path, monkeypatch):
    def refuse(self, names=None):
        raise AssertionError("finish decoded the run")

    monkeypatch.setattr(RunReader, "load", refuse)
    run = fw.init(project="p", dir=str(tmp_path / ".flowillower"), snapshot=False)
    for i in range(100):
        fw.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    fw.finish()
    doc = json.loads((run.dir / index_journal.ROW_FILE).read_text())
    assert doc["status"] == "success" and doc["metrics"][0][3:5] == [100, "0.01"]


def test_a_run_with_frame_files_of_other_writers_is_left_to_readers(tmp_path):
    run = fw.init(project="p", dir=str(tmp_path / ".flowillower"), snapshot=False)
    fw.log_metrics({"loss": 1.0}, step=0)
    fw.flush()
    (run.dir / "data.rank1.fwl").write_bytes((run.dir / "data.fwl").read_bytes())
    fw.finish()  # its row could not count rank 1's values: none, not a wrong one
    assert not (run.dir / index_journal.ROW_FILE).exists()


def test_a_writer_reopening_an_older_file_keeps_no_statistics(tmp_path):
    source = Batches()
    first = FrameWriter(tmp_path / "data.fwl", source, interval=3600.0)
    source.queue.append(_random_batches(random.Random(1))[0])
    first.close()
    assert first.written() is not None
    again = FrameWriter(tmp_path / "data.fwl", source, interval=3600.0)
    again.close()
    assert again.written() is None  # it knows nothing of the frames already there


def test_a_logged_list_changed_after_its_frame_was_written_reads_as_written(tmp_path):
    run = fw.init(project="p", dir=str(tmp_path / ".flowillower"), snapshot=False)
    counts = [1.0, 2.0]  # plain number lists are logged without a copy
    fw.log("hist", counts, step=0)
    fw.flush()
    counts.append(3.0)  # after its frame is on disk
    fw.finish()
    doc = json.loads((run.dir / index_journal.ROW_FILE).read_text())
    assert doc["metrics"] == [list(m) for m in scan_run(run.dir).metrics]
    assert doc["metrics"][0][4] == "[1.0, 2.0]"
