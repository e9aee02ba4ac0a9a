"""PyTorch Lightning: a real `Trainer` on a tiny module and random tensors, CPU only.

What the logger must deliver: Lightning's values in `fw.dataframe` keyed by `epoch` and
`step`, flattened hyper-parameters, the model graph, the run's status, rank-zero only,
`fw.watch` statistics, and a replay of a forgotten per-epoch metric whose values equal a
fresh run of the new script.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import flowillower as fw  # noqa: E402
from flowillower import api  # noqa: E402
from flowillower.integrations.lightning import FlowillowerLogger  # noqa: E402
from flowillower.store.reader import RunReader  # noqa: E402
from tests.test_hindsight_replay import make_project, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    momentum: float = 0.0


class Tiny(pl.LightningModule):
    """4 -> 8 -> 1 MLP; remembers the losses it computed to compare with the store."""

    def __init__(self, optim: Optim, extra: argparse.Namespace, fail_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 1))
        self.example_input_array = torch.zeros(2, 4)
        self.losses: list[float] = []
        self.val_losses: list[float] = []
        self.fail_at = fail_at

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("diverged")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.losses.append(float(loss))
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.val_losses.append(float(loss))
        self.log("val_loss", loss)

    def on_train_epoch_end(self):
        fw.log("w_norm", float(self.net[0].weight.detach().norm()))

    def configure_optimizers(self):
        opt = self.hparams.optim
        return torch.optim.SGD(self.parameters(), lr=opt.lr, momentum=opt.momentum)


def _fit(logger, epochs: int = 3, fail_at: int = -1, **trainer_options) -> Tiny:
    pl.seed_everything(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    model = Tiny(Optim(), argparse.Namespace(seed=0, tag="a"), fail_at)
    options = dict(max_epochs=epochs, logger=logger, log_every_n_steps=1,
                   enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    options.update(trainer_options)
    trainer = pl.Trainer(**options)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8),
                torch.utils.data.DataLoader(data, batch_size=32))
    return model


def test_three_epochs_values_hyperparameters_graph_and_status(store_dir: Path) -> None:
    logger = FlowillowerLogger(project="lit", name="tiny")
    model = _fit(logger)
    run = logger.experiment
    assert isinstance(run, fw.Run) and (logger.name, logger.version) == ("lit", run.id)
    assert run.status is None  # "success" leaves the run open for trainer.test
    logger.finish()
    assert run.status == "success"

    df = fw.dataframe("train_loss", "val_loss", "w_norm")
    assert list(df.columns[:4]) == ["run_id", "run_name", "epoch", "step"]
    assert df["epoch"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert df["step"].tolist() == list(range(12))  # Lightning's global step
    assert df["train_loss"].tolist() == pytest.approx(model.losses, rel=1e-6)
    # Epoch-level values (validation, the module's own fw.log) repeat on their steps.
    per_epoch = df.groupby("epoch")["val_loss"].unique().tolist()
    assert [v.tolist() for v in per_epoch] == [[pytest.approx(v, rel=1e-6)]
                                               for v in model.val_losses]
    assert df.groupby("epoch")["w_norm"].nunique().tolist() == [1, 1, 1]
    assert "epoch" not in RunReader(run.dir).load().series  # a coordinate, not a metric

    row = fw.runs().iloc[0]
    assert row["status"] == "success" and row["run_name"] == "tiny"
    # Nested dataclass and Namespace flattened to dotted names.
    assert (row["optim.lr"], row["optim.momentum"], row["extra.seed"], row["extra.tag"],
            row["fail_at"]) == (0.1, 0.0, 0, "a", -1)
    graphs = list((run.dir / "model").glob("*.json"))
    assert graphs, "log_graph must store the model graph"
    assert "Linear" in graphs[0].read_text()


def test_hyperparameters_of_every_shape_are_flattened(store_dir: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    logger = FlowillowerLogger(project="lit")
    logger.log_hyperparams(omegaconf.OmegaConf.create(
        {"model": {"width": 64, "depth": "${model.width}"}, "seed": 3}))
    logger.log_hyperparams(argparse.Namespace(batch=32, optim=Optim(lr=0.5)))
    logger.log_hyperparams({"data": {"name": "rand", "sizes": [1, 2]}})
    logger.finish()
    row = fw.runs().iloc[0]
    assert (row["model.width"], row["model.depth"], row["seed"]) == (64, 64, 3)  # resolved
    assert (row["batch"], row["optim.lr"], row["optim.momentum"]) == (32, 0.5, 0.0)
    assert (row["data.name"], row["data.sizes"]) == ("rand", [1, 2])


def test_failed_training_marks_the_run_failed(store_dir: Path) -> None:
    logger = FlowillowerLogger(project="lit")
    with pytest.raises(RuntimeError, match="diverged"):
        _fit(logger, fail_at=5)
    run = logger.experiment
    assert run.status == "failed"
    df = fw.dataframe("train_loss")
    assert df["step"].tolist() == [0, 1, 2, 3, 4]
    assert RunReader(run.dir).status == "failed"


@pytest.mark.parametrize(("lightning_status", "status"), [
    ("success", None), ("failed", "failed"), ("finished", "killed")])
def test_finalize_statuses(store_dir: Path, lightning_status: str, status) -> None:
    logger = FlowillowerLogger(project="lit")
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    logger.finalize(lightning_status)  # "finished": a SLURM requeue signal
    run = logger.experiment
    assert run.status == status
    if status is None:  # still open: a later stage logs into it
        logger.log_metrics({"loss": 0.5}, step=1)
        logger.finish()
    assert RunReader(run.dir).status == (status or "success")


def test_a_pickled_logger_leaves_its_run_behind(store_dir: Path) -> None:
    import pickle

    logger = FlowillowerLogger(project="lit", watch=True)
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))  # what ddp_spawn does to the trainer
    assert logger.experiment.status is None  # the original keeps its run
    logger.finish()
    # In the new process (no run open there) the copy starts a run of its own.
    copy.log_metrics({"loss": 0.5}, step=1)
    assert copy.experiment is not logger.experiment and copy.experiment.status is None
    assert copy.name == "lit"
    copy.finish()
    assert RunReader(copy.experiment.dir).load().series["loss"].values.tolist() == [0.5]


def test_an_open_run_is_used_and_test_after_fit_logs_into_it(store_dir: Path) -> None:
    run = fw.init(project="mine", name="outer")
    logger = FlowillowerLogger()
    model = _fit(logger, epochs=1)
    assert logger.experiment is run
    trainer = pl.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    model.test_step = model.validation_step
    trainer.test(model, torch.utils.data.DataLoader(data, batch_size=8))
    fw.finish()
    series = RunReader(run.dir).load().series
    assert len(series["train_loss"].values) == 4
    assert "val_loss" in series and len(series["val_loss"].values) == 2  # fit + test


def test_coordinates_callback_passed_by_hand_without_autolog(store_dir: Path) -> None:
    logger = FlowillowerLogger(project="lit")
    _fit(logger, epochs=2, enable_autolog_hparams=False, callbacks=[logger.coordinates])
    logger.finish()
    df = fw.dataframe("train_loss")
    assert df["epoch"].tolist() == [0] * 4 + [1] * 4 and df["step"].tolist() == list(range(8))
    assert not (logger.experiment.dir / "model").exists()  # no log_graph call: no graph


def test_watch_records_statistics_per_step(store_dir: Path) -> None:
    logger = FlowillowerLogger(project="lit", watch={"what": ["gradients"], "every": 2})
    _fit(logger, epochs=1)
    logger.finish()
    series = RunReader(logger.experiment.dir).load().series
    watched = [s for s in series.values() if s.role == "watch"]
    assert watched, sorted(series)
    steps = {step for s in watched for step in s.step.tolist()}
    assert steps == {0, 2}  # every 2nd of the 4 training steps
    assert any(name.startswith("grad/net.0") for name in series)


def test_checkpoints_are_noted_and_kept_out_of_the_store(store_dir: Path,
                                                         tmp_path: Path) -> None:
    logger = FlowillowerLogger(project="lit")
    ckpt = pl.callbacks.ModelCheckpoint(monitor="val_loss")  # its default folder
    _fit(logger, epochs=2, enable_checkpointing=True, callbacks=[ckpt],
         default_root_dir=tmp_path / "root")
    logger.finish()
    run_id = logger.experiment.id
    assert Path(ckpt.best_model_path).parent == tmp_path / "root" / "lit" / run_id / "checkpoints"
    assert not list(store_dir.rglob("*.ckpt"))
    events = [e for e in RunReader(logger.experiment.dir).load().events
              if e["event"] == "checkpoint"]
    assert len(events) == 2
    assert Path(events[-1]["best"]) == Path(ckpt.best_model_path)
    assert events[-1]["score"] == pytest.approx(float(ckpt.best_model_score))


def test_other_ranks_record_nothing(store_dir: Path, monkeypatch) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    # What a DDP launcher sets up in a second process: Lightning's rank and $RANK.
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    monkeypatch.setenv("RANK", "1")
    logger = FlowillowerLogger(project="lit")
    _fit(logger, epochs=1)
    assert not isinstance(logger.experiment, fw.Run)
    assert api.open_run() is None
    assert not (store_dir / "runs").exists() or not any((store_dir / "runs").iterdir())


def test_debug_mode_records_nothing(store_dir: Path) -> None:
    fw.debug(True)
    logger = FlowillowerLogger(project="lit")
    model = _fit(logger, epochs=1)
    assert len(model.losses) == 4  # trained as usual
    assert logger.version == "debug" and api.open_run() is None
    assert not store_dir.exists()


SCRIPT = '''
import lightning.pytorch as pl
import torch

import flowillower as fw
from flowillower.integrations.lightning import FlowillowerLogger


class Net(pl.LightningModule):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                       torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_epoch_end(self):
        self.log("epoch_seen", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


pl.seed_everything(0)
data = torch.utils.data.TensorDataset(torch.randn(48, 4), torch.randn(48, 1))
trainer = pl.Trainer(max_epochs=3, logger=FlowillowerLogger(project="replay"),
                     log_every_n_steps=1, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     accelerator="cpu", deterministic=True)
trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8, shuffle=True))
'''
FORGOTTEN = '        fw.log("w_norm", float(self.net[0].weight.detach().norm()))\n'


def _series(store: Path, name: str) -> dict[tuple, float]:
    out = {}
    for run in sorted((store / "runs").iterdir()):
        data = RunReader(run).load([name])
        if name in data.series:
            s = data.series[name]
            coords = data.ctx_coords[s.ctx]
            for i, value in enumerate(s.values.tolist()):
                out[(run.name, tuple(int(c) for c in coords[i] if c >= 0))] = value
    return out


def test_forgotten_per_epoch_metric_replays_to_fresh_run_values(tmp_path: Path,
                                                               monkeypatch) -> None:
    root = make_project(tmp_path / "proj")
    run_script(root, "train.py", SCRIPT)
    store = root / ".flowillower"
    new = SCRIPT.replace('        self.log("epoch_seen", float(self.current_epoch))\n',
                         '        self.log("epoch_seen", float(self.current_epoch))\n'
                         + FORGOTTEN)
    assert new != SCRIPT
    (root / "train.py").write_text(textwrap.dedent(new).lstrip())
    report = fw.replay("w_norm", dir=root, yes=True, echo=lambda *a, **k: None)
    assert report.ok, str(report)
    replayed = _series(store, "w_norm")
    assert [coords for _, coords in replayed] == [(0,), (1,), (2,)]  # keyed by epoch
    (original,) = (store / "runs").iterdir()
    assert RunReader(original).load(["w_norm"]).series["w_norm"].replayed.all()

    # The new script from scratch, in this process (a third Lightning start-up in a
    # subprocess would double the test's time; same libraries, same thread count).
    fresh_store = tmp_path / "fresh" / ".flowillower"
    monkeypatch.setenv("FLOWILLOWER_DIR", str(fresh_store))
    monkeypatch.chdir(root)
    exec(compile(textwrap.dedent(new), str(root / "train.py"), "exec"), {"__name__": "m"})
    fw.finish()
    fresh = _series(fresh_store, "w_norm")
    assert list(fresh.values()) == list(replayed.values())  # bit-identical
    assert len(set(fresh.values())) == 3  # the weights moved: a real comparison


def _doc_example(page: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "integrations" / page)
                        .read_text(), re.S)
    (complete,) = [b for b in blocks if b.startswith("import ")]
    return complete


def test_docs_example_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(_doc_example("lightning.md"), "lightning.md", "exec"), namespace)
    df = namespace["df"]
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(df.columns)
    assert sorted(df["epoch"].unique().tolist()) == [0, 1]
    run = namespace["logger"].experiment
    assert run.status == "success"
