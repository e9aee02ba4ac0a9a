"""Hindsight logging: record overhead and replay speed, against the naive baselines.

Measured in one go on a CPU training script (an MLP, one torch thread, 20 epochs):

1. record overhead: the same loop with and without `fw.checkpointing` (runs alternate,
   median of each; the recorder's own training-thread time is shown too);
2. replaying an outer-loop statement over the 20-epoch run vs re-running the run;
3. replaying an inner-loop statement with 1 and with 2 workers;
4. the planner's estimate against each measured replay time.

With `--demo` it measures README's walkthrough instead, in a scratch git copy of this
repository's HEAD, all on the same two runs: `flowillower demo quickstart --no-ui` (2 runs
side by side; the naive replay baseline, re-running both, is this training time), then a
per-epoch `weight_norm` line replayed with `--workers 2`, then the inner-loop `grad_norm`
line after `loss.backward()` replayed with `--workers 1`, `--workers 2` and (Ray installed,
no `--no-ray`) `--executor ray=...` on a private 2-CPU Ray head on 127.0.0.1.

Run: python benchmarks/bench_hindsight.py [--epochs 20] [--steps 160] [--repeats 2]
     python benchmarks/bench_hindsight.py --demo [--demo-epochs 120] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SCRIPT = '''
import contextlib, json, resource, time
import torch
import flowillower as fw

torch.set_num_threads(1)
torch.manual_seed(0)
epochs = fw.arg("epochs", 20)
steps = fw.arg("steps", 160)
width = fw.arg("width", 512)
batch = fw.arg("batch", 256)
use_ckpt = fw.arg("ckpt", 1)
net = torch.nn.Sequential(
    torch.nn.Linear(128, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
    torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
X = torch.randn(4096, 128)
Y = torch.randint(0, 10, (4096,))
ctx = (fw.checkpointing(model=net, optimizer=opt, scheduler=sched) if use_ckpt
       else contextlib.nullcontext())
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads, the writer included
    return usage.ru_utime + usage.ru_stime
t0, c0 = time.perf_counter(), cpu()
with ctx as recorder:
    for epoch in fw.loop("epoch", range(epochs)):
        net.train()
        perm = torch.randperm(4096)
        for step in fw.loop("step", range(steps)):
            start = (step * batch) % 4096
            idx = perm[start:start + batch]
            loss = torch.nn.functional.cross_entropy(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            # INNER
            fw.log("loss", loss.item())
        # OUTER
        sched.step()
loop_s, cpu_s = time.perf_counter() - t0, cpu() - c0
print(json.dumps({"loop_s": loop_s, "cpu_s": cpu_s,
                  "stats": recorder.stats() if recorder else None}))
'''

OUTER_STATEMENT = 'fw.log("wnorm", sum(p.norm().item() for p in net.parameters()))'
INNER_STATEMENT = 'fw.log("gnorm", net[0].weight.grad.norm().item())'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWILLOWER_")}
    src = Path(__file__).resolve().parent.parent / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def train(root: Path, *kwargs: str) -> tuple[float, float, float, dict]:
    """(process wall time, loop wall time, loop CPU time, recorder stats) of one run."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", "--kwargs", *kwargs], cwd=root,
                         env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(out.stderr)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, info["loop_s"], info["cpu_s"], info["stats"] or {}


