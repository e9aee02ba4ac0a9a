"""Where a watched step's cost lands: the demo's loop, step by step, against a twin.

One process holds two identical copies of the demo's velocity network. Epochs alternate
between them (A B, B A, ...): the plain one trains with `range` and no flowillower call,
the tracked one with `fw.loop`, `fw.log` and the demo's `fw.watch` (every 10 steps). Each
step's CPU time on the training thread is recorded by its position in the 10-step watch
cycle, so the table shows what the watched step costs (position 0), what the step after
it costs (it logs the statistics and takes the hooks off), and what the other steps pay
(the loop and log calls, and anything the watched step leaves behind). Checkpoints and
pictures are left out: `bench_demo.py --same-process` measures the whole demo.

Run: python benchmarks/bench_demo_steps.py [--epochs 50] [--watch-every 10]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

from bench_demo import demo_step  # the same training step as the whole-demo benchmark
from rich.console import Console
from rich.table import Table


def measure(epochs: int, every: int) -> tuple[dict, dict]:
    """Per-position step CPU times {(arm, position): [seconds]} and per-arm epoch times."""
    import torch

    import flowillower as fw
    from flowillower.examples.flow_matching.config import parse_overrides
    from flowillower.examples.flow_matching.data import make_dataset
    from flowillower.examples.flow_matching.model import VelocityNet
    from flowillower.examples.flow_matching.train import watch

    torch.set_num_threads(1)
    cfg = parse_overrides([])
    data = torch.from_numpy(make_dataset(cfg.data.name, cfg.data.n_samples, cfg.data.noise,
                                         cfg.training.seed))
    batch_size = cfg.training.batch_size
    n_batches = math.ceil(len(data) / batch_size)

    def build():
        torch.manual_seed(cfg.training.seed)
        model = VelocityNet(cfg.model.data_dim, cfg.model.time_embed_dim, cfg.model.hidden_dims)
        return model, torch.optim.Adam(model.parameters(), lr=cfg.training.learning_rate)

    fw.init(project="bench-demo-steps")
    arms = {"plain": build(), "tracked": build()}
    watcher = watch(arms["tracked"][0], every)
    steps = {(arm, k): [] for arm in arms for k in range(every)}
    epoch_s = {arm: 0.0 for arm in arms}
    counted = {arm: 0 for arm in arms}  # global steps: the watch cycle runs across epochs
    rng = {arm: torch.get_rng_state() for arm in arms}
    for epoch in range(epochs):
        for arm in (("plain", "tracked") if epoch % 2 else ("tracked", "plain")):
            model, optimizer = arms[arm]
            torch.set_rng_state(rng[arm])  # each arm its own stream: the same draws
            on = arm == "tracked"
            order = torch.randperm(len(data))
            start = last = time.thread_time()
            for batch in fw.loop("batch", range(n_batches)) if on else range(n_batches):
                loss = demo_step(model, optimizer,
                                 data[order[batch * batch_size:(batch + 1) * batch_size]])
                if on:
                    fw.log("loss", loss.item())
                else:
                    loss.item()
                now = time.thread_time()
                steps[(arm, counted[arm] % every)].append(now - last)
                counted[arm] += 1
                last = now
            if on:
                watcher.pause()
            epoch_s[arm] += time.thread_time() - start
            rng[arm] = torch.get_rng_state()
    fw.finish()
    return steps, epoch_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--watch-every", type=int, default=10)
    args, _ = parser.parse_known_args()
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})  # one core: background threads share it
    with tempfile.TemporaryDirectory() as store:
        os.environ["FLOWILLOWER_DIR"] = store
        steps, epoch_s = measure(args.epochs, args.watch_every)
    table = Table(title=f"demo loop, {args.epochs} epochs per arm, fw.watch every "
                        f"{args.watch_every} steps, 1 torch thread, 1 core (medians)")
    for col in ("step in cycle", "plain ms", "tracked ms", "tracked - plain µs"):
        table.add_column(col, justify="right")
    extra = 0.0
    for k in range(args.watch_every):
        plain = statistics.median(steps[("plain", k)])
        tracked = statistics.median(steps[("tracked", k)])
        extra += tracked - plain
        label = "0 (watched)" if k == 0 else "1 (logs it)" if k == 1 else str(k)
        table.add_row(label, f"{plain * 1e3:.3f}", f"{tracked * 1e3:.3f}",
                      f"{(tracked - plain) * 1e6:+.0f}")
    Console(width=120).print(table)
    share = epoch_s["plain"] / epoch_s["tracked"]
    print(f"one {args.watch_every}-step cycle costs {extra * 1e6:+.0f} µs of CPU; whole epochs: "
          f"tracked throughput {share:.1%} of plain (loop, log and watch only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
