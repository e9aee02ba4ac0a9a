"""Replaying a Lightning run from `FlowillowerCheckpoint`'s captures against re-running it.

One real Lightning run (an MLP on random tensors, CPU, Adam, `--epochs` x `--batches`
batches, a small validation set) is recorded with `FlowillowerCheckpoint`, and once more
without it (the recording overhead). The script then gets two identical statements in
`on_train_epoch_end`; the same run is replayed twice:

* `w_norm` with its captures: the training batches of every epoch are skipped;
* `w_norm_full` with the captures moved away: the baseline, what a replay did before
  (the recorded script re-executed from the start, every epoch trained).

Both replays must give bit-identical values. With `--workers N` (N > 1), a statement in
`training_step` (which makes every epoch train again) is replayed twice more on the same
run: by one worker (the baseline) and by N workers sharing the epochs (each restoring the
capture of the epoch before its share); both must give bit-identical values. Prints wall times (each replay includes
starting Python, torch and Lightning in the worker), the speed-up, the load average, and
what each replay's schedule said beforehand: its strategy and estimate.
Run: python benchmarks/bench_lightning_replay.py [--epochs 6] [--batches 64] [--width 256]
     [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SCRIPT = '''
import lightning.pytorch as pl
import torch

import flowillower as fw
from flowillower.integrations.lightning import FlowillowerCheckpoint, FlowillowerLogger

EPOCHS, BATCHES, WIDTH = {epochs}, {batches}, {width}


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH),
            torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(),
            torch.nn.Linear(WIDTH, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True)
        self.steps_seen = getattr(self, "steps_seen", 0) + 1
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def on_train_epoch_end(self):
        self.epochs_seen = getattr(self, "epochs_seen", 0) + 1

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


pl.seed_everything(0)
train = torch.utils.data.TensorDataset(torch.randn(BATCHES * 32, 32), torch.randn(BATCHES * 32, 1))
val = torch.utils.data.TensorDataset(torch.randn(64, 32), torch.randn(64, 1))
trainer = pl.Trainer(max_epochs=EPOCHS, logger=FlowillowerLogger(project="bench"),
                     callbacks={callbacks}, log_every_n_steps=10,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu")
trainer.fit(Net(), torch.utils.data.DataLoader(train, batch_size=32, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=64))
'''
OLD = ('    def on_train_epoch_end(self):\n'
       '        self.epochs_seen = getattr(self, "epochs_seen", 0) + 1\n')
NEW = ('    def on_train_epoch_end(self):\n'
       '        fw.log("w_norm", float(self.net[2].weight.detach().norm()))\n'
       '        self.epochs_seen = getattr(self, "epochs_seen", 0) + 1\n'
       '        fw.log("w_norm_full", float(self.net[2].weight.detach().norm()))\n')
STEP_OLD = '        self.steps_seen = getattr(self, "steps_seen", 0) + 1\n'
STEP_NEW = ('        fw.log("g_one", float(loss.detach()))\n' + STEP_OLD
            + '        fw.log("g_split", float(loss.detach()))\n')


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


CPU: dict[float, float] = {}  # wall seconds of a command -> its CPU seconds


def _timed(argv: list[str], root: Path, env: dict[str, str]) -> float:
    """Wall seconds of a command; its CPU seconds (children's user + system) go to CPU,
    its last output line to SAID."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[wall] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    SAID[wall] = (proc.stdout.strip().splitlines() or [""])[-1]
    return wall


SAID: dict[float, str] = {}


def _replay(name: str, root: Path, env: dict[str, str], workers: int = 1
            ) -> tuple[float, float, str]:
    """(wall seconds, the schedule's estimate, its strategy) of replaying `name`; the
    number of worker tasks goes to TASKS."""
    code = ("import json\nimport flowillower as fw\n"
            f"r = fw.replay({name!r}, workers={workers}, yes=True, echo=lambda *a: None)\n"
            "assert r.ok, str(r)\n"
            "print(json.dumps([r.runs[0].estimate, r.runs[0].strategy, r.runs[0].tasks]))\n")
    wall = _timed([sys.executable, "-c", code], root, env)
    estimate, strategy, TASKS[wall] = json.loads(SAID[wall])
    return wall, float(estimate), str(strategy)


TASKS: dict[float, int] = {}


def _values(run_dir: Path, name: str) -> list[float]:
    from flowillower.store.reader import RunReader

    return RunReader(run_dir).load([name]).series[name].values.tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0,
                        help="also replay a training_step statement by 1 and N workers")
    args, _unknown = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        root.mkdir()
        _git(root, "init", "-q")
        _git(root, "config", "user.email", "b@example.com")
        _git(root, "config", "user.name", "b")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        env.pop("FLOWILLOWER_DIR", None)
        body = {"epochs": args.epochs, "batches": args.batches, "width": args.width}
        plain = textwrap.dedent(SCRIPT.format(**body, callbacks="[]")).lstrip()
        script = textwrap.dedent(SCRIPT.format(**body, callbacks="[FlowillowerCheckpoint()]")
                                 ).lstrip()
        (root / "plain.py").write_text(plain)
        (root / "train.py").write_text(script)
        _git(root, "add", ".")
        _git(root, "commit", "-q", "-m", "scripts")
        # Its own store: the replays below must see only the checkpointed run.
        t_plain = _timed([sys.executable, "plain.py"], root,
                         {**env, "FLOWILLOWER_DIR": str(Path(tmp) / "plain-store")})
        t_record = _timed([sys.executable, "train.py"], root, env)
        runs = root / ".flowillower" / "runs"
        (run_dir,) = [d for d in runs.iterdir() if (d / "checkpoints").is_dir()]
        captures = run_dir / "checkpoints" / "lightning"
        size = sum(f.stat().st_size for f in captures.iterdir())
        assert OLD in script
        assert STEP_OLD in script
        (root / "train.py").write_text(script.replace(OLD, NEW).replace(STEP_OLD, STEP_NEW))
        t_skip, est_skip, said_skip = _replay("w_norm", root, env)
        aside = Path(tmp) / "aside"
        shutil.move(str(captures), aside)
        try:
            t_full, est_full, said_full = _replay("w_norm_full", root, env)
        finally:
            shutil.move(str(aside), captures)
        skip, full = _values(run_dir, "w_norm"), _values(run_dir, "w_norm_full")
        if skip != full or len(skip) != args.epochs:
            raise SystemExit(f"values differ: {skip} vs {full}")
        shared = None
        if args.workers > 1:
            t_one, est_one, _said = _replay("g_one", root, env)
            t_split, est_split, _said = _replay("g_split", root, env, args.workers)
            one, split = _values(run_dir, "g_one"), _values(run_dir, "g_split")
            if one != split or len(one) != args.epochs * args.batches:
                raise SystemExit("values of the shared epochs differ from one worker's")
            shared = (t_one, est_one, t_split, est_split)
    load = os.getloadavg()[0]
    print(f"Lightning replay, {args.epochs} epochs x {args.batches} batches, MLP width "
          f"{args.width}; load average {load:.1f}")
    rows = [("record without FlowillowerCheckpoint (baseline)", t_plain, t_plain),
            ("record with FlowillowerCheckpoint", t_record, t_plain),
            ("replay, every epoch re-trained (baseline: captures moved away)", t_full, t_full),
            ("replay from the captures (training batches skipped)", t_skip, t_full)]
    if shared is not None:
        t_one, est_one, t_split, est_split = shared
        rows += [("training_step statement, 1 worker (baseline)", t_one, t_one),
                 (f"training_step statement, {args.workers} workers "
                  f"({TASKS[t_split]} share{'s' if TASKS[t_split] != 1 else ''})", t_split,
                  t_one)]
    print(f"{'case':<64} {'wall s':>7} {'CPU s':>7} {'wall vs baseline':>17}")
    for label, wall, base in rows:
        print(f"{label:<64} {wall:7.1f} {CPU[wall]:7.1f} {wall / base:16.2f}x")
    print(f"replay speed-up: {t_full / t_skip:.2f}x wall, "
          f"{CPU[t_full] / CPU[t_skip]:.2f}x CPU")
    print(f"captures: {args.epochs} files, {size / 1e6:.1f} MB; values bit-identical: "
          f"{skip == full}")
    print("what each replay's schedule said beforehand:")
    print(f"  from the captures: estimated {est_skip:.1f}s, took {t_skip:.1f}s; {said_skip}")
    print(f"  baseline:          estimated {est_full:.1f}s, took {t_full:.1f}s; {said_full}")
    if shared is not None:
        print(f"  training_step, 1 worker: estimated {shared[1]:.1f}s, took {shared[0]:.1f}s; "
              f"{args.workers} workers: estimated {shared[3]:.1f}s, took {shared[2]:.1f}s; "
              "values bit-identical: True")


if __name__ == "__main__":
    main()
