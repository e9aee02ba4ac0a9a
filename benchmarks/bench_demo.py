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

Run: python benchmarks/bench_demo.py [--epochs 300] [--repeats 2] [--breakdown]
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


def run_once(store: str, overrides: list[str]) -> tuple[float, float, float]:
    """(loop wall seconds, loop CPU seconds of all threads, final epoch loss) of one run."""
    env = dict(os.environ, FLOWILLOWER_DIR=store)
    proc = subprocess.run([sys.executable, "-m", SCRIPT, *overrides], env=env,
                          capture_output=True, text=True, check=False)
    matches = LINE.findall(proc.stdout)
    if proc.returncode or not matches:
        sys.exit(f"training failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    _, _, loss, seconds, cpu = matches[-1]
    return float(seconds), float(cpu), float(loss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--image-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()

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
            order = names if r % 2 == 0 else names[::-1]  # ABBA: drift hits both arms alike
            for name in order:
                w, c, loss = run_once(os.path.join(tmp, "store"), common + arms[name])
                wall[name].append(w)
                cpu[name].append(c)
                losses[name] = loss
                print(f"  {name:32s} {w:7.2f} s wall {c:7.2f} s cpu", flush=True)

    base = names[0]
    table = Table(title=f"demo training loop, {args.epochs} epochs x 40 steps, torch threads "
                        f"{args.threads or 'default'} ({args.repeats} runs per arm, "
                        f"load {os.getloadavg()[0]:.1f})")
    for col in ("arm", "wall s (min)", "all runs", "epochs/s", "throughput vs untracked: "
                "min / median of pairs", "cpu s (min)", "cpu vs untracked", "final loss"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    summary = {}
    for name in names:
        best = min(wall[name])
        # Each repeat's runs ran back to back: their ratio cancels slow drifts of the box.
        pairs = statistics.median(b / t for b, t in zip(wall[base], wall[name]))
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
