"""Benchmark flowillower.model: watch overhead, probe time, graph JSON size.

    python benchmarks/bench_model.py [--threads 1] [--batch 64] [--rounds 7] [--steps 20]

1. A 10.5M-parameter MLP (10 x Linear(1024, 1024) + ReLU, Adam, MSE) trained on CPU:
   step time without a watcher (baseline, measured in the same run, in blocks of 10 steps
   interleaved with the watched configurations to cancel drift from other load on the
   machine), with `watch(every=1)` and with `watch(every=10)`; a block includes the flush
   of its last watched step. Targets: <= 8 % and <= 2 %.
2. `capture_graph` on a 100-module model (target <= 2 s).
3. Graph JSON size of a model whose graph has >= 1,000 nodes (target <= 1 MB), both
   compact and as `Run.write_json` stores it (indent=1).

glibc's malloc returns Adam's multi-MB temporaries to the OS and page-faults them back in
on a whim, which makes the optimizer step vary by 2x between identical steps and drowns
the effect being measured. Unless `--system-malloc` is given, the benchmark re-executes
itself with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ raised (what jemalloc or
tcmalloc, recommended for CPU training, do anyway); both configurations get the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from flowillower.model import Watcher, capture_graph, unwatch  # noqa: E402


def mlp(width: int = 1024, depth: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_block(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, n: int, start: int, watcher: Watcher | None
                ) -> tuple[float, float, int]:
    """(wall s, CPU s, minor page faults) for `n` training steps plus the flush of the last
    watched one.

    CPU time (all threads of this process) doesn't count time the process sat preempted
    by other load on a shared machine; wall time does.
    """
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        if watcher is not None:
            watcher.on_step(start + i)  # what fw.loop does through run.on_step
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if watcher is not None:
        watcher.flush()  # emits the last watched step: part of the cost
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    if watcher is not None:
        watcher.pause()  # no hooks left for the next block (e.g. the baseline)
    return wall, cpu, faults


def bench_watch(batch: int, rounds: int, steps: int) -> list[tuple[str, float, str]]:
    torch.manual_seed(0)
    model = mlp()
    n_params = sum(p.numel() for p in model.parameters())
    n_modules = sum(1 for _ in model.modules())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1024)
    y = torch.randn(batch, 1024)
    configs = {"baseline": None, "every=1": 1, "every=10": 10}
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    faults: dict[str, list[int]] = {k: [] for k in configs}
    emitted = {"n": 0, "keys": 0}

    def sink(stats: dict, step: int) -> None:
        emitted["n"] += 1
        emitted["keys"] = max(emitted["keys"], len(stats))

    # One watcher for the whole run, as in training; its `every` changes per block.
    watcher = Watcher(model, every=1, sink=sink)
    train_block(model, opt, x, y, 5, 0, None)  # warm-up (allocator, Adam state)
    train_block(model, opt, x, y, 5, 0, watcher)
    step = 0
    # Blocks of `steps` steps, configurations interleaved in a shuffled order each round:
    # slow drift from other load on the machine hits all configurations alike.
    for _ in range(rounds):
        order = list(configs)
        random.shuffle(order)
        for name in order:
            every = configs[name]
            if every:
                watcher.every = every
            w, c, f = train_block(model, opt, x, y, steps, step, watcher if every else None)
            wall[name].append(w)
            cpu[name].append(c)
            faults[name].append(f)
            step += steps
    unwatch(model)
    base = statistics.median(wall["baseline"]) / steps
    rows = [(f"MLP {n_params / 1e6:.1f}M params, {n_modules} modules, batch {batch}: "
             "baseline step (wall)", base * 1e3, "ms")]
    for name in ("every=1", "every=10"):
        med = statistics.median(wall[name]) / steps
        rows.append((f"  watch({name}) step (wall)", med * 1e3, "ms"))
        for label, data in (("wall", wall), ("CPU", cpu)):
            paired = statistics.median(b / a for a, b in zip(data["baseline"], data[name]))
            ratio = statistics.median(data[name]) / statistics.median(data["baseline"])
            rows.append((f"  watch({name}) overhead, {label} time: median of blocks",
                         (ratio - 1) * 100, "%"))
            rows.append((f"  watch({name}) overhead, {label} time: median of paired ratios",
                         (paired - 1) * 100, "%"))
    rows.append(("  series per watched step", float(emitted["keys"]), ""))
    for name in configs:
        rows.append((f"  minor page faults per step, {name} (median)",
                     statistics.median(faults[name]) / steps, ""))
    return rows


class Block(nn.Module):
    """A pre-norm transformer block: 9 modules, residual adds, attention arithmetic."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.out = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        att = (q @ k.transpose(-2, -1)) / d ** 0.5
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        x = x + self.drop(self.proj(att.softmax(-1) @ v))
        return x + self.drop(self.out(self.act(self.fc(self.ln2(x)))))


class Tower(nn.Module):
    def __init__(self, n_blocks: int, d: int = 32, vocab: int = 100) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def bench_graph() -> list[tuple[str, float, str]]:
    rows = []
    idx = torch.randint(0, 100, (2, 16))
    model = Tower(11)  # 11 blocks x 9 + 5 = 104 modules
    n_modules = sum(1 for _ in model.modules())
    capture_graph(model, idx)  # warm-up: first-call import / dispatch caches
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        graph = capture_graph(model, idx)
        times.append(time.perf_counter() - t0)
    rows.append((f"probe, {n_modules}-module model ({len(graph['nodes'])} graph nodes), "
                 "median of 5", statistics.median(times), "s"))
    rows.append(("  slowest of 5", max(times), "s"))
    blocks = 30
    while True:  # the smallest tower whose graph has >= 1,000 nodes
        big = Tower(blocks)
        graph = capture_graph(big, idx)
        if len(graph["nodes"]) >= 1000:
            break
        blocks += 1
    n_nodes = len(graph["nodes"])
    compact = len(json.dumps(graph, separators=(",", ":")))
    indented = len(json.dumps(graph, indent=1))
    n_mod = sum(1 for _ in big.modules())
    rows.append((f"graph JSON, {n_nodes} nodes / {n_mod} modules, compact", compact / 1e6, "MB"))
    rows.append(("  same, indent=1 (as Run.write_json stores it)", indented / 1e6, "MB"))
    rows.append(("  bytes per node (compact)", compact / n_nodes, "B"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="steps per block (a multiple "
                    "of 10, so every=10 gets exactly its share of watched steps)")
    ap.add_argument("--skip-watch", action="store_true")
    ap.add_argument("--system-malloc", action="store_true",
                    help="keep glibc's default malloc tuning (noisier optimizer steps)")
    args = ap.parse_args()
    if not args.system_malloc and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    random.seed(0)
    tuned = "MALLOC_TRIM_THRESHOLD_" in os.environ
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, "
          f"malloc: {'thresholds raised' if tuned else 'glibc defaults'}")
    rows = []
    if not args.skip_watch:
        rows += bench_watch(args.batch, args.rounds, args.steps)
    rows += bench_graph()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for label, value, unit in rows:
        print(f"{label:<{width}}  {value:>10.3f}  {unit}")


if __name__ == "__main__":
    main()
