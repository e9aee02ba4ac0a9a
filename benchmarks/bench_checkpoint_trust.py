"""Checkpointing's trust work (issue 13), the previous package vs this one, in one run.

(a) Back-pressure. `fw.checkpointing(every=1)` behind a slow disk: every checkpoint write
    takes DELAY seconds more (a sleep in front of `torch.save` on the writer thread). How
    many captures (and MB of them) were in memory at once, the process's peak RSS, and
    the time of the loop (the `with` block, including the writer draining at its end).
    Before, nothing bounded the captures waiting for the writer; now `every=` captures
    get back-pressure (the training thread waits) like adaptive ones.
(b) One checkpoint file. Write: the writer's own `write_s` from the manifest (serialise
    and write; now also the sha256 of the bytes as they pass and the ledger line). Load:
    `CheckpointStore.load` of each capture, cache dropped (before: `torch.load(...,
    weights_only=False)`; now: size + sha256 checked against the ledger, then
    `weights_only=True`). Wall time (median over every capture of every process) and
    CPU time (the sha256 is CPU work; CPU time also holds on a loaded machine).

Each (version, case) runs in a fresh process, versions alternating; the previous package
is `git archive BASELINE_REV` unpacked in a temporary folder (benchmarks/_baseline.py).
Run: python benchmarks/bench_checkpoint_trust.py [--quick] [--repeats 2] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from _baseline import check_imported_from, env_running, previous_package

# The last commit before issue 13's work: 501d721 ("review: bench_demo and bench_demo_steps
# share one demo training step"). Its two children (ce2e83f moved RecordBuffer, 810530e
# added an unused provenance module) leave checkpointing as it was.
BASELINE_REV = "501d721"
LAYERS = 4


def training_state(width: int) -> tuple[Any, Any, Any]:
    """A LAYERS-deep MLP of `width`, its Adam optimizer (state filled by one step) and
    an input batch; one torch thread, seeded."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(LAYERS)])
    opt = torch.optim.Adam(net.parameters())
    return net, opt, torch.randn(64, width)


def train_step(net: Any, opt: Any, x: Any) -> None:
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()


def writer_class() -> type:
    """The background checkpoint writer of whichever version was imported. The previous
    one had no public writer class: the benchmark instruments it from outside."""
    try:
        from flowillower.hindsight.ckpt_files import BackgroundWriter
        return BackgroundWriter
    except ImportError:  # the previous package
        from flowillower.hindsight import checkpoint

        return checkpoint._BackgroundWriter


