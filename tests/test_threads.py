"""Any thread may log: every value is kept, each at its own thread's step and loop context."""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import pytest

import flowillower as fw
from flowillower.store.buffer import BufferSet
from flowillower.store.reader import RunReader
from flowillower.threadstate import ThreadStates


@pytest.fixture(autouse=True)
def frequent_switches():
    """Switch threads every few bytecodes, so unsynchronised appends would interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _run_threads(target, count: int) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(k: int) -> None:
        try:
            barrier.wait()
            target(k)
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _load(run):
    return RunReader(run.dir).load()


def _coords(data, series, loop: str) -> np.ndarray:
    if loop not in data.loop_names:
        return np.full(len(series.ctx), -1)
    return data.ctx_coords[series.ctx][:, data.loop_names.index(loop)]


def test_four_threads_every_value_once_at_its_step():
    run = fw.init(project="threads", snapshot=False)
    n = 20_000

    def work(k: int) -> None:
        for i in range(n):
            fw.log_metrics({f"t{k}/a": k * 1e6 + i, f"t{k}/b": -(k * 1e6 + i) / 2,
                            "shared": float(k)}, step=k * n + i)

    _run_threads(work, 4)
    fw.finish()
    data = _load(run)
    for k in range(4):
        a, b = data.series[f"t{k}/a"], data.series[f"t{k}/b"]
        for s in (a, b):
            order = np.argsort(s.step)
            assert np.array_equal(s.step[order], np.arange(k * n, (k + 1) * n))
        order = np.argsort(a.step)
        assert np.array_equal(a.values[order], k * 1e6 + np.arange(n))
        order = np.argsort(b.step)
        assert np.array_equal(b.values[order], -(k * 1e6 + np.arange(n)) / 2)
    shared = data.series["shared"]
    assert len(shared.step) == 4 * n
    # Each thread's value of the shared key sits at that thread's steps.
    assert np.array_equal(shared.values, (shared.step // n).astype(float))


def test_threads_with_their_own_loops_get_their_own_coordinates():
    run = fw.init(project="threads", snapshot=False)
    started = threading.Barrier(3)

    def worker(k: int) -> None:
        for i in fw.loop("batch", range(200), progress=False):
            if i == 0:
                started.wait()
            fw.log(f"w{k}", float(k * 1000 + i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for epoch in fw.loop("epoch", range(2), progress=False):
        if epoch == 0:
            for t in threads:
                t.start()
            started.wait()  # both workers are inside their loops, we are inside ours
        fw.log("main", float(epoch))
        for t in threads:
            t.join()
    fw.finish()
    data = _load(run)
    for k in range(2):
        s = data.series[f"w{k}"]
        assert np.array_equal(s.step, np.arange(200))
        assert np.array_equal(s.values, k * 1000 + np.arange(200.0))
        assert np.array_equal(_coords(data, s, "batch"), np.arange(200))
        assert (_coords(data, s, "epoch") == -1).all()  # not the main thread's epoch
        timing = data.series["time/batch"]
        assert (_coords(data, timing, "epoch") == -1).all()
    # The planner's loop events are the main thread's; the workers' are told apart.
    starts = [(e["event"], e["loop"]) for e in data.events if e["event"].endswith("loop_start")]
    assert sorted(starts) == [("loop_start", "epoch"), ("thread_loop_start", "batch"),
                              ("thread_loop_start", "batch")]
    main = data.series["main"]
    assert np.array_equal(_coords(data, main, "epoch"), [0, 1])
    assert (_coords(data, main, "batch") == -1).all()
    assert np.array_equal(main.step, [0, 1])


def test_thread_without_a_loop_logs_at_run_level():
    run = fw.init(project="threads", snapshot=False)
    done = threading.Event()

    def side() -> None:
        for i in range(5):
            fw.log("side", float(i))
        fw.log("side_at", 2.5, step=77)
        done.set()

    for epoch in fw.loop("epoch", range(3), progress=False):
        fw.log("loss", 1.0 / (epoch + 1))
        if epoch == 1:
            threading.Thread(target=side).start()
            assert done.wait(10)
    fw.finish()
    data = _load(run)
    side_s = data.series["side"]
    assert (_coords(data, side_s, "epoch") == -1).all()
    assert np.array_equal(side_s.step, np.arange(5))  # its own count, not the epoch
    assert np.array_equal(side_s.values, np.arange(5.0))
    at = data.series["side_at"]
    assert at.step.tolist() == [77] and (_coords(data, at, "epoch") == -1).all()
    assert np.array_equal(_coords(data, data.series["loss"], "epoch"), [0, 1, 2])


def test_threads_defining_new_keys_at_once():
    run = fw.init(project="threads", snapshot=False)
    keys = 200

    def work(k: int) -> None:
        for j in range(keys):
            # A key of its own and a key every thread defines at the same moment.
            fw.log_metrics({f"own{k}_{j}": float(j), f"common_{j}": float(k)}, step=k)
            fw.log(f"count_{j}", float(k))  # no step: a per-key counter shared by threads

    _run_threads(work, 6)
    fw.finish()
    data = _load(run)
    for k in range(6):
        for j in range(keys):
            s = data.series[f"own{k}_{j}"]
            assert s.values.tolist() == [float(j)] and s.step.tolist() == [k]
    for j in range(keys):
        common = data.series[f"common_{j}"]
        assert sorted(zip(common.step.tolist(), common.values.tolist())) == \
            [(k, float(k)) for k in range(6)]
        count = data.series[f"count_{j}"]
        assert sorted(count.step.tolist()) == list(range(6))  # distinct steps
        assert sorted(count.values.tolist()) == [float(k) for k in range(6)]
    names = [name for name in data.series if name.startswith("common_")]
    assert len(names) == keys


def test_a_finished_thread_buffer_is_drained_then_forgotten():
    buffers = BufferSet()
    states = ThreadStates(buffers)

    def work(k: int) -> None:
        buf = states.create().buf
        buf.f_key.append(k)
        buf.f_val.append(k / 2)
        buf.c_ctx.append(0)
        buf.c_step.append(k)
        buf.c_time.append(0.0)
        buf.c_count.append(1)

    for k in range(30):
        t = threading.Thread(target=work, args=(k,))
        t.start()
        t.join()
    gc.collect()
    assert len(buffers) == 31  # the owner's and 30 finished threads', not yet drained
    batch = buffers.drain()
    assert batch is not None
    assert sorted(batch["call_cols"][1]) == list(range(30))
    assert dict(zip(batch["float_cols"][0], batch["float_cols"][1])) == \
        {k: k / 2 for k in range(30)}
    assert len(buffers) == 1  # only the owner's is left


def test_iteration_scope_and_step_hooks_belong_to_their_thread():
    run = fw.init(project="threads", snapshot=False)
    called: list[tuple[str, int]] = []
    run.on_step(lambda step: called.append((threading.current_thread().name, step)))
    inside = threading.Event()

    def validator() -> None:
        for k in range(3):
            with fw.iteration("val", k):
                fw.log("val_loss", float(k))
        for _ in fw.loop("shards", range(4), progress=False):
            pass  # a loop of this thread: the main thread's step hook is not called

    for epoch in fw.loop("epoch", range(2), progress=False):
        if epoch == 0:
            worker = threading.Thread(target=lambda: (validator(), inside.set()),
                                      name="validator")
            worker.start()
            assert inside.wait(10)
            worker.join()
        fw.log("loss", float(epoch))
    fw.finish()
    assert called == [("MainThread", 0), ("MainThread", 1)]
    data = _load(run)
    val = data.series["val_loss"]
    assert np.array_equal(_coords(data, val, "val"), [0, 1, 2])
    assert (_coords(data, val, "epoch") == -1).all()
    assert np.array_equal(_coords(data, data.series["loss"], "epoch"), [0, 1])
    assert (_coords(data, data.series["loss"], "val") == -1).all()


def test_threads_logging_before_any_run_start_one_run(store_dir):
    def work(k: int) -> None:
        fw.log_metrics({f"first{k}": float(k)}, step=0)  # no fw.init: implicit run

    _run_threads(work, 8)
    fw.finish()
    runs = list((store_dir / "runs").iterdir())
    assert len(runs) == 1
    series = RunReader(runs[0]).load().series
    assert {name: s.values.tolist() for name, s in series.items()} == \
        {f"first{k}": [float(k)] for k in range(8)}
