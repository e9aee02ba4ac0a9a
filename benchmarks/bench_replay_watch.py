"""What `flowillower replay --watch model` costs: `fw.watch` statistics for a past run that
never watched its model, against the naive way to get them (training again from scratch
with `fw.watch(model)` added), measured in the same run on the same script.

A small torch MLP trains for `--epochs` epochs of `--steps` steps with a validation loop,
inside `fw.checkpointing(model=..., optimizer=..., every=1)`. Rows: the original training
(no watch), the naive baseline (a fresh run with `fw.watch(model)`), and the replay with 1
and 2 local workers (segments from checkpoints). The replayed statistics are checked to
equal the watched run's (same number of values; tests/test_replay_watch.py checks the bits).

    python benchmarks/bench_replay_watch.py [--epochs 8] [--steps 250] [--width 512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = '''
import torch
import flowillower as fw

torch.set_num_threads(1)
torch.manual_seed(0)
W = fw.arg("width", 256)
net = torch.nn.Sequential(torch.nn.Linear(32, W), torch.nn.ReLU(), torch.nn.Linear(W, W),
                          torch.nn.ReLU(), torch.nn.Linear(W, 1))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
X = torch.randn(4096, 32)
Y = X[:, :1] * X[:, 1:2]
#WATCH
with fw.checkpointing(model=net, optimizer=opt, every=1):
    for epoch in fw.loop("epoch", range(fw.arg("epochs", 8))):
        for step in fw.loop("step", range(fw.arg("steps", 40))):
            idx = torch.randint(0, 4096, (64,))
            loss = torch.nn.functional.mse_loss(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            fw.log("loss", loss.item())
        with torch.no_grad():
            for vb in fw.loop("val", range(4)):
                fw.log("val", torch.nn.functional.mse_loss(net(X[vb::4]), Y[vb::4]).item())
'''


def _env() -> dict[str, str]:
    import flowillower

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FLOWILLOWER_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(flowillower.__file__).resolve().parent.parent)
    return env


def _project(path: Path, watched: bool) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "b@example.com"],
                 ["config", "user.name", "b"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    source = SCRIPT.replace("#WATCH", "fw.watch(net)" if watched else "")
    (path / "train.py").write_text(source.lstrip())
    return path


def _train(root: Path, kwargs: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--kwargs", *kwargs], cwd=root, env=_env(),
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def _watch_count(root: Path) -> int:
    from flowillower.store.reader import RunReader

    (run_dir,) = [p for p in (root / ".flowillower" / "runs").iterdir() if p.is_dir()]
    data = RunReader(run_dir).load()
    return sum(len(s.values) for s in data.series.values() if s.role == "watch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--width", type=int, default=512)
    args, _unknown = parser.parse_known_args()
    import flowillower as fw

    kwargs = [f"epochs={args.epochs}", f"steps={args.steps}", f"width={args.width}"]
    base = Path(tempfile.mkdtemp(prefix="bench-replay-watch-"))
    try:
        plain = _project(base / "plain", watched=False)
        watched = _project(base / "watched", watched=True)
        rows = [("train, no fw.watch (the recorded run)", _train(plain, kwargs))]
        baseline = _train(watched, kwargs)
        rows.append(("baseline: train again with fw.watch(net)", baseline))
        want = _watch_count(watched)
        for workers in (1, 2):
            copy = base / f"replay{workers}"
            shutil.copytree(plain, copy, symlinks=True)
            t0 = time.perf_counter()
            report = fw.replay(watch="model", dir=copy, workers=workers, yes=True,
                               echo=lambda _text: None)
            seconds = time.perf_counter() - t0
            assert report.ok, str(report)
            got = _watch_count(copy)
            assert got == want, (got, want)
            rows.append((f"replay --watch model, {workers} worker(s), "
                         f"{report.runs[0].tasks} segment(s)", seconds))
        print(f"{args.epochs} epochs x {args.steps} steps, width {args.width}: "
              f"{want} fw.watch values\n")
        print(f"{'':48} {'seconds':>8} {'vs baseline':>12}")
        for label, seconds in rows:
            print(f"{label:48} {seconds:8.2f} {seconds / baseline:11.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
