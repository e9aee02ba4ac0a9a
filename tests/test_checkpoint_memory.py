"""Checkpoint captures do not pile up in memory behind a slow writer (issue 13, item 4).

`every=` captures obey the same back-pressure rule as adaptive ones; what happened is in
the manifest (`waited` / `skipped` lines) and replays stay exact. Device state goes to
host memory under `max_memory`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.hindsight import checkpoint as ck
from flowillower.hindsight import ckpt_files, state
from flowillower.store.reader import RunReader
from tests.conftest import clean_env

PY = sys.executable

# `wnorm_then` is what a replay of `wnorm` must give. The writer is made slow (0.1 s a
# file) and the captures it holds are counted by the script itself, independently of
# the recorder's own bookkeeping.
SCRIPT = '''
    import json
    import os
    import threading
    import time

    import torch
    import flowillower as fw
    from flowillower.hindsight import ckpt_files

    lock = threading.Lock()
    held = {"now": 0, "peak": 0}
    submit, write = ckpt_files.BackgroundWriter.submit, ckpt_files.BackgroundWriter._write

    def counting_submit(self, job):
        if job is not None and job.tree is not None:
            with lock:
                held["now"] += 1
                held["peak"] = max(held["peak"], held["now"])
        submit(self, job)

    def slow_write(self, job):
        try:
            if job.tree is not None:
                time.sleep(0.1)
            write(self, job)
        finally:
            if job.tree is not None:
                with lock:
                    held["now"] -= 1

    ckpt_files.BackgroundWriter.submit = counting_submit
    ckpt_files.BackgroundWriter._write = slow_write

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    X, Y = torch.randn(64, 8), torch.randn(64, 1)
    with fw.checkpointing(model=net, optimizer=opt, every=1,
                          when_behind=fw.arg("policy", "wait")) as recorder:
        for epoch in fw.loop("epoch", range(6)):
            for step in fw.loop("step", range(3)):
                idx = torch.randint(0, 64, (16,))
                loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                fw.log("loss", torch.nn.functional.mse_loss(net(X), Y).item())
            fw.log("wnorm_then", float(net[0].weight.norm()))
    if recorder is not None and os.environ.get("FW_TEST_STATS"):
        with open(os.environ["FW_TEST_STATS"], "w") as fh:
            json.dump({**recorder.stats(), "counted_peak": held["peak"]}, fh)
'''
NEW = SCRIPT.replace('            fw.log("wnorm_then", float(net[0].weight.norm()))',
                     '            fw.log("wnorm_then", float(net[0].weight.norm()))\n'
                     '            fw.log("wnorm", float(net[0].weight.norm()))')


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _record(root: Path, source: str, stats: Path, *kwargs: str) -> dict:
    if not (root / ".git").exists():
        root.mkdir(parents=True, exist_ok=True)
        _git(root, "init", "-q")
    (root / "train.py").write_text(textwrap.dedent(source).lstrip())
    argv = [PY, "train.py"] + (["--kwargs", *kwargs] if kwargs else [])
    proc = subprocess.run(argv, cwd=root, env=clean_env(FW_TEST_STATS=str(stats)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(stats.read_text())


def _runs(root: Path) -> dict[str, Path]:
    """policy arg -> run folder."""
    out = {}
    for run in (root / ".flowillower" / "runs").iterdir():
        args = RunReader(run).load(["policy"]).series
        out[args["policy"].last() if "policy" in args else "wait"] = run
    return out


def _values(run: Path, name: str) -> list[float]:
    return [float(v) for v in RunReader(run).load([name]).series[name].values]


def test_every_captures_stay_bounded_behind_a_slow_writer_and_replay_exactly(
        tmp_path: Path) -> None:
    pytest.importorskip("torch")
    root = tmp_path / "proj"
    waited = _record(root, SCRIPT, tmp_path / "wait.json")
    skipped = _record(root, SCRIPT, tmp_path / "skip.json", "policy=skip")
    # Without back-pressure, 6 fast iterations hand the writer 13 captures at once.
    for stats in (waited, skipped):
        assert stats["held_bound"] == 4  # 2 x (1 inner loop) + 2
        assert 1 <= stats["counted_peak"] <= stats["held_bound"]
        assert stats["peak_held"] <= stats["held_bound"]
    # "wait": every requested checkpoint is taken, the training thread waited for them.
    assert waited["captures"] == 13 and waited["checkpointed_iterations"] == list(range(6))
    assert waited["waited"] > 0 and waited["skipped"] == 0
    # "skip": the same rule, iterations left without checkpoints instead.
    assert skipped["skipped"] > 0 and skipped["waited"] == 0
    assert skipped["captures"] < 13 and len(skipped["checkpointed_iterations"]) < 6
    runs = _runs(root)
    for policy, kind in (("wait", "waited"), ("skip", "skipped")):
        manifest = (runs[policy] / "checkpoints" / "manifest.jsonl").read_text()
        lines = [json.loads(line) for line in manifest.splitlines()]
        assert sum(e["type"] == kind for e in lines) == (waited if kind == "waited"
                                                         else skipped)[kind]
    (root / "train.py").write_text(textwrap.dedent(NEW).lstrip())
    report = fw.replay("wnorm", dir=root, yes=True, echo=lambda _t: None)
    assert report.ok, str(report)
    for outcome in report.runs:  # restored from the checkpoints that were written
        assert "inner loops skipped via checkpoints" in outcome.strategy, str(report)
        assert not outcome.notes, str(report)
    for policy in ("wait", "skip"):
        want = _values(runs[policy], "wnorm_then")  # the same expression, logged originally
        assert len(want) == 6
        assert _values(runs[policy], "wnorm") == want, policy  # bit for bit


class FakeCudaTensor:
    """A stand-in for a CUDA tensor (this machine has no GPU: the device copy is MOCKED).

    It records how it is copied; `.to("cpu", non_blocking=...)` returns a real CPU tensor
    with its data, as torch would after the copy lands. Cloning it on the device fails.
    """

    is_cuda = True

    def __init__(self, data, index: int = 0) -> None:
        import torch

        self.data = data
        self.device = torch.device("cuda", index)  # constructible without a GPU
        self.copies: list[tuple[str, bool]] = []

    def detach(self) -> FakeCudaTensor:
        return self

    def clone(self):
        raise AssertionError("a capture cloned device state on the device")

    def to(self, device: str, non_blocking: bool = False):
        self.copies.append((device, non_blocking))
        return self.data.clone()


class Holder:
    """A stateful object whose state lives on the (fake) GPU."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.w = FakeCudaTensor(torch.zeros(100_000))  # 400 kB
        self.history: list[FakeCudaTensor] = []

    def state_dict(self) -> dict:
        return {"w": self.w}

    def load_state_dict(self, state: dict) -> None:
        self.w = FakeCudaTensor(state["w"].clone())

    def step(self) -> None:
        self.history.append(self.w)
        self.w = FakeCudaTensor(self.w.data + 1.0)


