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
cost stays in its own time.

Run: python benchmarks/bench_demo.py [--epochs 300] [--repeats 3] [--breakdown] [--side-by-side]
"""

from __future__ import annotations

import argparse
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


def run_once(store: str, overrides: list[str]) -> tuple[float, float, float]:
    """One run on its own (torch's threads as configured)."""
    return result(start(store, overrides))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--image-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each tracked arm at the same time as an untracked run, "
                             "each pinned to its own core with 1 torch thread (swapping "
                             "cores every repeat): the box's drift then hits both alike")
    args = parser.parse_args()
    if args.side_by_side:
        if len(os.sched_getaffinity(0)) < 2:
            sys.exit("--side-by-side needs 2 cores")
        args.threads = 1

    common = [f"training.n_epochs={args.epochs}", f"training.log_interval={args.epochs}",
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
    for name in names:
        best = min(wall[name])
        # Each repeat's runs ran back to back: their ratio cancels slow drifts of the box.
        if args.side_by_side and name != base:  # untracked runs in arm order per repeat
            k = names.index(name) - 1
            partner = wall[base][k::len(names) - 1]
        else:
            partner = wall[base]
        pairs = statistics.median(b / t for b, t in zip(partner, wall[name]))
        summary[name] = (min(wall[base]) / best, pairs, min(cpu[base]) / min(cpu[name]))
        table.add_row(name, f"{best:.2f}", " ".join(f"{t:.1f}" for t in wall[name]),
                      f"{args.epochs / best:.2f}",
                      f"{summary[name][0]:.1%} / {pairs:.1%}", f"{min(cpu[name]):.2f}",
                      f"{summary[name][2]:.1%}", f"{losses[name]:.4f}")
    Console(width=160).print(table)
    by_min, by_pairs, by_cpu = summary["tracked: full"]
    print(f"tracked throughput = {by_min:.1%} of untracked by best times, {by_pairs:.1%} by "
          f"paired runs, {by_cpu:.1%} by CPU time (bar: >= 95%); total "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
