"""The one poll loop every replay engine shares (hindsight/task_loop.py), driven by an
in-process engine on a fake clock, and by the local executor's real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flowillower.hindsight.executor import Executor, LocalExecutor, Task, TaskResult
from flowillower.hindsight.task_loop import TaskFailed, TaskLoop
from tests.conftest import clean_env


class FakeEngine(TaskLoop, Executor):
    """Tasks that take `seconds[task.id]` of a fake clock; `wait` moves the clock on by
    the poll interval. Records what the loop asked of it."""

    poll_interval = 0.25
    label = "fake"

    def __init__(self, workers: int, seconds: dict[str, float], interrupt_at: float = -1.0,
                 bad_collect: dict[str, Exception] | None = None) -> None:
        super().__init__(workers)
        self.now = 0.0
        self.clock = lambda: self.now  # type: ignore[method-assign]
        self.seconds = seconds
        self.interrupt_at = interrupt_at
        self.bad_collect = bad_collect or {}
        self.ends: dict[str, float] = {}  # running task id -> when it finishes
        self.most_at_once = 0
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.lines: list[tuple[float, str]] = []
        self.echo = lambda line: self.lines.append((self.now, line))
        self.log: list[str] = []

    def begin(self, tasks: list[Task]) -> None:
        self.log.append("begin")

    def end(self) -> None:
        self.log.append("end")

    def submit(self, task: Task) -> str:
        self.submitted.append(task.id)
        self.ends[task.id] = self.now + self.seconds[task.id]
        self.most_at_once = max(self.most_at_once, len(self.ends))
        return task.id

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        assert sorted(handles) == sorted(self.ends)  # the loop waits on what runs
        self.now += timeout
        if 0 <= self.interrupt_at <= self.now:
            raise KeyboardInterrupt
        return [h for h in handles if self.ends[h] <= self.now]

    def collect(self, handle: Any, task: Task) -> int | None:
        del self.ends[handle]
        if handle in self.bad_collect:
            raise self.bad_collect[handle]
        (task.scratch / "output.log").write_text("ran\n")
        return 0

    def cancel(self, handle: Any) -> int | None:
        self.cancelled.append(handle)
        del self.ends[handle]
        return -2

    def summary(self) -> str:
        return f"fake: {len(self.submitted)} submitted"


def make_tasks(tmp_path: Path, runs: dict[str, int]) -> list[Task]:
    """`runs`: run id -> how many segments, in order."""
    tasks = []
    for run_id, count in runs.items():
        for i in range(count):
            tasks.append(Task(f"{run_id}-{i}", ["true"], tmp_path, {}, tmp_path / run_id / str(i),
                              meta={"plan": SimpleNamespace(run_id=run_id)}))
    return tasks


def run(engine: Executor, tasks: list[Task]) -> tuple[dict[str, TaskResult], list[str]]:
    done: list[str] = []
    results = engine.run(tasks, lambda task, result: done.append(task.id))
    return results, done


def test_never_more_tasks_at_once_than_workers(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path, {"run-a": 5, "run-b": 2})
    seconds = {t.id: s for t, s in zip(tasks, [1.0, 0.5, 2.0, 0.25, 0.75, 1.5, 0.5])}
    engine = FakeEngine(3, seconds)
    results, done = run(engine, tasks)
    assert engine.most_at_once == 3  # the bound, and used
    assert engine.submitted == [t.id for t in tasks]  # in the order given
    assert sorted(done) == sorted(results) == sorted(t.id for t in tasks)
    assert all(r.ok for r in results.values())
    assert engine.log == ["begin", "end"]
    # Durations on the engine's clock: the 0.25 s poll rounds each up to its multiple.
    assert results["run-a-0"].seconds == 1.0 and results["run-a-3"].seconds == 0.25


def test_progress_line_at_most_once_a_second_and_only_when_changed(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path, {"run-0000aaaa": 3, "run-0000bbbb": 1})
    seconds = dict(zip([t.id for t in tasks], [0.5, 6.0, 0.5, 0.5]))
    engine = FakeEngine(2, seconds)
    run(engine, tasks)
    # t=0   a0, a1 start:                            shown
    # t=0.5 a0 ends, a2 starts (1 done, 2 running):  changed, but under a second: not shown
    # t=1.0 a2 ends, b0 starts:                      changed, a second on: shown
    # t=1.5 b0 ends: shown at 2.0, a second after the last line
    # then nothing changes until a1 ends at 6.0, and the loop is over
    assert engine.lines == [
        (0.0, "fake segments: 0000aaaa 0 done, 2 running, 1 queued; "
              "0000bbbb 0 done, 0 running, 1 queued"),
        (1.0, "fake segments: 0000aaaa 2 done, 1 running, 0 queued; "
              "0000bbbb 0 done, 1 running, 0 queued"),
        (2.0, "fake segments: 0000aaaa 2 done, 1 running, 0 queued; "
              "0000bbbb 1 done, 0 running, 0 queued"),
        (6.0, "fake: 4 submitted"),  # the engine's summary, after the run
    ]


def test_ctrl_c_cancels_running_tasks_and_marks_the_rest_interrupted(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path, {"run-a": 6})
    seconds = dict(zip([t.id for t in tasks], [0.5, 5.0, 5.0, 5.0, 5.0, 5.0]))
    engine = FakeEngine(2, seconds, interrupt_at=1.0)
    results, done = run(engine, tasks)
    assert engine.interrupted
    assert done == ["run-a-0"] and results["run-a-0"].ok
    assert sorted(engine.cancelled) == ["run-a-1", "run-a-2"]  # what was running
    for task_id in ("run-a-1", "run-a-2"):
        assert results[task_id] == TaskResult(task_id, -2, 1.0 - (0.0 if task_id == "run-a-1"
                                                                 else 0.5), True)
    for task_id in ("run-a-3", "run-a-4", "run-a-5"):  # never started
        assert results[task_id] == TaskResult(task_id, None, 0.0, True)
    assert engine.log == ["begin", "end"]


def test_a_task_that_cannot_be_collected_fails_alone(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path, {"run-a": 4})
    seconds = dict.fromkeys((t.id for t in tasks), 0.5)
    bad = {"run-a-1": RuntimeError("result unreadable\nsecond line"),
           "run-a-2": TaskFailed("fake: job 7 failed after 2 retries: OOM")}
    engine = FakeEngine(2, seconds, bad_collect=bad)
    results, done = run(engine, tasks)
    assert sorted(done) == [t.id for t in tasks]  # on_done for every one, failed or not
    assert [results[t.id].ok for t in tasks] == [True, False, False, True]
    assert results["run-a-1"].returncode is None and not results["run-a-1"].interrupted
    log = (tasks[1].scratch / "output.log").read_text()
    assert log == "fake: could not collect the task's result: RuntimeError: result unreadable\n"
    assert (tasks[2].scratch / "output.log").read_text() == \
        "fake: job 7 failed after 2 retries: OOM\n"  # an engine's own reason, as it is
    assert not engine.interrupted


def test_a_task_that_cannot_start_fails_alone(tmp_path: Path) -> None:
    class NoThird(FakeEngine):
        def submit(self, task: Task) -> str:
            if task.id == "run-a-2":
                raise OSError(24, "Too many open files")
            return super().submit(task)

    tasks = make_tasks(tmp_path, {"run-a": 4})
    engine = NoThird(2, dict.fromkeys((t.id for t in tasks), 0.5))
    results, _ = run(engine, tasks)
    assert [results[t.id].ok for t in tasks] == [True, True, False, True]
    assert (tasks[2].scratch / "output.log").read_text() == \
        "fake: could not start the task: OSError: [Errno 24] Too many open files\n"


def test_a_crash_in_the_driver_cancels_what_runs(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path, {"run-a": 4})
    engine = FakeEngine(3, dict(zip([t.id for t in tasks], [0.5, 9.0, 9.0, 9.0])))

    def on_done(task: Task, result: TaskResult) -> None:
        raise ValueError("the driver broke")

    with pytest.raises(ValueError, match="the driver broke"):
        engine.run(tasks, on_done)
    assert sorted(engine.cancelled) == ["run-a-1", "run-a-2"] and engine.log[-1] == "end"


def test_engines_are_imported_only_when_used() -> None:
    code = ("import sys; import flowillower.hindsight.executor, "
            "flowillower.hindsight.ray_executor, flowillower.hindsight.slurm_executor; "
            "print(sorted(m for m in ('ray', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_local_executor_runs_real_processes_within_the_bound(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # Each worker leaves a mark while it runs; at most two marks may exist at once.
    script = ("import os, sys, time; from pathlib import Path; m = Path(sys.argv[1]); "
              "(m / str(os.getpid())).touch(); n = len(list(m.iterdir())); "
              "time.sleep(0.3); (m / str(os.getpid())).unlink(); "
              "print('peers', n); sys.exit(int(sys.argv[2]))")
    tasks = [Task(f"t{i}", [sys.executable, "-c", script, str(marks), str(i % 2 * 3)],
                  tmp_path, clean_env(), tmp_path / f"t{i}") for i in range(5)]
    results, done = run(LocalExecutor(2), tasks)
    assert sorted(done) == [t.id for t in tasks]
    assert [results[t.id].returncode for t in tasks] == [0, 3, 0, 3, 0]
    peers = [int(t.log_path.read_text().split()[1]) for t in tasks]
    assert max(peers) <= 2


def test_local_executor_stops_its_workers_on_ctrl_c(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    script = ("import sys, time; f = open(sys.argv[1], 'a')\n"
              "while True:\n    f.write('x'); f.flush(); time.sleep(0.02)")
    tasks = [Task(f"t{i}", [sys.executable, "-c", script, str(beat)], tmp_path, clean_env(),
                  tmp_path / f"t{i}") for i in range(3)]
    executor = LocalExecutor(2)

    def tick() -> None:
        if beat.exists() and beat.stat().st_size > 10:
            raise KeyboardInterrupt

    results = executor.run(tasks, lambda task, result: None, tick)
    assert executor.interrupted
    assert [results[t.id].interrupted for t in tasks] == [True, True, True]
    assert results["t2"].returncode is None  # never started
    assert results["t0"].returncode is not None  # stopped, with the signal's status
    size = beat.stat().st_size  # run() returned after its workers were gone:
    ps = subprocess.run(["pgrep", "-f", str(beat)], capture_output=True, text=True)
    assert ps.stdout.strip() == "" and beat.stat().st_size == size
