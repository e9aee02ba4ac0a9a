"""fw.log_model / fw.watch on a real run: a tiny CPU training, read back as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import flowillower as fw

torch = pytest.importorskip("torch")  # the optional [torch] extra


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


def test_watch_histograms_are_stored_as_plain_records_at_any_size(store_dir):
    """Small histograms skip re-validation (values.Checked); big ones are still checked."""
    from flowillower.values import Checked

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    seen = []
    watcher = fw.watch(model, every=1, bins=8, sink=lambda stats, step: seen.append(stats))
    watcher.on_step(0)
    x = torch.randn(64, 4)
    model(x)
    watcher.close()
    assert type(seen[0]["act/0/hist"]) is Checked  # bins within the bound
    fw.unwatch(model)

    run = fw.init(name="hists")
    fw.watch(model, every=1, bins=8)
    for _ in fw.loop("step", range(2)):
        model(x).sum().backward()
    fw.unwatch(model)
    big_seen = []

    def sink(stats, step):
        big_seen.append(stats)
        run.log_metrics(stats, step=step)

    big = fw.watch(model, every=1, bins=5000, sink=sink)  # the generic, checked path
    big.on_step(5)
    model(x)
    big.close()
    assert type(big_seen[0]["act/0/hist"]) is dict
    fw.finish()
    hists = fw.dataframe("act/0/hist")["act/0/hist"].dropna()
    assert sorted(len(h["counts"]) for h in hists) == [8, 8, 5000]
    hist = next(h for h in hists if len(h["counts"]) == 8)
    assert type(hist) is dict and set(hist) == {"min", "max", "counts"}
    out = model[0](x).detach()
    assert hist["min"] == pytest.approx(float(out.min())) and sum(hist["counts"]) == out.numel()
    assert len(hist["counts"]) == 8
