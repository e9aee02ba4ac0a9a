"""Benchmark flowillower.model: watch overhead, probe time, graph JSON size.

    python benchmarks/bench_model.py [--threads 1] [--batch 64] [--rounds 7] [--steps 20]
        [--hooks] [--skip-watch] [--src PATH]

1. A 10.5M-parameter MLP (10 x Linear(1024, 1024) + ReLU, Adam, MSE) trained on CPU:
   step time without a watcher (baseline, measured in the same run, in blocks of 10 steps
   interleaved with the watched configurations to cancel drift from other load on the
   machine), with `watch(every=1)` and with `watch(every=10)`; a block includes the flush
   of its last watched step. Targets: <= 8 % and <= 2 %.
2. `capture_graph` on a 100-module model (target <= 2 s).
3. Graph JSON size of a model whose graph has >= 1,000 nodes (target <= 1 MB), both
   compact and as `Run.write_json` stores it (indent=1).
4. `--hooks`: hook designs on the demo's velocity network with the demo's watched modules
   (benchmarks/bench_demo_steps.py measures the whole loop), per 10-step watch cycle:
   registering and removing the hooks through torch's public handles on the watched step
   (what the Watcher does), hooks registered once that return at once on unwatched steps
   (a flag: every unwatched training step pays for the hooked modules' slow call path),
   and, as the reference, the previous design that put the hooks back into the modules'
   private hook dicts by handle id. Only the hook mechanics: no statistics are taken.

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

# `--src PATH` measures another copy of the package (e.g. an older one from `git archive`).
_SRC = (sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv[:-1]
        else str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, _SRC)

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


def bench_hooks(rounds: int) -> list[tuple[str, float, str]]:
    """µs per 10-step watch cycle of three hook designs on the demo model (see 4.)."""
    from flowillower.examples.flow_matching.model import VelocityNet, flow_matching_loss

    torch.manual_seed(0)
    model = VelocityNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x1 = torch.randn(256, 2)
    last = f"net.{len(model.net) - 1}"
    targets = [m for p, m in model.named_modules() if isinstance(m, nn.SiLU) or p == last]
    targets.append(model)  # the end-of-pass hook on the root
    flag = {"on": False}

    def hook(module: nn.Module, args: object, output: object) -> None:
        if not flag["on"]:  # the flag design's unwatched step: return at once
            return

    def public() -> None:  # the Watcher: register on the watched step, remove after
        handles = [m.register_forward_hook(hook) for m in targets]
        for h in handles:
            h.remove()

    handles = [m.register_forward_hook(hook) for m in targets]
    parked = [(h.hooks_dict_ref(), h.id) for h in handles]  # the previous design's
    parked = [(hooks, i, hooks[i]) for hooks, i in parked]
    for h in handles:
        h.remove()

    def private() -> None:  # the previous design: back into the private dicts by id
        for hooks, i, fn in parked:
            hooks[i] = fn
        for hooks, i, _ in parked:
            hooks.pop(i, None)

    def per_call(fn: object, n: int = 2000) -> float:
        t0 = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - t0) / n * 1e6

    def train_step() -> None:
        loss = flow_matching_loss(model, x1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # Idle hooks cost per forward pass whatever the batch: timed on a one-sample forward
    # (no_grad) so that the difference is not lost in the noise of a 5 ms training step.
    x, t = torch.randn(1, 2), torch.rand(1, 1)

    def forward() -> None:
        with torch.no_grad():
            model(x, t)

    bare, hooked, pub, priv, steps = [], [], [], [], []
    for _ in range(5):
        train_step()
    for _ in range(rounds):  # interleaved: drift from other load hits all alike
        pub.append(per_call(public))
        priv.append(per_call(private))
        steps.append(per_call(train_step, 50))
        bare.append(per_call(forward))
        idle = [m.register_forward_hook(hook) for m in targets]
        hooked.append(per_call(forward))
        for h in idle:
            h.remove()
    med = statistics.median
    step_ms = med(steps) / 1e3
    idle_us = med(b - a for a, b in zip(bare, hooked))
    return [
        (f"hooks, demo model ({len(targets)} hooks): training step", step_ms, "ms"),
        ("  per 10-step cycle: public handles, register + remove on the watched step (now)",
         med(pub), "µs"),
        ("  per 10-step cycle: previous, re-insert into private hook dicts by id", med(priv),
         "µs"),
        ("  per 10-step cycle: flag, hooks always on, 9 unwatched steps x idle hooks",
         9 * idle_us, "µs"),
        ("    idle hooks, per unwatched forward pass (paired, 1-sample forward)", idle_us,
         "µs"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="steps per block (a multiple "
                    "of 10, so every=10 gets exactly its share of watched steps)")
    ap.add_argument("--skip-watch", action="store_true")
    ap.add_argument("--hooks", action="store_true", help="also time the hook designs (4.)")
    ap.add_argument("--skip-graph", action="store_true")
    ap.add_argument("--src", default=None, help="import flowillower from this src/ folder")
    ap.add_argument("--system-malloc", action="store_true",
                    help="keep glibc's default malloc tuning (noisier optimizer steps)")
    args, _ = ap.parse_known_args()
    if not args.system_malloc and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    random.seed(0)
    tuned = "MALLOC_TRIM_THRESHOLD_" in os.environ
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, "
          f"malloc: {'thresholds raised' if tuned else 'glibc defaults'}; package from {_SRC}")
    rows = []
    if not args.skip_watch:
        rows += bench_watch(args.batch, args.rounds, args.steps)
    if args.hooks:
        rows += bench_hooks(args.rounds)
    if not args.skip_graph:
        rows += bench_graph()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for label, value, unit in rows:
        print(f"{label:<{width}}  {value:>10.3f}  {unit}")


if __name__ == "__main__":
    main()
