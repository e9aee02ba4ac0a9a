"""What the framework integrations cost per logged step, against calling `fw.log_metrics`
directly, all in one process and one run.

Each row logs the same 3 floats per step at an explicit step, `--steps` times, in blocks
that alternate between the rows (`--repeats` rounds) so every row sees the same machine
load; the median block gives the microseconds per step. The integration rows call the
hooks the framework calls once per logged step, with the framework's own objects where
they are cheap to build:

* Lightning: `LoopCoordinates.on_train_batch_start` (the step's loop coordinate) then
  `FlowillowerLogger.log_metrics` with Lightning's `epoch` entry, as the trainer does;
* transformers: `FlowillowerCallback.on_step_begin` then `on_log` with a real
  `TrainingArguments` / `TrainerState` and the trainer's fractional `epoch` entry.

Baselines in the same run: `fw.log_metrics(values, step=i)` (the direct call) and the
same call inside `run.iteration("step", i)` (a hand-written loop with coordinates).
Run: python benchmarks/bench_integrations.py [--steps 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from collections.abc import Callable

import flowillower as fw


def _cases(run: fw.Run, tmp: str) -> dict[str, Callable[[int, int], None]]:
    """Row name -> a function logging steps [start, stop)."""

    def direct(start: int, stop: int) -> None:
        for i in range(start, stop):
            fw.log_metrics({"loss": 1.0 / (i + 1), "lr": 0.1, "acc": 0.5}, step=i)

    def loop(start: int, stop: int) -> None:
        with run.iteration("epoch", 0):
            for i in range(start, stop):
                with run.iteration("step", i):
                    fw.log_metrics({"loss": 1.0 / (i + 1), "lr": 0.1, "acc": 0.5}, step=i)

    cases = {"fw.log_metrics(step=i) (baseline)": direct,
             "run.iteration('step') + fw.log_metrics (baseline)": loop}
    try:
        from flowillower.integrations.lightning import FlowillowerLogger
    except ImportError:
        print("lightning not installed: its row is left out")
    else:
        logger = FlowillowerLogger(run=run, log_graph=False)
        callback = logger.coordinates  # what the trainer calls at each batch

        def lightning(start: int, stop: int) -> None:
            trainer = types.SimpleNamespace(current_epoch=0, global_step=start)
            callback.on_train_epoch_start(trainer, None)
            for i in range(start, stop):
                trainer.global_step = i
                callback.on_train_batch_start(trainer, None, None, i)
                logger.log_metrics({"loss": 1.0 / (i + 1), "lr": 0.1, "acc": 0.5,
                                    "epoch": 0}, step=i)
            callback.close()

        cases["lightning FlowillowerLogger"] = lightning
    try:
        from transformers import TrainerControl, TrainerState, TrainingArguments

        from flowillower.integrations.transformers import FlowillowerCallback
    except ImportError:
        print("transformers not installed: its row is left out")
    else:
        args = TrainingArguments(output_dir=tmp, report_to=[], use_cpu=True)
        state, control = TrainerState(), TrainerControl()
        hf = FlowillowerCallback(run=run, log_model=False, finish=False)

        def transformers(start: int, stop: int) -> None:
            state.epoch = 0.0
            hf.on_epoch_begin(args, state, control)
            for i in range(start, stop):
                state.global_step = i - 1
                hf.on_step_begin(args, state, control)
                state.global_step = i
                state.epoch = i / stop
                hf.on_log(args, state, control, logs={
                    "loss": 1.0 / (i + 1), "learning_rate": 0.1, "grad_norm": 0.5,
                    "epoch": state.epoch})
            hf.on_epoch_end(args, state, control)
            hf.on_train_end(args, state, control)

        cases["transformers FlowillowerCallback"] = transformers
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    opts, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = fw.init(project="bench", dir=tmp, snapshot=False)
        cases = _cases(run, tmp)
        times: dict[str, list[float]] = {name: [] for name in cases}
        offset = 0
        for _ in range(opts.repeats):
            for name, case in cases.items():  # alternating: same load for every row
                t0 = time.perf_counter()
                case(offset, offset + opts.steps)
                times[name].append((time.perf_counter() - t0) / opts.steps)
                offset += opts.steps  # fresh steps each block: no repeated coordinates
        fw.finish()
    base = statistics.median(next(iter(times.values())))
    print(f"\n{opts.steps} logged steps x {opts.repeats} rounds, 3 floats each, one run "
          "(median block)")
    print(f"| {'case':52} | us / logged step | vs direct call |")
    print(f"|{'-' * 54}|------------------|----------------|")
    for name, values in times.items():
        per = statistics.median(values)
        print(f"| {name:52} | {per * 1e6:16.2f} | {per / base:13.2f}x |")


if __name__ == "__main__":
    main()
