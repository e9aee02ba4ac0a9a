"""Recording checkpoints: what is captured, restored, de-duplicated, and how often."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest

import flowillower as fw
from flowillower.hindsight.checkpoint import (
    CheckpointError,
    CheckpointStore,
    _bit_equal,
    capture_object,
    capture_rng,
    object_kind,
    restore_object,
    restore_rng,
    restore_state,
)

torch = pytest.importorskip("torch")  # the optional [torch] extra

torch.set_num_threads(1)


class Holder:
    def __init__(self) -> None:
        self.count = 0
        self.history: list[float] = []


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


def test_objects_round_trip_bit_exact() -> None:
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    arr = np.arange(5.0)
    holder, box, rng = Holder(), {"a": [1, 2]}, random.Random(3)
    gen = torch.Generator().manual_seed(7)
    npgen = np.random.default_rng(5)
    objects = {"net": net, "opt": opt, "sched": sched, "arr": arr, "holder": holder,
               "box": box, "rng": rng, "gen": gen, "npgen": npgen}
    kinds = {k: object_kind(v) for k, v in objects.items()}

    def train_step() -> None:
        x = torch.randn(6, 4)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    train_step()
    net.eval()
    saved = {k: capture_object(kinds[k], v) for k, v in objects.items()}
    rng_state = capture_rng()
    expected = [p.detach().clone() for p in net.parameters()]
    grads = [p.grad.clone() for p in net.parameters()]
    # Change everything...
    net.train()
    train_step()
    arr += 1
    holder.count, box["b"] = 5, 1
    rng.random()
    torch.randn(3, generator=gen)
    npgen.random()
    random.random()
    np.random.rand()
    torch.rand(1)
    # ...and restore.
    for k, v in objects.items():
        restore_object(kinds[k], v, saved[k])
    restore_rng(rng_state)
    assert all(torch.equal(a, b) for a, b in zip(expected, net.parameters()))
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))
    assert not net.training and not net[3].training
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == 0.005
    assert arr.tolist() == [0, 1, 2, 3, 4] and holder.count == 0 and box == {"a": [1, 2]}
    first = (rng.random(), torch.randn(1, generator=gen).item(), npgen.random(),
             random.random(), np.random.rand(), torch.rand(1).item())
    for k, v in objects.items():
        restore_object(kinds[k], v, saved[k])
    restore_rng(rng_state)
    again = (rng.random(), torch.randn(1, generator=gen).item(), npgen.random(),
             random.random(), np.random.rand(), torch.rand(1).item())
    assert first == again
    with pytest.raises(CheckpointError, match="immutable int"):
        object_kind(3)


def _train(tmp_path: Path, epochs: int, pause: float = 0.0, **kwargs) -> tuple[Path, dict]:
    torch.manual_seed(1)
    net = torch.nn.Linear(3, 2)
    frozen = torch.nn.Linear(3, 2)  # never changes: its tensors are stored once
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run = fw.init(dir=tmp_path, snapshot=False)
    with fw.checkpointing(net=net, frozen=frozen, opt=opt, **kwargs) as recorder:
        for _epoch in fw.loop("epoch", range(epochs)):
            for _step in fw.loop("step", range(3)):
                loss = net(torch.randn(4, 3)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                time.sleep(pause)
            fw.log("loss", loss.item())
    stats = recorder.stats()
    fw.finish()
    return run.dir, stats


def test_recording_start_inner_and_final_states(tmp_path: Path) -> None:
    run_dir, stats = _train(tmp_path, 3, every=1)
    store = CheckpointStore(run_dir)
    assert store.meta["outer"] == "epoch" and store.ended == 3
    assert [k for k in store.entries if k[0] == "start"] == [("start", i, 0) for i in range(3)]
    assert all(store.skippable(i) for i in range(3)) and store.final() is not None
    assert stats["captures"] == 7  # 3 x (start + after the inner loop) + final
    # State at the end of iteration 0's inner loop == what the restore gives back.
    net = torch.nn.Linear(3, 2)
    frozen = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    objects = {"net": net, "frozen": frozen, "opt": opt}
    inner0 = store.load(store.entries[("inner", 0, 0)])
    restore_state(inner0, objects, store.meta["objects"], None)
    start1 = store.load(store.start(1))
    # Nothing runs between the inner loop's end and the next iteration: same tensors.
    assert all(torch.equal(a, b) for a, b in zip(
        inner0["objects"]["net"]["state"].values(), start1["objects"]["net"]["state"].values()))
    # The frozen module was written once, then referenced.
    files = sorted((run_dir / "checkpoints").glob("c*.pt"))
    first = torch.load(files[0], weights_only=False)
    later = torch.load(files[-1], weights_only=False)
    assert any(k.startswith("/objects/frozen") for k in first["blobs"])
    assert not any(k.startswith("/objects/frozen") for k in later["blobs"])


def test_adaptive_frequency_keeps_overhead_bounded(tmp_path: Path) -> None:
    # Iterations of ~0 ms: a 2% budget affords only the first one (and the final state).
    run_dir, stats = _train(tmp_path, 30)
    assert stats["checkpointed_iterations"][0] == 0
    assert len(stats["checkpointed_iterations"]) < 30
    store = CheckpointStore(run_dir)
    assert store.final() is not None and store.ended == 30
    # A generous budget checkpoints every iteration (waiting for a writer that falls
    # behind on a loaded machine, rather than skipping: the time budget is under test).
    _run_dir, stats = _train(tmp_path / "b", 10, pause=0.005, max_overhead=10.0,
                             when_behind="wait")
    assert stats["checkpointed_iterations"] == list(range(10))


def test_killed_recording_keeps_complete_files(tmp_path: Path) -> None:
    run_dir, _ = _train(tmp_path, 2, every=1)
    manifest = run_dir / "checkpoints" / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + '{"type": "ckpt", "se')  # torn line
    (run_dir / "checkpoints" / ".c000009.pt.tmp").write_bytes(b"partial")
    store = CheckpointStore(run_dir)
    assert store.ended == 2 and store.skippable(1)


def test_unchanged_tensor_detection_is_bit_exact_beyond_the_first_bytes() -> None:
    a = torch.randn(5000)  # 20,000 bytes: past the 4,096-byte first look
    b = a.clone()
    assert _bit_equal(a, b)
    b[-1] = torch.nextafter(b[-1], torch.tensor(float("inf")))  # differs in the last ulp only
    assert not _bit_equal(a, b)
    z, nz = torch.zeros(3000), torch.zeros(3000)
    nz[2999] = -0.0
    assert not _bit_equal(z, nz)  # -0.0 and 0.0 differ in their bits
    assert not _bit_equal(a, a.double()) and not _bit_equal(a, a[:10])


def test_the_writers_cpu_time_is_measured_for_the_budget(tmp_path: Path) -> None:
    _, stats = _train(tmp_path, 4, every=1)
    assert 0 < stats["write_cpu_s"] <= stats["write_s"] + 0.05  # CPU time within wall time


def test_cpu_training_charges_the_writer_twice() -> None:
    """On CPU training the writer's work slows the training thread after it about as much
    again (caches): the budget charges its CPU time twice there, once for device state."""
    from types import SimpleNamespace

    from flowillower.hindsight.checkpoint import Recorder, _has_device_tensor

    assert not _has_device_tensor({"a": [torch.zeros(2)], "b": (1, "x")})
    assert _has_device_tensor({"a": [torch.zeros(2), {"c": torch.empty(2, device="meta")}]})
    recorder = Recorder(SimpleNamespace(_depth=0), {}, max_overhead=0.01)
    recorder._writer = SimpleNamespace(error=None, pending=lambda: 0, write_cpu_s=0.04)
    # 10 iterations of 1 s: a budget of 0.11 s; two captures so far, their writes 0.04 s.
    recorder._completed, recorder._loop_t0, recorder.captures = 10, 0.0, 2
    recorder._cpu_state = False
    assert recorder._decide(10, 10.0) == (True, True)  # 0.04 charged: room for two more
    recorder._cpu_state = True
    assert recorder._decide(10, 10.0) == (False, False)  # 0.08 charged: none


def test_sizes_parse_with_decimal_and_binary_units() -> None:
    from flowillower.sizes import parse_size

    assert parse_size(1024) == 1024 and parse_size("1024") == 1024
    assert parse_size("500MB") == 500_000_000 and parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("3kib") == 3072
    assert parse_size("10k") == 10_000 and parse_size("7 b") == 7 and parse_size(".5KiB") == 512
    assert parse_size("1e9") == 10**9 and parse_size("2.5e3 KB") == 2_500_000
    for bad in ("lots", "5 XB", "-3MB", "", "e9", -1, float("nan"), float("inf"), True,
                [1]):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    with pytest.raises(ValueError, match="size"):  # before anything is recorded
        with fw.checkpointing(max_disk="plenty", w=np.zeros(2)):
            pass


def test_recording_stops_before_the_disk_fills(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever max_disk says, a capture that would leave less than the free-space floor
    is not written: recording stops with a warning and a manifest line."""
    import flowillower.hindsight.checkpoint as ck

    total = 100 * 2**30
    free = {"bytes": total}
    monkeypatch.setattr(ck, "_free_bytes", lambda path: (free["bytes"], total))
    floor = ck.free_floor(total)
    assert floor == 2 * 2**30  # 2% of 100 GiB
    assert ck.free_floor(10 * 2**30) == 2**30 and ck.free_floor(2**42) == 10 * 2**30
    original = ck.Recorder._capture

    def capture_then_fill(self, kind, index, m):  # the disk fills up during epoch 2
        if index >= 2:
            free["bytes"] = floor + 10
        original(self, kind, index, m)

    monkeypatch.setattr(ck.Recorder, "_capture", capture_then_fill)
    with pytest.warns(UserWarning, match="checkpoints stopped at iteration 2.*bytes free"):
        run_dir, stats = _train(tmp_path, 5, every=1)
    assert stats["checkpointed_iterations"] == [0, 1] and stats["start_iterations"] == [0, 1]
    assert "bytes free" in stats["stopped"] and stats["captures"] == 4
    store = CheckpointStore(run_dir)
    assert [i for i in range(5) if store.skippable(i)] == [0, 1]
    assert store.final() is None and store.ended == 5  # the loop itself ran to the end
    manifest = (run_dir / "checkpoints" / "manifest.jsonl").read_text()
    assert '"type":"stopped"' in manifest and '"i":2' in manifest