def test_device_state_goes_to_host_memory_under_a_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MOCKED device copy: FakeCudaTensor stands in for CUDA tensors, and the CUDA event
    the writer waits on is a recording fake. Captures copy device state with
    `.to("cpu", non_blocking=True)`, never clone it on the device; the writer waits for
    the copies before reading them; the bytes held stay within `max_memory`."""
    torch = pytest.importorskip("torch")
    is_tensor = state._is_tensor
    monkeypatch.setattr(state, "_is_tensor",
                        lambda x: isinstance(x, FakeCudaTensor) or is_tensor(x))
    events: list[tuple[str, str]] = []  # (what, thread)

    class Landed:
        def synchronize(self) -> None:
            events.append(("synchronize", threading.current_thread().name))

    def copies_landed(sources):
        assert sources and all(isinstance(t, FakeCudaTensor) for t in sources)
        events.append(("recorded", threading.current_thread().name))
        return Landed()

    monkeypatch.setattr(ck, "copies_landed", copies_landed)
    lock = threading.Lock()
    held = {"bytes": 0, "peak": 0}
    write, submit = ckpt_files.BackgroundWriter._write, ckpt_files.BackgroundWriter.submit

    def counting_submit(self, job):
        if job is not None and job.tree is not None:
            with lock:
                held["bytes"] += job.size
                held["peak"] = max(held["peak"], held["bytes"])
        submit(self, job)

    def slow_write(self, job):
        try:
            if job.tree is not None:
                time.sleep(0.05)
            write(self, job)
        finally:
            if job.tree is not None:
                with lock:
                    held["bytes"] -= job.size

    monkeypatch.setattr(ckpt_files.BackgroundWriter, "submit", counting_submit)
    monkeypatch.setattr(ckpt_files.BackgroundWriter, "_write", slow_write)
    holder = Holder(torch)
    budget = 600_000  # one capture of ~413 kB fits, two do not
    run = fw.init(dir=tmp_path, snapshot=False)
    with fw.checkpointing(state=holder, every=1, max_memory=budget,
                          when_behind="skip") as recorder:
        for _epoch in fw.loop("epoch", range(6)):
            for _step in fw.loop("step", range(2)):
                holder.step()
    stats = recorder.stats()
    fw.finish()
    assert stats["skipped"] > 0  # the budget, not the count bound, was what bit
    assert 400_000 < stats["peak_held_bytes"] <= budget and held["peak"] <= budget
    copied = [c for t in [*holder.history, holder.w] for c in t.copies]
    assert copied and set(copied) == {("cpu", True)}
    recorded = [e for e in events if e[0] == "recorded"]
    synced = [e for e in events if e[0] == "synchronize"]
    assert len(recorded) == len(synced) == stats["captures"]
    assert {t for _, t in recorded} == {threading.current_thread().name}
    assert {t for _, t in synced} == {"flowillower-checkpoints"}
    # What was written is the state at each capture (inner loop m=0 of epoch e: after
    # 2 * (e + 1) steps).
    store = ck.CheckpointStore(run.dir)
    manifest = (run.dir / "checkpoints" / "manifest.jsonl").read_text()
    assert '"type":"skipped"' in manifest and "max_memory=600,000" in manifest
    for (kind, i, _m), entry in store.entries.items():
        w = store.load(entry)["objects"]["state"]["w"]
        steps = 2 * i + (2 if kind == "inner" else 0)
        assert torch.equal(w, torch.full((100_000,), float(steps))), (kind, i)


def test_a_second_checkpointed_loop_leaves_the_first_ones_files_alone(tmp_path: Path) -> None:
    """Replays follow a run's first checkpointed loop; a second one in the same run used
    to write its captures over the first one's files (same names), so a replay restored
    the wrong state."""
    import numpy as np

    w = np.zeros(3)
    run = fw.init(dir=tmp_path, snapshot=False)
    for offset in (0.0, 100.0):
        with fw.checkpointing(w=w, every=1):
            w[:] = offset
            for _epoch in fw.loop(f"epoch{int(offset)}", range(2)):
                for _step in fw.loop("step", range(2)):
                    w += 1.0
    fw.finish()
    store = ck.CheckpointStore(run.dir)
    assert store.meta["outer"] == "epoch0"
    got = {key: float(store.load(entry)["objects"]["w"][0])
           for key, entry in store.entries.items()}
    assert got == {("start", 0, 0): 0.0, ("inner", 0, 0): 2.0, ("start", 1, 0): 2.0,
                   ("inner", 1, 0): 4.0, ("final", 2, 0): 4.0}


def test_bad_memory_settings_fail_before_anything_is_recorded() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="when_behind"):
        with fw.checkpointing(when_behind="later", w=np.zeros(2)):
            pass
    with pytest.raises(ValueError, match="size"):
        with fw.checkpointing(max_memory="lots", w=np.zeros(2)):
            pass


def test_host_copies_are_awaited_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """MOCKED CUDA: torch.cuda.Event and torch.cuda.device are recording fakes. One event
    is recorded per device holding copied state, inside that device's context, and the
    writer's `synchronize()` waits on every one of them."""
    torch = pytest.importorskip("torch")
    log: list[tuple[str, int]] = []
    current = {"device": -1}

    class Device:
        def __init__(self, device) -> None:
            self.index = device.index

        def __enter__(self) -> None:
            current["device"] = self.index

        def __exit__(self, *exc) -> None:
            current["device"] = -1

    class Event:
        def record(self) -> None:
            self.device = current["device"]
            log.append(("record", self.device))

        def synchronize(self) -> None:
            log.append(("synchronize", self.device))

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    is_tensor = state._is_tensor
    monkeypatch.setattr(state, "_is_tensor",
                        lambda x: isinstance(x, FakeCudaTensor) or is_tensor(x))
    host: list = []
    tree = state.copy_tree({"a": FakeCudaTensor(torch.ones(2), 0),
                            "b": [FakeCudaTensor(torch.zeros(3), 1),
                                  FakeCudaTensor(torch.ones(1), 1)],
                            "c": torch.arange(3)}, host)
    assert len(host) == 3 and torch.equal(tree["c"], torch.arange(3))
    assert torch.equal(tree["b"][0], torch.zeros(3))
    landed = state.copies_landed(host)
    assert sorted(log) == [("record", 0), ("record", 1)]
    landed.synchronize()
    assert sorted(log[2:]) == [("synchronize", 0), ("synchronize", 1)]
