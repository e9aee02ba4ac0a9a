"""Several runs in one process, one after another (a notebook, a Hydra sweep's jobs):
`fw.finish()` then a new run, with nothing of the first leaking into the second: args,
loop positions, keys, thread state, watch hooks, checkpoint registrations, job scopes."""

from __future__ import annotations

import threading

import pytest

import flowillower as fw
from flowillower import api
from flowillower.store.reader import RunReader


@pytest.fixture(autouse=True)
def no_scope_left():
    """A failing test must not leave its job scope to the tests after it."""
    yield
    if api._scope is not None:
        api._scope.close()


def _series(run: fw.Run, *names: str) -> dict:
    """The run's series by name, without flowillower's own timings (role `sys`)."""
    series = RunReader(run.dir).load(list(names) or None).series
    return {k: v for k, v in series.items() if v.role != "sys"}


def test_second_run_starts_from_nothing(tmp_path) -> None:
    first = fw.init(project="p", config={"lr": 0.1})
    fw.arg("depth", 3)
    for epoch in fw.loop("epoch", range(3)):
        fw.log("loss", 1.0 / (epoch + 1))
    fw.finish()
    second = fw.init(project="p")
    assert second is not first and second.id != first.id and second.status is None
    for epoch in fw.loop("epoch", range(2)):
        fw.log("acc", float(epoch))
    fw.finish()
    assert first.args == {"lr": 0.1, "depth": 3} and second.args == {}
    series = _series(second)
    assert set(series) == {"acc"}  # no loss, no lr/depth args
    assert series["acc"].values.tolist() == [0.0, 1.0]
    assert series["acc"].step.tolist() == [0, 1]  # the loop counts from 0 again
    assert _series(first, "loss")["loss"].step.tolist() == [0, 1, 2]


def test_a_thread_follows_the_current_run(tmp_path) -> None:
    """A worker thread that logged inside the first run's loop logs into the second run
    at run level: its loop position stayed with the first run."""
    first = fw.init()
    looped, go, done = threading.Event(), threading.Event(), threading.Event()

    def worker() -> None:
        for i in fw.loop("chunk", range(2)):
            fw.log("worker", float(i))
        looped.set()
        go.wait(30)
        fw.log("after", 1.0)
        done.set()

    for _epoch in fw.loop("epoch", range(1)):
        fw.log("loss", 1.0)
    thread = threading.Thread(target=worker)
    thread.start()
    assert looped.wait(30)
    fw.finish()
    second = fw.init()
    go.set()
    assert done.wait(30)
    thread.join(30)
    fw.finish()
    assert first.status == "success"
    assert set(_series(first)) == {"loss", "worker"}
    data = RunReader(second.dir).load()
    assert set(_series(second)) == {"after"}
    after = data.series["after"]
    assert after.values.tolist() == [1.0]
    # Run level (no loop coordinates), not the first run's `chunk` position.
    assert data.loop_names == []  # no `chunk` loop in this run
    assert (data.ctx_coords[after.ctx] == -1).all()


def test_watch_ends_with_its_run(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from flowillower.model.watcher import watcher_of

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    first = fw.init()
    fw.watch(model, every=1)
    x = torch.ones(2, 3)
    for _step in fw.loop("step", range(3)):
        model(x).sum().backward()
    fw.finish()
    # The last watched step's statistics landed in the first run, and the model carries
    # nothing of it into the next run.
    grads = [k for k in _series(first) if k.startswith("grad/")]
    assert grads and all(_series(first, k)[k].step.tolist() == [0, 1, 2] for k in grads)
    assert watcher_of(model) is None
    second = fw.init()
    for _step in fw.loop("step", range(2)):
        model(x).sum().backward()
        fw.log("loss", 1.0)
    fw.finish()
    assert set(_series(second)) == {"loss"}


def test_checkpointing_belongs_to_one_run(tmp_path) -> None:
    first = fw.init()
    with fw.checkpointing(state={"w": 1.0}, every=1):
        for _epoch in fw.loop("epoch", range(2)):
            fw.log("loss", 1.0)
    fw.finish()
    second = fw.init()
    for _epoch in fw.loop("epoch", range(2)):
        fw.log("loss", 2.0)
    fw.finish()
    assert (first.dir / "checkpoints").is_dir()
    assert not (second.dir / "checkpoints").exists()


def test_job_scope_settings_reach_only_its_runs(tmp_path) -> None:
    scope = api.begin_job(project="sweep", name="job-0", tags=["sweep:s1"],
                          args={"lr": 0.1, "sweep": "s1"})
    fw.log("loss", 1.0)  # an implicit run joins the job
    implicit = api.current_run(create=False)
    explicit = fw.init(name="mine", tags=["own"], config={"lr": 0.2})  # ends the implicit
    assert implicit.status == "success"
    fw.log("loss", 2.0)
    assert scope.close() == [implicit, explicit]
    assert explicit.status == "success"  # the scope finished what the job left open
    assert (implicit.project, implicit.name, implicit.tags) == ("sweep", "job-0", ["sweep:s1"])
    assert implicit.args == {"lr": 0.1, "sweep": "s1"}
    assert (explicit.name, explicit.tags) == ("mine", ["own", "sweep:s1"])
    assert explicit.args == {"lr": 0.2, "sweep": "s1"}  # the job's own config wins
    after = fw.init()
    fw.log("loss", 3.0)
    fw.finish()
    assert after.tags == [] and after.args == {} and after.project != "sweep"


def test_a_new_job_closes_the_one_left_open(tmp_path) -> None:
    api.begin_job(tags=["a"])
    fw.log("x", 1.0)
    run_a = api.current_run(create=False)
    scope_b = api.begin_job(tags=["b"])
    assert run_a.status == "success"
    fw.log("x", 2.0)
    (run_b,) = scope_b.close()
    assert (run_a.tags, run_b.tags) == (["a"], ["b"])


def test_a_debug_run_leaves_nothing_when_the_next_run_starts(store_dir) -> None:
    """A job run under fw.debug(True) (e.g. a sweep's tracking.enabled=false job) is
    ended by the next job's fw.init: nothing of it is written, its config included."""
    fw.debug(True)
    fw.init(config={"lr": 0.1})
    fw.log("loss", 1.0)
    fw.debug(False)
    run = fw.init(config={"lr": 0.2})
    fw.log("loss", 2.0)
    fw.finish()
    assert [d.name for d in (store_dir / "runs").iterdir()] == [run.id]
    assert run.args == {"lr": 0.2}


def test_a_loop_still_running_when_another_thread_finishes_the_run(tmp_path) -> None:
    """The loop's own timing after `fw.finish` from another thread is skipped, not an
    error in the training thread."""
    run = fw.init(project="p")
    inside, finished, errors = threading.Event(), threading.Event(), []

    def train() -> None:
        try:
            for epoch in fw.loop("epoch", range(2)):
                fw.log("loss", float(epoch))
                if epoch == 0:
                    inside.set()
                    finished.wait(30)
        except Exception as exc:  # noqa: BLE001 - the test reports whatever escaped
            errors.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    assert inside.wait(30)
    fw.finish()
    finished.set()
    worker.join(30)
    assert run.status == "success" and errors == []
