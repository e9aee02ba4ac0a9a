"""The index follows the run folders: live runs, deaths, edits, deletions."""

from __future__ import annotations

import subprocess
import sys
import time

import flowillower as fw
from flowillower.store.catalog import Store


def test_live_run_is_followed(store_dir):
    run = fw.init(name="live")
    fw.log("loss", 1.0)
    run.flush()
    store = Store(store_dir)
    [row] = store.runs()
    assert row["status"] == "running" and row["metrics"]["loss"]["count"] == 1
    fw.log("loss", 0.5)
    run.flush()
    [row] = store.runs()
    assert row["metrics"]["loss"]["count"] == 2 and row["metrics"]["loss"]["last"] == 0.5
    fw.finish()
    [row] = store.runs()
    assert row["status"] == "success"


def test_dead_writer_becomes_killed_without_any_file_changing(tmp_path, store_dir):
    script = tmp_path / "hang.py"
    script.write_text("import time, flowillower as fw\nfw.log('x', 1.0)\nfw.flush()\n"
                      "print('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout.readline().strip() == b"ready"
    store = Store(store_dir)
    assert store.runs()[0]["status"] == "running"
    proc.kill()
    proc.wait()
    assert store.runs()[0]["status"] == "killed"


def test_annotations_are_new_files_and_latest_wins(store_dir):
    run = fw.init(name="a", notes="original")
    fw.log("x", 1.0)
    fw.finish()
    store = Store(store_dir)
    store.annotate(run.id, notes="first edit")
    time.sleep(0.01)
    store.annotate(run.id, notes="second edit", tags=["keep"])
    [row] = store.runs()
    assert row["notes"] == "second edit" and row["tags"] == ["keep"]
    assert len(list((run.dir / "notes").glob("*.json"))) == 2
    store.annotate(run.id, hidden=True)
    assert store.runs(include_hidden=False) == []


def test_resolve_by_prefix_suffix_and_name(store_dir):
    run = fw.init(name="unique-name")
    fw.log("x", 1.0)
    fw.finish()
    store = Store(store_dir)
    assert store.resolve(run.id[:15]) == run.id
    assert store.resolve(run.id[-8:]) == run.id
    assert store.resolve("unique-name") == run.id


def test_index_keeps_value_types(store_dir):
    import math

    values = {"flag": True, "off": False, "big": 2**70, "neg": -3, "text": "5", "half": 0.5,
              "list": [1, "a"], "none": None, "nan": float("nan"), "inf": float("-inf")}
    run = fw.init()
    run.record_args(values)
    fw.log_metrics({f"m_{k}": v for k, v in values.items()})
    fw.finish()
    [row] = Store(store_dir).runs()
    metrics = {k[2:]: m["last"] for k, m in row["metrics"].items()}
    for source in (row["args"], metrics):
        for key, expected in values.items():
            got = source[key]
            if key == "nan":
                assert math.isnan(got)
            else:
                assert got == expected and type(got) is type(expected), (key, got)