def pressure(width: int, epochs: int, steps: int, delay: float) -> dict[str, Any]:
    """Case (a) in this process: held captures counted at `submit` (training thread)
    and released when their `torch.save` (writer thread, after the delay) returns."""
    import resource

    import torch

    import flowillower as fw

    lock = threading.Lock()
    held: deque[int] = deque()  # sizes of the captures submitted and not yet saved
    peak = {"captures": 0, "bytes": 0, "total": 0}
    cls = writer_class()
    submit, save = cls.submit, torch.save

    def counting_submit(self: Any, job: Any) -> None:
        if job is not None and job.tree is not None:
            with lock:
                held.append(job.size)
                peak["total"] += 1
                peak["captures"] = max(peak["captures"], len(held))
                peak["bytes"] = max(peak["bytes"], sum(held))
        submit(self, job)

    def slow_save(*args: Any, **kwargs: Any) -> Any:
        try:
            time.sleep(delay)  # the slow disk
            return save(*args, **kwargs)
        finally:
            with lock:
                if held:
                    held.popleft()  # one writer thread, captures saved in order

    cls.submit = counting_submit
    torch.save = slow_save
    net, opt, x = training_state(width)
    with tempfile.TemporaryDirectory() as tmp:
        fw.init(project="bench", dir=tmp, snapshot=False)
        t0 = time.perf_counter()
        with fw.checkpointing(model=net, optimizer=opt, every=1):
            for _ in fw.loop("epoch", range(epochs)):
                for _ in fw.loop("step", range(steps)):
                    train_step(net, opt, x)
        loop_s = time.perf_counter() - t0
        fw.finish()
    return {"captures": peak["total"], "held": peak["captures"], "held_bytes": peak["bytes"],
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loop_s": loop_s}


def files(width: int, captures: int) -> dict[str, Any]:
    """Case (b) in this process: `captures` checkpoints written by the real writer (the
    training thread idles meanwhile, so the writer runs alone), then each loaded back."""
    import torch

    import flowillower as fw
    from flowillower.hindsight.checkpoint import CheckpointStore

    net, opt, _ = training_state(width)
    with tempfile.TemporaryDirectory() as tmp:
        run = fw.init(project="bench", dir=tmp, snapshot=False)
        with fw.checkpointing(model=net, optimizer=opt, every=1) as recorder:
            for _ in fw.loop("epoch", range(captures)):
                # A fresh batch moves the RNG and the step every tensor: no capture shares
                # a tensor with the previous one, each file holds a whole state.
                train_step(net, opt, torch.randn(64, width))
                time.sleep(0.15)
        stats = recorder.stats()  # the writer's CPU seconds, all files together
        fw.finish()
        lines = (run.dir / "checkpoints" / "manifest.jsonl").read_text().splitlines()
        entries = [e for e in map(json.loads, lines) if e.get("type") == "ckpt"]
        store = CheckpointStore(run.dir)
        loads, load_cpu = [], []
        for entry in entries:
            store.drop_cache()
            t0, cpu0 = time.perf_counter(), time.thread_time()
            store.load(entry)
            loads.append(time.perf_counter() - t0)
            load_cpu.append(time.thread_time() - cpu0)
        how = sorted(set(getattr(store, "loaded_with", {}).values())) or ["weights_only=False"]
    return {"write_s": [e["write_s"] for e in entries], "bytes": [e["bytes"] for e in entries],
            "write_cpu_s": stats["write_cpu_s"] / len(entries), "load_s": loads,
            "load_cpu_s": load_cpu, "how": how}


def child(kind: str, src: str, params: str) -> None:
    check_imported_from(None if src == "-" else Path(src))
    args = json.loads(params)
    result = pressure(**args) if kind == "pressure" else files(**args)
    print(json.dumps(result))


def in_child(kind: str, src: Path | None, **params: Any) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind,
                          str(src) if src else "-", json.dumps(params)],
                         capture_output=True, text=True, env=env_running(src))
    if out.returncode:
        raise SystemExit(f"{kind} child ({src or 'this package'}) failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and processes")
    parser.add_argument("--repeats", type=int, default=2, help="processes per version, (b)")
    # Slow enough that the writer falls behind even when the machine's load slows training.
    parser.add_argument("--delay", type=float, default=0.5, help="seconds added per write")
    parser.add_argument("--baseline", default=BASELINE_REV)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    opts, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    if opts.child:
        child(*opts.child)
        return
    epochs, steps, captures = (5, 3, 6) if opts.quick else (10, 3, 10)
    repeats = 1 if opts.quick else opts.repeats
    with tempfile.TemporaryDirectory() as tmp:
        src = previous_package(opts.baseline, Path(tmp))
        versions: list[tuple[str, Path | None]] = [("this package", None)]
        if src is None:
            print(f"(no baseline: cannot read {opts.baseline} from git)")
        else:
            versions.insert(0, (f"previous ({opts.baseline})", src))
        press = {name: in_child("pressure", s, width=1024, epochs=epochs, steps=steps,
                                delay=opts.delay) for name, s in versions}
        got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in versions}
        for r in range(repeats):  # alternate the versions, in both orders
            for name, s in versions if r % 2 == 0 else versions[::-1]:
                got[name].append(in_child("files", s, width=512, captures=captures))

    print(f"(a) fw.checkpointing(every=1), every checkpoint write +{opts.delay:g} s "
          f"(slow disk): {LAYERS}-layer 1024-wide MLP + Adam, {epochs} epochs x {steps} "
          "steps, fresh process each")
    print(f"{'version':<22}{'captures':>9}{'held at once':>14}{'MB held':>9}"
          f"{'peak RSS MB':>13}{'loop s':>8}")
    for name, p in press.items():
        print(f"{name:<22}{p['captures']:>9}{p['held']:>14}{p['held_bytes'] / 1e6:>9.0f}"
              f"{p['rss'] / 1e6:>13.0f}{p['loop_s']:>8.2f}")

    size = statistics.median(b for runs in got.values() for g in runs for b in g["bytes"])
    print(f"\n(b) one checkpoint file, {size / 1e6:.1f} MB ({LAYERS}-layer 512-wide MLP: "
          f"weights, grads, Adam moments): {captures} files x {repeats} process(es) "
          "per version")
    print("ms per file: wall (median) and CPU (writer thread: mean from recorder.stats(); "
          "loading thread: median)")
    print(f"{'version':<22}{'write':>8}{'write CPU':>11}{'load':>8}{'load CPU':>10}"
          "  loaded with")
    base = None
    for name, runs in got.items():
        row = (statistics.median(w for g in runs for w in g["write_s"]),
               statistics.median(g["write_cpu_s"] for g in runs),
               statistics.median(t for g in runs for t in g["load_s"]),
               statistics.median(t for g in runs for t in g["load_cpu_s"]))
        how = ", ".join(sorted({h for g in runs for h in g["how"]}))
        print(f"{name:<22}{row[0] * 1e3:>8.1f}{row[1] * 1e3:>11.1f}{row[2] * 1e3:>8.1f}"
              f"{row[3] * 1e3:>10.1f}  {how}")
        if base is None:
            base = row
        else:
            print(f"{'  this / previous':<22}" + "".join(
                f"{a / b:>{w}.2f}" for a, b, w in zip(row, base, (8, 11, 8, 10))))


if __name__ == "__main__":
    main()
