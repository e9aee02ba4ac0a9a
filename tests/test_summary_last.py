"""summary.json's `last` is each key's value logged last in time, whatever the thread or
the kind of value (the webhook and the CLI read it)."""

from __future__ import annotations

import json
import threading

import flowillower as fw
from flowillower.run import Run
from flowillower.store.reader import RunReader


def _summary_last(run) -> dict:
    return json.loads((run.dir / "summary.json").read_text())["last"]


def test_float_then_int_of_one_key_last_is_the_int():
    run = fw.init(project="p", snapshot=False)
    fw.log("v", 1.5, step=0)
    fw.log("v", 2, step=1)
    fw.finish()
    assert _summary_last(run)["v"] == 2
    assert RunReader(run.dir).load(["v"]).series["v"].last() == 2


def test_last_across_threads_is_the_latest_logged():
    run = Run(project="p", snapshot=False, flush_interval=60)  # one batch at finish
    run.log("x", 0.0, step=0)
    later = threading.Event()

    def worker() -> None:
        for i in range(200):
            run.log("x", float(i), step=i)
        later.set()

    thread = threading.Thread(target=worker)
    thread.start()
    later.wait(10)
    thread.join()
    run.log("x", -1.0, step=999)  # the main thread logs last, in time
    run.finish()
    assert _summary_last(run)["x"] == -1.0
    assert RunReader(run.dir).load(["x"]).series["x"].last() == -1.0
