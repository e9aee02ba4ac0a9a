"""The demo's training throughput with full tracking against the same loop untracked.

Both arms run the real demo script (`flowillower.examples.flow_matching.train`) in fresh
processes, alternating (A B B A ...), and report the training loop's wall time (data set
up and imports excluded, final pictures excluded: the loop only):

* untracked: `tracking.enabled=false` -- every flowillower call is a no-op (fw.debug), the
  per-epoch evaluation still runs (it is the workload, not tracking);
* tracked: checkpointing (adaptive), `fw.watch` every 10 steps, the loss per step and per
  epoch, distances per epoch, the model graph, and comparison / trajectory / vector-field
  pictures every 50 epochs (rendered on the training thread).

`--breakdown` adds the intermediate arms (no watch and no pictures; watch only) to show
where the cost goes. Bar: tracked throughput >= 95% of untracked.

`--side-by-side` runs each tracked arm at the same time as an untracked run, each process
pinned to its own core with one torch thread (the way `flowillower demo quickstart` trains
its two runs), swapping the cores every repeat and the start order every other repeat
(an A/A test showed the run started second ~1% slower). This box's speed drifts by 10-50%
over tens of seconds, which one-after-the-other runs cannot tell from tracking cost;
two runs side by side see the same drift, so their ratio is steady to ~1%. The tracked
run's background threads (checkpoint and metric writers) are pinned with it, so their
cost stays in its own time. The two cores need not be equally fast (one was ~7% slower
than the other throughout a 12-pair run): the summary's core-balanced figure cancels that
(`core_balanced`), the plain median of pairs does not.

`--same-process` measures both arms in one process, alternating epochs (A B, B A, ...):
two identical models, one trained by the demo's loop untracked, the other by the same
loop with full tracking (the demo's `fw.watch`, `fw.checkpointing` with the demo's budget,
`fw.loop` / `fw.log`, pictures every 50 epochs, the model graph). Each arm's time is its
epochs' CPU time on the training thread; the tracked arm is also charged the CPU time of
every other thread of the process (checkpoint and metric writers). Drift cancels within
each ~0.2 s pair of epochs. What this cannot see: effects of tracking on the process as a
whole (heap and cache state), which the untracked epochs share; the side-by-side numbers
include them, and the box's noise.

Run: python benchmarks/bench_demo.py [--epochs 300] [--repeats 3] [--breakdown]
     [--side-by-side] [--same-process]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

SCRIPT = "flowillower.examples.flow_matching.train"
LINE = re.compile(r"epoch\s+(\d+)/(\d+)\s+loss\s+([\d.]+)\s+([\d.]+)s\s+\(cpu ([\d.]+)s\)")


def start(store: str, overrides: list[str], core: int | None = None) -> subprocess.Popen:
    """Start one training run (pinned to `core` when given)."""
    env = dict(os.environ, FLOWILLOWER_DIR=store)
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    return subprocess.Popen([sys.executable, "-m", SCRIPT, *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pin)


def result(proc: subprocess.Popen) -> tuple[float, float, float]:
    """(loop wall seconds, loop CPU seconds of all threads, final epoch loss) of a run."""
    out, err = proc.communicate()
    matches = LINE.findall(out)
    if proc.returncode or not matches:
        sys.exit(f"training failed ({proc.returncode}):\n{out}\n{err}")
    _, _, loss, seconds, cpu = matches[-1]
    return float(seconds), float(cpu), float(loss)


def demo_step(model, optimizer, x1):
    """One batch of `train.py`'s loop (kept in step with it by hand), both arms alike:
    the flow-matching loss, zero_grad, backward, optimizer step. Returns the loss."""
    from flowillower.examples.flow_matching.model import flow_matching_loss

    loss = flow_matching_loss(model, x1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def core_balanced(ratios: list[float]) -> tuple[float, float]:
    """(throughput ratio, core effect) of side-by-side pairs, the cores' speeds cancelled.

    Pair r ran the tracked arm on the second core when r is even, on the first when odd
    (and each core hosts each start order equally often). When the cores differ in
    speed by a factor c, even pairs read ratio * c and odd ones ratio / c, so their
    medians' geometric mean is the ratio (a crossover design), and the square root of
    their quotient is c. A plain median of a two-humped set lands between the humps.
    """
    even, odd = statistics.median(ratios[0::2]), statistics.median(ratios[1::2])
    return math.sqrt(even * odd), math.sqrt(even / odd)


def run_once(store: str, overrides: list[str]) -> tuple[float, float, float]:
    """One run on its own (torch's threads as configured)."""
    return result(start(store, overrides))


def same_process(epochs: int, image_every: int, store: str,
                 overrides: list[str]) -> dict[str, float]:
    """Untracked and tracked epochs of the demo's loop, alternating, in this process.

    The loop body is `train.py`'s (kept in step with it by hand): the untracked model runs
    it with plain `range` and no flowillower call, the tracked one with `fw.loop`, `fw.log`,
    the demo's watcher, checkpoints and pictures.
    """
    os.environ["FLOWILLOWER_DIR"] = store
    import torch

    import flowillower as fw
    from flowillower.examples.flow_matching.config import parse_overrides, to_dict
    from flowillower.examples.flow_matching.data import make_dataset
    from flowillower.examples.flow_matching.metrics import chamfer_distance, energy_distance
    from flowillower.examples.flow_matching.model import VelocityNet, integrate, noise
    from flowillower.examples.flow_matching.train import watch
    from flowillower.examples.flow_matching.visualize import pictures

    torch.set_num_threads(1)
    cfg = parse_overrides([f"training.n_epochs={epochs}",
                           f"visualization.image_every={image_every}", *overrides])
    fw.init(project="bench-demo", config=to_dict(cfg))
    data = torch.from_numpy(make_dataset(cfg.data.name, cfg.data.n_samples, cfg.data.noise,
                                         cfg.training.seed))

    def build():
        torch.manual_seed(cfg.training.seed)
        model = VelocityNet(cfg.model.data_dim, cfg.model.time_embed_dim, cfg.model.hidden_dims)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.training.learning_rate)
        return model, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)

    plain, tracked = build(), build()
    fw.log_model(tracked[0], (data[:4], torch.zeros(4, 1)))
    every = cfg.tracking.watch_every
    watcher = watch(tracked[0], every) if every else None
    image_every = cfg.visualization.image_every  # --set may have changed it
    eval_x0 = noise(cfg.evaluation.n_samples, cfg.model.data_dim, cfg.training.seed + 1, "cpu")
    eval_target = data[:cfg.evaluation.n_samples]
    batch_size = cfg.training.batch_size
    n_batches = math.ceil(len(data) / batch_size)

    def epoch(arm, on: bool, index: int) -> float:
        model, optimizer, scheduler = arm
        order = torch.randperm(len(data))
        total = 0.0
        for batch in fw.loop("batch", range(n_batches)) if on else range(n_batches):
            loss = demo_step(model, optimizer, data[order[batch * batch_size:
                                                          (batch + 1) * batch_size]])
            total += fw.log("loss", loss.item()) if on else loss.item()
        if on:
            fw.log("epoch_loss", total / n_batches)
            fw.log("lr", scheduler.get_last_lr()[0])
        scheduler.step()
        if on and watcher is not None:
            watcher.pause()
        generated, frames = integrate(model, eval_x0, cfg.evaluation.n_steps,
                                      cfg.evaluation.sampler, keep=cfg.visualization.times)
        energy = energy_distance(generated, eval_target)
        chamfer = chamfer_distance(generated, eval_target)
        if on:
            fw.log("energy_distance", energy)
            fw.log("chamfer_distance", chamfer)
            if image_every and (index + 1) % image_every == 0 and index + 1 != epochs:
                for name, png in pictures(model, cfg, eval_target, generated, frames,
                                          f"epoch {index + 1}").items():
                    fw.log_image(name, png, caption=f"epoch {index + 1}")
        return total / n_batches

    cpu = {"untracked": 0.0, "tracked": 0.0}
    wall = {"untracked": 0.0, "tracked": 0.0}
    pairs = []
    losses = {}
    rng = {name: torch.get_rng_state() for name in cpu}
    # The other threads' CPU = the process's minus this thread's (threads that have ended,
    # like the checkpoint writer after the block, still count in the process's).
    process0, main0 = time.process_time(), time.thread_time()
    # The checkpoint budget is a share of the outer loop's time, which here holds both
    # arms' epochs: half the demo's share is the demo's budget for the tracked epochs.
    with fw.checkpointing(model=tracked[0], optimizer=tracked[1], scheduler=tracked[2],
                          max_overhead=cfg.tracking.checkpoint_overhead / 2,
                          max_disk=cfg.tracking.checkpoint_disk.strip() or None) as recorder:
        for index in fw.loop("epoch", range(epochs)):
            took = {}
            for name in (("untracked", "tracked") if index % 2 == 0 else
                         ("tracked", "untracked")):
                torch.set_rng_state(rng[name])  # each arm its own stream: same draws
                c0, w0 = time.thread_time(), time.perf_counter()
                losses[name] = epoch(tracked if name == "tracked" else plain,
                                     name == "tracked", index)
                took[name] = time.thread_time() - c0
                rng[name] = torch.get_rng_state()
                cpu[name] += took[name]
                wall[name] += time.perf_counter() - w0
            pairs.append(took["untracked"] / took["tracked"])
    fw.finish()
    checkpoint_bytes = recorder.stats().get("bytes", 0)
    background = (time.process_time() - process0) - (time.thread_time() - main0)
    return {"untracked_cpu": cpu["untracked"], "tracked_cpu": cpu["tracked"],
            "background_cpu": background, "untracked_wall": wall["untracked"],
            "tracked_wall": wall["tracked"], "median_pair": statistics.median(pairs),
            "untracked_loss": losses["untracked"], "tracked_loss": losses["tracked"],
            "checkpoint_bytes": checkpoint_bytes}


