"""A run's summary shows what was logged: a list or dict changed after `fw.log` keeps the
value it had when it was logged, in summary.json and in the records."""

from __future__ import annotations

import json
from array import array

import flowillower as fw
from flowillower.store.latest import LatestValues, owned
from flowillower.store.reader import RunReader
from flowillower.values import Checked


def _batch(objects: list[tuple], floats: list[tuple[int, float, float]] = ()) -> dict:
    """A writer batch: object rows (key, ctx, step, time, value), float rows (key, time,
    value) one call each."""
    return {"ints": [], "objects": objects,
            "call_cols": [array("I", [0] * len(floats)), array("q", range(len(floats))),
                          array("d", [t for _k, t, _v in floats]),
                          array("I", [1] * len(floats))],
            "float_cols": [array("I", [k for k, _t, _v in floats]),
                           array("d", [v for _k, _t, v in floats])]}


def test_a_remembered_container_is_a_copy_of_what_was_handed_over():
    latest = LatestValues()
    handed = {"layers": [64, 64], "betas": (0.9, [0.99])}
    latest.remember(_batch([(3, 0, 0, 10.0, handed)], [(1, 10.0, 0.5)]))
    handed["layers"].append(128)
    handed["betas"][1].append(0.5)
    handed["new"] = True
    assert latest.values[3] == {"layers": [64, 64], "betas": (0.9, [0.99])}
    assert latest.values[1] == 0.5
    # a later batch's value of the same key still wins, and is copied too
    again = [1, 2]
    latest.remember(_batch([(3, 0, 1, 11.0, again), (3, 0, 0, 9.0, "older")]))
    again.append(3)
    assert latest.values[3] == [1, 2]


def test_owned_copies_containers_only():
    text, big = "résumé", 2**70
    value = {"a": [text, big, None, 1.5], "h": Checked(min=0.0, max=1.0)}
    copy = owned(value)
    assert copy == value and copy is not value and copy["a"] is not value["a"]
    assert copy["a"][0] is text and copy["a"][1] is big  # scalars are kept, not copied
    assert type(copy["h"]) is Checked and copy["h"] is not value["h"]
    assert owned(text) is text and owned(big) is big


def test_summary_and_records_show_the_logged_value(tmp_path):
    run = fw.init(dir=tmp_path, snapshot=False)
    classes = ["cat", "dog"]
    config = {"opt": {"betas": [0.9, 0.99]}, "layers": 2}
    for step in range(3):
        fw.log("classes", classes, step=step)
        fw.log("config", config, step=step)
        fw.log("loss", 1.0 / (step + 1), step=step)
    classes.append("eel")
    config["opt"]["betas"][0] = 0.0
    config["layers"] = 99
    fw.finish()
    last = json.loads((run.dir / "summary.json").read_text())["last"]
    assert last["classes"] == ["cat", "dog"]
    assert last["config"] == {"opt": {"betas": [0.9, 0.99]}, "layers": 2}
    assert last["loss"] == 1.0 / 3
    series = RunReader(run.dir).load().series
    assert series["config"].last() == {"opt": {"betas": [0.9, 0.99]}, "layers": 2}


def test_summary_args_show_the_recorded_value(tmp_path):
    run = fw.init(dir=tmp_path, snapshot=False)
    layers = fw.arg("layers", [64, 64])  # returns the very default list
    config = {"opt": {"betas": [0.9, 0.99]}}
    fw.config(config)
    fw.log("x", 1.0)
    layers.append(1)
    config["opt"]["betas"].append(5)
    fw.finish()
    args = json.loads((run.dir / "summary.json").read_text())["args"]
    assert args["layers"] == [64, 64] and args["opt.betas"] == [0.9, 0.99]
