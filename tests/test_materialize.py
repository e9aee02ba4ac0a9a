"""Every run is on disk: a run with only `fw.watch` statistics, only images or only loop
timings materialises like one that logs metrics, and a kill -9 loses about 1 s at most."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import wait_for

from flowillower.store.reader import RunReader

WATCH_ONLY = """
import time
import torch
import flowillower as fw

fw.init(project="materialize", snapshot=False)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
fw.watch(model, every=1, auto_step=True)  # a plain loop: no fw.loop, no fw.log
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 4)
while True:
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.005)
"""

IMAGES_ONLY = """
import time
import numpy as np
import flowillower as fw

fw.init(project="materialize", snapshot=False)
i = 0
while True:
    fw.log_image("frame", np.full((8, 8, 3), i % 256, np.uint8), step=i)
    i += 1
    time.sleep(0.01)
"""

TIMINGS_ONLY = """
import itertools
import time
import flowillower as fw

fw.init(project="materialize", snapshot=False)
for _ in fw.loop("work", itertools.count(), progress=False):  # only sys values: time/work
    time.sleep(0.005)
"""


def _series(store_dir, role: str):
    """(run dir, that run's series of `role` with at least 3 values), once on disk."""
    runs = store_dir / "runs"
    dirs = list(runs.iterdir()) if runs.is_dir() else []
    if len(dirs) != 1 or not (dirs[0] / "run.json").exists():
        return None
    data = RunReader(dirs[0]).load()
    found = [s for s in data.series.values() if s.role == role and len(s.values) >= 3]
    return (dirs[0], found) if found else None


@pytest.mark.parametrize("source, role", [
    pytest.param(WATCH_ONLY, "watch", id="watch"),
    pytest.param(IMAGES_ONLY, "metric", id="images"),
    pytest.param(TIMINGS_ONLY, "sys", id="sys"),
])
def test_run_is_on_disk_and_survives_kill_9(source, role, tmp_path, store_dir):
    if role == "watch":
        pytest.importorskip("torch")
    script = tmp_path / "train_script.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _series(store_dir, role) or proc.poll() is not None, timeout=60,
                 what=f"{role} values in the run's data file")
        assert proc.poll() is None, proc.stderr.read().decode()
        killed_at = time.time()  # no chance to flush: what is on disk is what stays
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir, series = _series(store_dir, role)
    reader = RunReader(run_dir)
    assert reader.meta["project"] == "materialize"
    assert reader.status == "killed"
    assert (run_dir / "data.fwl").stat().st_size > 0
    last = max(float(s.time.max()) for s in series)
    assert killed_at - last <= 1.5, killed_at - last  # ~1 s lost at most
    if role == "metric":  # the image files themselves are there too
        frame = next(s for s in series if s.name == "frame")
        ref = frame.values[-1]
        assert (run_dir / ref["path"]).is_file()