def main_same_process(args: argparse.Namespace) -> int:
    """`--same-process`: each repeat in a fresh process (this script, pinned to one core)."""
    table = Table(title=f"demo training loop, {args.epochs} epochs x 40 steps, both arms in "
                        "one process alternating epochs, 1 torch thread, 1 core")
    for col in ("repeat", "untracked cpu s", "tracked cpu s", "+ other threads s",
                "throughput vs untracked (all cpu)", "median of epoch pairs",
                "by wall time", "final loss (both)", "checkpoints MB"):
        table.add_column(col, justify="right")
    shares = []
    t0 = time.perf_counter()
    core = sorted(os.sched_getaffinity(0))[-1]
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, __file__, "--_worker", "--epochs", str(args.epochs),
                 "--image-every", str(args.image_every), "--store", tmp,
                 *(f"--set={o}" for o in args.set)],
                capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
        if out.returncode:
            sys.exit(f"worker failed:\n{out.stdout}\n{out.stderr}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        share = res["untracked_cpu"] / (res["tracked_cpu"] + res["background_cpu"])
        shares.append(share)
        same = "yes" if res["untracked_loss"] == res["tracked_loss"] else "NO"
        print(f"  repeat {r + 1}: tracked throughput {share:.1%} of untracked", flush=True)
        table.add_row(str(r + 1), f"{res['untracked_cpu']:.2f}", f"{res['tracked_cpu']:.2f}",
                      f"{res['background_cpu']:.2f}", f"{share:.1%}",
                      f"{res['median_pair']:.1%}",
                      f"{res['untracked_wall'] / res['tracked_wall']:.1%}",
                      f"{res['tracked_loss']:.4f} ({same})",
                      f"{res['checkpoint_bytes'] / 1e6:.0f}")
    Console(width=160).print(table)
    print(f"tracked throughput = {statistics.median(shares):.1%} of untracked (median of "
          f"{args.repeats} runs, all CPU charged; bar: >= 95%); total "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a demo setting for every arm, e.g. "
                             "--set tracking.checkpoint_overhead=0.0025 (repeatable)")
    parser.add_argument("--image-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each tracked arm at the same time as an untracked run, "
                             "each pinned to its own core with 1 torch thread (swapping "
                             "cores every repeat): the box's drift then hits both alike")
    parser.add_argument("--same-process", action="store_true",
                        help="both arms in one process, alternating epochs (see above)")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same args
    if args._worker:
        print(json.dumps(same_process(args.epochs, args.image_every, args.store, args.set)))
        return 0
    if args.same_process:
        return main_same_process(args)
    if args.side_by_side:
        if len(os.sched_getaffinity(0)) < 2:
            sys.exit("--side-by-side needs 2 cores")
        args.threads = 1

    common = [*args.set, f"training.n_epochs={args.epochs}", f"training.log_interval={args.epochs}",
              f"training.threads={args.threads}"]
    arms: dict[str, list[str]] = {
        "untracked (fw.debug)": ["tracking.enabled=false"],
        "tracked: full": [f"visualization.image_every={args.image_every}",
                          "tracking.watch_every=10"],
    }
    if args.breakdown:
        arms["tracked: no watch, no pictures"] = ["visualization.image_every=0",
                                                  "tracking.watch_every=0"]
        arms["tracked: watch, no pictures"] = ["visualization.image_every=0",
                                               "tracking.watch_every=10"]
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    losses: dict[str, float] = {}
    names = list(arms)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            if args.side_by_side:
                cores = sorted(os.sched_getaffinity(0))[:2]
                for name in names[1:]:
                    a, b = (cores if r % 2 == 0 else cores[::-1])
                    pair = [(names[0], "u", a), (name, "t", b)]
                    if r % 4 >= 2:  # the one started second runs ~1% slower: alternate
                        pair.reverse()
                    procs = {arm: start(os.path.join(tmp, store), common + arms[arm], core)
                             for arm, store, core in pair}
                    for arm, proc in procs.items():
                        w, c, loss = result(proc)
                        wall[arm].append(w)
                        cpu[arm].append(c)
                        losses[arm] = loss
                        print(f"  {arm:32s} {w:7.2f} s wall {c:7.2f} s cpu", flush=True)
                continue
            order = names if r % 2 == 0 else names[::-1]  # ABBA: drift hits both arms alike
            for name in order:
                w, c, loss = run_once(os.path.join(tmp, "store"), common + arms[name])
                wall[name].append(w)
                cpu[name].append(c)
                losses[name] = loss
                print(f"  {name:32s} {w:7.2f} s wall {c:7.2f} s cpu", flush=True)

    base = names[0]
    mode = "side by side, 1 core each, " if args.side_by_side else ""
    table = Table(title=f"demo training loop, {args.epochs} epochs x 40 steps, {mode}torch "
                        f"threads {args.threads or 'default'} ({args.repeats} runs per arm, "
                        f"load {os.getloadavg()[0]:.1f})")
    for col in ("arm", "wall s (min)", "all runs", "epochs/s", "throughput vs untracked: "
                "min / median of pairs", "cpu s (min)", "cpu vs untracked", "final loss"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    summary = {}
    balanced: dict[str, tuple[float, float]] = {}
    for name in names:
        best = min(wall[name])
        # Each repeat's runs ran back to back: their ratio cancels slow drifts of the box.
        if args.side_by_side and name != base:  # untracked runs in arm order per repeat
            k = names.index(name) - 1
            partner = wall[base][k::len(names) - 1]
        else:
            partner = wall[base]
        ratios = [b / t for b, t in zip(partner, wall[name])]
        pairs = statistics.median(ratios)
        if args.side_by_side and name != base and len(ratios) >= 2:
            balanced[name] = core_balanced(ratios)
        summary[name] = (min(wall[base]) / best, pairs, min(cpu[base]) / min(cpu[name]))
        table.add_row(name, f"{best:.2f}", " ".join(f"{t:.1f}" for t in wall[name]),
                      f"{args.epochs / best:.2f}",
                      f"{summary[name][0]:.1%} / {pairs:.1%}", f"{min(cpu[name]):.2f}",
                      f"{summary[name][2]:.1%}", f"{losses[name]:.4f}")
    Console(width=160).print(table)
    for name, (ratio, core_effect) in balanced.items():
        print(f"{name}: core-balanced throughput {ratio:.1%} of untracked (the run on the "
              f"second core was {core_effect:.1%} as fast as on the first, both arms alike)")
    by_min, by_pairs, by_cpu = summary["tracked: full"]
    print(f"tracked throughput = {by_min:.1%} of untracked by best times, {by_pairs:.1%} by "
          f"paired runs, {by_cpu:.1%} by CPU time (bar: >= 95%); total "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
