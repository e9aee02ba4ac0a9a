"""fw.log_model / fw.watch on a real run: a tiny CPU training, read back as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

import flowillower as fw


def test_watch_and_log_model_in_a_training_loop(store_dir):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    run = fw.init(name="watched")
    graph = fw.log_model(model, torch.randn(2, 4))
    watcher = fw.watch(model, every=2)
    fw.watch(model, every=2)  # watching twice keeps one set of hooks
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in fw.loop("step", range(6)):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        fw.log("loss", loss.item())
    assert fw.unwatch(model)
    fw.finish()
    del watcher
    stored = json.loads((run.dir / "model" / "graph.json").read_text())
    assert stored["nodes"] == json.loads(json.dumps(graph["nodes"]))
    df = fw.dataframe("loss", "act/0/mean", "grad/0.weight/norm")
    watched = df.dropna(subset=["act/0/mean"])
    assert watched["step"].tolist() == [0, 2, 4]  # every 2 steps of the loop
    assert (watched["grad/0.weight/norm"] > 0).all()
    row = fw.runs().iloc[0]
    assert "act/0/mean" in row.index and row["loss"] == df["loss"].iloc[-1]
    # Statistics are not user metrics: the runs table keeps to `loss`.
    listing = subprocess.run([sys.executable, "-m", "flowillower", "ls"], capture_output=True,
                             text=True, check=True).stdout
    assert "loss" in listing and "act/0" not in listing
    summary = subprocess.run([sys.executable, "-m", "flowillower", "model", run.id],
                             capture_output=True, text=True, check=True).stdout
    assert "Linear" in summary and "Total params: 49" in summary