def timed_replay(root: Path, names: str, workers: int) -> tuple[float, float, str, int]:
    """(seconds, planner estimate, strategy, worker processes) of one replay, run in a
    fresh process."""
    code = textwrap.dedent(f"""
        import json, time, flowillower as fw
        t0 = time.perf_counter()
        r = fw.replay({names!r}, workers={workers}, yes=True, echo=lambda s: None)
        print(json.dumps({{"s": time.perf_counter() - t0, "est": r.estimate, "ok": r.ok,
                          "strategy": r.runs[0].strategy if r.runs else "",
                          "tasks": r.runs[0].tasks if r.runs else 0,
                          "report": str(r)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=_env(),
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if not info["ok"]:
        raise SystemExit(info["report"])
    return info["s"], info["est"], info["strategy"], info["tasks"]


GRAD_NORM = ('                fw.log("grad_norm", torch.nn.utils.get_total_norm(\n'
             '                    [p.grad for p in model.parameters()]).item())\n')
# README's per-epoch statement: after the batch loop, once per epoch.
WEIGHT_NORM = ('            fw.log("weight_norm", torch.nn.utils.get_total_norm(\n'
               '                [p.detach() for p in model.parameters()]).item())\n')
INNER_ANCHOR = "                loss.backward()\n"
OUTER_ANCHOR = "            fw.log(\"lr\", scheduler.get_last_lr()[0])\n"


def _timed_cli(repo: Path, *args: str, env_extra: dict[str, str] | None = None
               ) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, output) of one flowillower command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWILLOWER_")}
    env["PYTHONPATH"] = str(repo / "src")  # the scratch copy's package, not the checkout's
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-m", "flowillower", *args], cwd=repo, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(out.stdout + out.stderr)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, out.stdout + out.stderr


# On 127.0.0.1, without token auth (else ray.init() leaves a token in ~/.ray for all).
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
# A private Ray head, alive while our pipe is open (`ray stop` would end every Ray here).
RAY_HEAD = ("import sys, ray; ray.init(num_cpus=2, include_dashboard=False, "
            "_node_ip_address='127.0.0.1', log_to_driver=False); "
            "print(ray.get_runtime_context().gcs_address, flush=True); "
            "sys.stdin.read(); ray.shutdown()")


def _ray_head(repo: Path) -> tuple[subprocess.Popen, str] | None:
    """(process, address) of a private 2-CPU Ray head running `repo`'s package, or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return None
    env = {**os.environ, **RAY_LOOPBACK, "PYTHONPATH": str(repo / "src")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", RAY_HEAD], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    address = (proc.stdout.readline() if proc.stdout else "").strip()
    if not address:
        proc.kill()
        proc.wait()
        return None
    return proc, address


def _stop_head(head: tuple[subprocess.Popen, str] | None) -> None:
    proc = head[0] if head else None
    if proc is None:
        return
    try:
        proc.communicate("", timeout=120)  # closing stdin: ray.shutdown, then exit
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _checkpointed(repo: Path) -> str:
    """Per run: epochs whose inner-loop end was captured (a per-epoch replay skips their
    batches), entry points (captured starts) and bytes written."""
    out = []
    for manifest in sorted((repo / ".flowillower/runs").glob("*/checkpoints/manifest.jsonl")):
        lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
        iters = [x for x in lines if x.get("type") == "iter"]
        ckpts = [x for x in lines if x.get("type") == "ckpt"]
        out.append(f"{sum(1 for x in iters if x.get('ckpt'))}/{len(iters)} epochs skippable, "
                   f"{sum(1 for x in ckpts if x['kind'] == 'start')} entry points, "
                   f"{sum(x.get('bytes', 0) for x in ckpts) / 1e6:.0f} MB")
    return "; ".join(out)


def demo(epochs: int, with_ray: bool = True, overrides: list[str] | None = None,
         epoch_only: bool = False) -> int:
    """README's walkthrough, timed on the same two runs: training them (the naive replay
    baseline: re-running), then replaying a per-epoch statement and the inner-loop
    `grad_norm` with 1 and 2 local workers, and with 2 Ray workers when Ray is installed."""
    here = Path(__file__).resolve().parent.parent
    base = Path(tempfile.mkdtemp(prefix="fw-bench-demo-replay-"))
    head = None
    try:
        repo = base / "repo"
        repo.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=here, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
        _git(repo, "init", "-q")
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit",
             "-qm", "scratch copy")
        load = os.getloadavg()[0]
        train_s, train_cpu, trained = _timed_cli(repo, "demo", "quickstart", "--no-ui",
                                                 "--epochs", str(epochs), *(overrides or []))
        script = repo / "src/flowillower/examples/flow_matching/train.py"
        original = script.read_text()
        print(f"README's demo walkthrough, 2 runs x {epochs} epochs, {os.cpu_count()} CPUs, "
              f"load {load:.1f} before (python benchmarks/bench_hindsight.py --demo"
              f"{''.join(' --demo-set ' + o for o in overrides or [])})")
        print(f"  {'flowillower demo quickstart --no-ui (naive baseline: re-running)':<64}"
              f"{train_s:6.1f} s wall  {train_cpu:6.1f} s CPU", flush=True)
        print(f"      checkpoints: {_checkpointed(repo)}", flush=True)

        def replay(label: str, name: str, *extra: str, env: dict | None = None) -> None:
            try:
                wall, cpu, report = _timed_cli(repo, "replay", name, *extra, "-y",
                                               env_extra=env)
            except SystemExit as exc:  # shown, and the other rows still measured
                print(f"  flowillower {label}: failed\n{str(exc)[-2000:]}", flush=True)
                return
            # Ray's workers are the head's children, not ours: their CPU time is not seen.
            shown = "   n/a" if env else f"{cpu:6.1f}"
            print(f"  {'flowillower ' + label:<64}{wall:6.1f} s wall  {shown} s CPU  "
                  f"({train_s / wall:.1f}x re-training's speed)", flush=True)
            for line in report.splitlines():
                if f"replayed  {name}" in line:
                    print(f"      {line.strip()}", flush=True)
            drop_replays(repo)  # the next replay computes the same values again

        script.write_text(original.replace(OUTER_ANCHOR, OUTER_ANCHOR + WEIGHT_NORM))
        replay("replay weight_norm --workers 2 -y    (per epoch)", "weight_norm",
               "--workers", "2")
        script.write_text(original.replace(INNER_ANCHOR, INNER_ANCHOR + GRAD_NORM))
        if epoch_only:
            print(f"  load {os.getloadavg()[0]:.1f} after")
            return 0
        replay("replay grad_norm --workers 1 -y      (inner loop)", "grad_norm",
               "--workers", "1")
        replay("replay grad_norm --workers 2 -y      (inner loop)", "grad_norm",
               "--workers", "2")
        head = _ray_head(repo) if with_ray else None
        if head is not None:
            replay("replay grad_norm --executor ray=127.0.0.1:PORT --workers 2 -y",
                   "grad_norm", "--executor", f"ray={head[1]}", "--workers", "2",
                   env=RAY_LOOPBACK)
        if head is None and with_ray:
            print("  (no Ray row: Ray is not installed or its head did not start; pip "
                  "install 'flowillower[ray]')")
        print(f"  load {os.getloadavg()[0]:.1f} after")
        print("  quickstart said: " + " ".join(line.strip() for line in trained.splitlines()
                                               if "trained in" in line))
        return 0
    finally:
        _stop_head(head)
        shutil.rmtree(base, ignore_errors=True)


def drop_replays(root: Path) -> None:
    for replays in (root / ".flowillower" / "runs").glob("*/replays"):
        shutil.rmtree(replays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=160, help="inner iterations per epoch")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--replay-only", action="store_true",
                        help="one recorded run, no overhead comparison (quicker)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="record runs per variant (order A B B A ...: drift cancels)")
    parser.add_argument("--demo", action="store_true",
                        help="time README's walkthrough: quickstart, then replay grad_norm")
    parser.add_argument("--demo-epochs", type=int, default=120)
    parser.add_argument("--no-ray", action="store_true", help="--demo without the Ray row")
    parser.add_argument("--demo-set", action="append", default=[], metavar="KEY=VALUE",
                        help="--demo: a setting for both runs (demo quickstart's overrides)")
    parser.add_argument("--demo-epoch-only", action="store_true",
                        help="--demo: training and the per-epoch replay only")
    args, _unknown = parser.parse_known_args()
    if args.demo:
        return demo(args.demo_epochs, not args.no_ray, args.demo_set, args.demo_epoch_only)
    base = Path(tempfile.mkdtemp(prefix="fw-bench-hindsight-"))
    try:
        root = base / "proj"
        root.mkdir()
        _git(root, "init", "-q")
        (root / "train.py").write_text(SCRIPT)
        kw = [f"epochs={args.epochs}", f"steps={args.steps}", f"width={args.width}"]
        plain, ckpt, plain_cpu, ckpt_cpu, walls, stats = [], [], [], [], [], {}
        load_before = os.getloadavg()[0]
        order = [("ckpt=0", "ckpt=1") if k % 2 == 0 else ("ckpt=1", "ckpt=0")
                 for k in range(args.repeats)]  # A B, B A, ...: a linear drift hits both alike
        if args.replay_only:
            order = [("ckpt=1",)]
        for variants in order:
            for variant in variants:
                wall, loop_s, cpu_s, run_stats = train(root, *kw, variant)
                if variant == "ckpt=0":
                    plain.append(loop_s)
                    plain_cpu.append(cpu_s)
                else:
                    ckpt.append(loop_s)
                    ckpt_cpu.append(cpu_s)
                    walls.append(wall)
                    stats = run_stats
        load_after = os.getloadavg()[0]
        # Keep only the last checkpointed run to replay; the plain runs would be replayed
        # too (re-executed from scratch) and blur the figures.
        runs = sorted((root / ".flowillower" / "runs").iterdir())
        keep = max((r for r in runs if (r / "checkpoints").is_dir()), key=lambda r: r.name)
        for run in runs:
            if run != keep:
                shutil.rmtree(run)
        # The fastest of each variant: the run least disturbed by other load.
        t_ckpt, c_ckpt = min(ckpt), min(ckpt_cpu)
        t_plain, c_plain = (min(plain), min(plain_cpu)) if plain else (t_ckpt, c_ckpt)
        rerun = statistics.median(walls)

        new = SCRIPT.replace("        # OUTER", "        " + OUTER_STATEMENT).replace(
            "            # INNER", "            " + INNER_STATEMENT)
        (root / "train.py").write_text(new)
        outer_s, outer_est, outer_strategy, _ = timed_replay(root, "wnorm", 1)
        drop_replays(root)
        outer2_s, outer2_est, _, outer2_tasks = timed_replay(root, "wnorm", 2)
        drop_replays(root)
        inner1_s, inner1_est, inner_strategy, _ = timed_replay(root, "gnorm", 1)
        drop_replays(root)
        inner2_s, inner2_est, _, inner2_tasks = timed_replay(root, "gnorm", 2)

        overhead = (t_ckpt - t_plain) / t_plain
        cpu_overhead = (c_ckpt - c_plain) / c_plain
        self_overhead = stats.get("train_thread_s", 0.0) / t_ckpt
        rows = [
            ("training loop, no checkpointing (baseline)", f"{t_plain:.1f} s", ""),
            ("training loop, fw.checkpointing", f"{t_ckpt:.1f} s",
             f"{overhead:+.2%} wall (bound 2%); {cpu_overhead:+.2%} CPU time "
             f"({c_plain:.1f} -> {c_ckpt:.1f} s)"),
            ("  of which copying on the training thread", f"{stats.get('train_thread_s', 0):.3f} s",
             f"{self_overhead:.2%}; {len(stats.get('checkpointed_iterations', []))}/"
             f"{args.epochs} epochs checkpointed, {stats.get('bytes', 0) / 1e6:.0f} MB"),
            ("re-running the run (naive replay baseline)", f"{rerun:.1f} s", ""),
            ("replay outer-loop statement, 1 worker", f"{outer_s:.1f} s",
             f"{rerun / outer_s:.1f}x faster than re-running; estimate {outer_est:.1f} s "
             f"({outer_est / outer_s - 1:+.0%})"),
            ("replay outer-loop statement, 2 workers", f"{outer2_s:.1f} s",
             f"{outer2_tasks} process(es): " + ("not split, start-up dominates; " if
                                               outer2_tasks == 1 else "")
             + f"estimate {outer2_est:.1f} s ({outer2_est / outer2_s - 1:+.0%})"),
            ("replay inner-loop statement, 1 worker", f"{inner1_s:.1f} s",
             f"estimate {inner1_est:.1f} s ({inner1_est / inner1_s - 1:+.0%})"),
            ("replay inner-loop statement, 2 workers", f"{inner2_s:.1f} s",
             f"{inner1_s / inner2_s:.2f}x vs 1 worker ({inner2_tasks} processes); "
             f"estimate {inner2_est:.1f} s "
             f"({inner2_est / inner2_s - 1:+.0%})"),
        ]
        print(f"hindsight benchmark: {args.epochs} epochs x {args.steps} steps, MLP width "
              f"{args.width}, 1 torch thread, {os.cpu_count()} CPUs")
        print(f"outer strategy: {outer_strategy}\ninner strategy: {inner_strategy}")
        print(f"load average {load_before:.2f} before, {load_after:.2f} after the record runs "
              f"(min of {args.repeats} runs per variant; all loop times: "
              f"{', '.join(f'{t:.1f}' for t in plain)} s without, "
              f"{', '.join(f'{t:.1f}' for t in ckpt)} s with)")
        width = max(len(r[0]) for r in rows)
        for label, value, note in rows:
            print(f"  {label:<{width}}  {value:>9}  {note}")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
