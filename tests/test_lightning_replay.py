"""Lightning hindsight replay from `FlowillowerCheckpoint`'s captures: real Lightning, CPU.

One 6-epoch run (Adam, StepLR, dropout, shuffled batches, validation) is recorded once
for the module. A replay of statements added to `on_train_epoch_end` and
`on_validation_epoch_end` must skip every training batch (the script counts them in a
file named by $BATCH_LOG, which the replay worker inherits) and still give values
bit-identical to a fresh run of the edited script, although the statements read the
weights, the module's own list of step losses, Lightning's epoch-reduced logged values,
`global_step` and the scheduler's learning rate: all of them restored from the captures.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import flowillower as fw  # noqa: E402
from flowillower.hindsight.ckpt_files import MANIFEST  # noqa: E402
from flowillower.hindsight.ledger import UntrustedCheckpoint  # noqa: E402
from flowillower.integrations.lightning_replay import batch_level_statements  # noqa: E402
from flowillower.integrations.lightning_state import (  # noqa: E402
    LightningCheckpoints,
    checkpoint_dir,
    ledger_file,
)
from flowillower.store.reader import RunReader  # noqa: E402
from tests.test_hindsight_replay import make_project, run_script  # noqa: E402

SCRIPT = '''
import os

import lightning.pytorch as pl
import torch

import flowillower as fw
from flowillower.integrations.lightning import FlowillowerCheckpoint, FlowillowerLogger


def note(kind):
    if os.environ.get("BATCH_LOG"):
        with open(os.environ["BATCH_LOG"], "a") as fh:
            fh.write(kind + "\\n")


class Net(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2),
                                       torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.step_losses = []
        self.val_epochs = 0

    def training_step(self, batch, batch_idx):
        note("train")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.step_losses.append(float(loss.detach()))
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        note("val")
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def on_validation_epoch_end(self):
        self.val_epochs += 1

    def on_train_epoch_end(self):
        self.step_losses.clear()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)]


pl.seed_everything(0)
data = torch.utils.data.TensorDataset(torch.randn(96, 4), torch.randn(96, 1))
trainer = pl.Trainer(max_epochs=6, logger=FlowillowerLogger(project="lreplay"),
                     callbacks=[FlowillowerCheckpoint()], log_every_n_steps=1,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu")
trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8, shuffle=True),
            torch.utils.data.DataLoader(data, batch_size=96))
'''
EPOCH_END = '''    def on_train_epoch_end(self):
        fw.log("w_norm", float(self.net[0].weight.detach().norm()) + sum(self.step_losses)
               + float(self.trainer.callback_metrics["train_loss_epoch"])
               + self.trainer.global_step + self.lr_schedulers().get_last_lr()[0])
'''
VAL_END = '''    def on_validation_epoch_end(self):
        fw.log("val_seen", float(self.trainer.callback_metrics["val_loss"]) + self.val_epochs)
'''


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(project root, the recorded run's folder): 6 epochs x 12 batches, captured."""
    root = make_project(tmp_path_factory.mktemp("lreplay") / "proj")
    run_script(root, "train.py", SCRIPT)
    (run_dir,) = (root / ".flowillower" / "runs").iterdir()
    return root, run_dir


@pytest.fixture(scope="module")
def fresh(recorded, tmp_path_factory) -> dict[str, dict[tuple, float]]:
    """w_norm / val_seen of the edited script run from scratch in this process (same
    libraries and threads as the replay workers)."""
    root, _run_dir = recorded
    store = tmp_path_factory.mktemp("fresh") / ".flowillower"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BATCH_LOG", raising=False)
        patch.setenv("FLOWILLOWER_DIR", str(store))
        patch.chdir(root)
        exec(compile(_edited(), str(root / "train.py"), "exec"), {"__name__": "m"})
        fw.finish()
    return {name: _values(store, name) for name in ("w_norm", "val_seen")}


def _edited() -> str:
    new = SCRIPT.replace("    def on_train_epoch_end(self):\n", EPOCH_END)
    new = new.replace("    def on_validation_epoch_end(self):\n", VAL_END)
    assert new.count("fw.log(") == 2
    return textwrap.dedent(new).lstrip()


def _values(store: Path, name: str) -> dict[tuple, float]:
    out = {}
    for run in sorted((store / "runs").iterdir()):
        data = RunReader(run).load([name])
        if name in data.series:
            s = data.series[name]
            for coords, step, value in zip(data.ctx_coords[s.ctx], s.step.tolist(),
                                           s.values.tolist()):
                out[(tuple(int(c) for c in coords if c >= 0), step)] = value
    return out


def test_captures_cover_every_epoch_and_stay_local(recorded) -> None:
    _root, run_dir = recorded
    store = LightningCheckpoints(run_dir)
    assert sorted(store.skippable()) == [0, 1, 2, 3, 4, 5]
    assert store.meta["objects"] == {"module": "module", "optimizer0": "stateful",
                                     "scheduler0": "stateful", "precision": "stateful"}
    assert checkpoint_dir(run_dir).parent.name == "checkpoints"  # never pushed
    assert ledger_file(run_dir).is_file()
    assert not store.unrecorded


def test_epoch_level_statements_replay_without_training_to_fresh_values(
        recorded, fresh, tmp_path: Path, monkeypatch) -> None:
    root, run_dir = recorded
    (root / "train.py").write_text(_edited())
    batches = tmp_path / "replay-batches.log"
    monkeypatch.setenv("BATCH_LOG", str(batches))
    report = fw.replay("w_norm,val_seen", dir=root, yes=True, echo=lambda *a, **k: None)
    assert report.ok, str(report)
    seen = batches.read_text().split()
    assert "train" not in seen  # not one training batch ran
    assert seen.count("val") == 7  # the sanity check, then every epoch's validation
    replayed = {n: _values(root / ".flowillower", n) for n in ("w_norm", "val_seen")}
    assert [c for c, _ in replayed["w_norm"]] == [(e,) for e in range(6)]
    assert RunReader(run_dir).load(["w_norm"]).series["w_norm"].replayed.all()

    for name in ("w_norm", "val_seen"):
        assert fresh[name] == replayed[name], name  # bit-identical, same coordinates, steps
    assert len(set(replayed["w_norm"].values())) == 6  # a real comparison: values moved


def test_statements_that_may_run_per_batch_keep_the_training() -> None:
    source = textwrap.dedent(SCRIPT).replace(
        '        note("train")\n', '        note("train")\n        fw.log("g", 1.0)\n')
    source = source.replace("def note(kind):\n",
                            'def note(kind):\n    fw.log("h", 2.0)\n')
    source += 'fw.log("after", 3.0)\n'
    source = source.replace("        self.val_epochs += 1\n",
                            '        self.val_epochs += 1\n        fw.log("v", 4.0)\n')
    lines = source.splitlines()
    where = {name: 1 + next(i for i, line in enumerate(lines) if f'fw.log("{name}"' in line)
             for name in ("g", "h", "after", "v")}
    flagged = batch_level_statements(source, lambda names: set())
    assert flagged == [f"line {where['h']} in note()", f"line {where['g']} in training_step()"]
    # Names the run already has are not being replayed: nothing to decide for them.
    assert batch_level_statements(source, lambda names: {"g", "h"}) == []


def test_a_capture_whose_bytes_changed_is_never_loaded(recorded, tmp_path: Path) -> None:
    _root, run_dir = recorded
    copy = tmp_path / "store"
    shutil.copytree(run_dir.parent.parent, copy, ignore=shutil.ignore_patterns("git"))
    run_copy = copy / "runs" / run_dir.name
    store = LightningCheckpoints(run_copy)
    target = checkpoint_dir(run_copy) / store.epochs[2]["file"]
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    assert store.load(1)["loops"]  # untouched captures still load
    with pytest.raises(UntrustedCheckpoint, match="sha256"):
        LightningCheckpoints(run_copy).load(2)
    # Without this machine's record of writing them, no capture is used at all.
    ledger_file(run_copy).unlink()
    unrecorded = LightningCheckpoints(run_copy)
    assert unrecorded.skippable() == set() and len(unrecorded.unrecorded) == 6


class _Small(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(store: Path, callback, epochs: int = 2, **trainer_options):
    """Train `_Small` in this process with the callback; returns the run's folder."""
    from flowillower.integrations.lightning import FlowillowerLogger

    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    logger = FlowillowerLogger(project="small", dir=store)
    trainer = pl.Trainer(max_epochs=epochs, logger=logger, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", **trainer_options)
    trainer.fit(_Small(), torch.utils.data.DataLoader(data, batch_size=8),
                torch.utils.data.DataLoader(data, batch_size=32))
    run = logger.experiment
    logger.finish()
    return None if run is None else run.dir


def test_epochs_validated_before_their_end_are_not_skippable(tmp_path: Path) -> None:
    from flowillower.integrations.lightning import FlowillowerCheckpoint

    callback = FlowillowerCheckpoint()
    run_dir = _fit(tmp_path / ".flowillower", callback, val_check_interval=0.5)
    store = LightningCheckpoints(run_dir)
    assert store.mid_validation == {0, 1} and store.skippable() == set()
    assert callback.captured == []


def test_every_and_max_disk_bound_the_captures(tmp_path: Path) -> None:
    from flowillower.integrations.lightning import FlowillowerCheckpoint

    every = FlowillowerCheckpoint(every=2)
    run_dir = _fit(tmp_path / "a" / ".flowillower", every, epochs=4)
    assert every.captured == [0, 2] and sorted(LightningCheckpoints(run_dir).epochs) == [0, 2]
    tiny = FlowillowerCheckpoint(max_disk="1KB")
    with pytest.warns(UserWarning, match="checkpoints stopped at epoch 0: .*max_disk"):
        run_dir = _fit(tmp_path / "b" / ".flowillower", tiny)
    assert tiny.captured == [] and LightningCheckpoints(run_dir).skippable() == set()


def test_debug_mode_captures_nothing(tmp_path: Path) -> None:
    from flowillower.integrations.lightning import FlowillowerCheckpoint

    callback = FlowillowerCheckpoint()
    fw.debug(True)
    try:
        assert _fit(tmp_path / ".flowillower", callback) is None
    finally:
        fw.debug(False)
    assert callback.captured == [] and not (tmp_path / ".flowillower" / "runs").exists()


def _schedule(root: Path, script: Path) -> tuple[str, dict]:
    """The schedule `fw.replay` prints for w_plan / val_plan (declined at the prompt),
    and its JSON report."""
    import json

    from flowillower.hindsight.replay import report_json

    printed: list[str] = []
    report = fw.replay("w_plan,val_plan", dir=root, script=script, echo=printed.append,
                       confirm=lambda _question: False)
    assert report.cancelled
    return "\n".join(printed), json.loads(report_json(report))["runs"][0]


def test_the_schedule_says_which_epochs_the_worker_skips(recorded, tmp_path: Path) -> None:
    root, run_dir = recorded
    script = tmp_path / "train.py"  # names no other test replays into the shared run
    script.write_text(_edited().replace('"w_norm"', '"w_plan"').replace('"val_seen"',
                                                                         '"val_plan"'))
    printed, outcome = _schedule(root, script)
    strategy = ("re-executed with its recorded command line; the training batches of 6 of 6 "
                "epochs skipped (FlowillowerCheckpoint)")
    assert f"strategy: {strategy}\n" in printed
    assert "1 task (whole script)" in printed
    assert ("note: FlowillowerCheckpoint: the worker skips the training batches of epochs "
            "0-5 and restores each one's end state") in printed
    assert "re-executed from the start" not in printed
    assert outcome["strategy"] == strategy and outcome["status"] == "skipped"

    # Captures this machine has no record of writing are never loaded: the schedule says
    # every epoch is trained, as the worker will.
    copy = tmp_path / "copy"
    shutil.copytree(root / ".flowillower", copy / ".flowillower")
    ledger_file(copy / ".flowillower" / "runs" / run_dir.name).unlink()
    printed, outcome = _schedule(copy, script)
    assert ("every epoch re-executed (FlowillowerCheckpoint recorded no epoch that can be "
            "skipped)") in outcome["strategy"]
    assert ("note: FlowillowerCheckpoint: 6 capture file(s) were not written on this "
            "machine; every epoch is re-executed") in printed


def test_the_printed_schedule_names_a_per_batch_statement(recorded, tmp_path: Path) -> None:
    """End to end: the schedule the user sees (the plan made from the transplanted code)
    says every epoch is trained because of the statement in training_step, and where."""
    root, _run_dir = recorded
    script = tmp_path / "train.py"
    edited = _edited().replace('"w_norm"', '"w_plan"').replace('"val_seen"', '"val_plan"')
    edited = edited.replace('        note("train")\n',
                            '        note("train")\n        fw.log("val_plan", 1.0)\n', 1)
    script.write_text(edited)
    printed, outcome = _schedule(root, script)
    assert "every epoch re-executed: the statement(s) at line" in outcome["strategy"]
    assert "in training_step() may run per training batch" in outcome["strategy"]
    assert "the training batches of 6 of 6 epochs skipped" not in printed


def test_workers_get_the_thread_count_the_lightning_run_recorded(recorded) -> None:
    """CPU float sums depend on the thread count: a worker of a run recorded through
    FlowillowerCheckpoint (no fw.checkpointing) gets the recording's, unless set."""
    from flowillower.hindsight.jobs import recorded_threads
    from flowillower.hindsight.planner import load_run_info, plan_run

    _root, run_dir = recorded
    plan = plan_run(load_run_info(run_dir), [])
    # What the recording process had (not this test process: other tests change its own).
    meta = json.loads((checkpoint_dir(run_dir) / MANIFEST).read_text().splitlines()[0])
    assert isinstance(meta["torch_threads"], int) and meta["torch_threads"] >= 1
    want = str(meta["torch_threads"])
    assert recorded_threads(plan, {}) == {"OMP_NUM_THREADS": want, "MKL_NUM_THREADS": want}
    assert recorded_threads(plan, {"OMP_NUM_THREADS": "3"}) == {"MKL_NUM_THREADS": want}


def test_the_plan_trains_every_epoch_for_a_statement_that_may_run_per_batch(recorded) -> None:
    """Given the replayed code, the planner decides as the worker will: a statement in
    `training_step` (or a helper) gets every epoch trained, one in an epoch hook does not."""
    from flowillower.hindsight.analysis import analyze
    from flowillower.hindsight.planner import load_run_info, plan_run

    _root, run_dir = recorded
    info = load_run_info(run_dir)
    in_step = textwrap.dedent(SCRIPT).replace(
        '        note("train")\n', '        note("train")\n        fw.log("g", 1.0)\n')
    line = 1 + in_step.splitlines().index('        fw.log("g", 1.0)')
    plan = blocked = plan_run(info, analyze(in_step, ["g"], None), in_step)
    assert plan.strategy == ("re-executed with its recorded command line; every epoch "
                             f"re-executed: the statement(s) at line {line} in "
                             "training_step() may run per training batch "
                             "(FlowillowerCheckpoint)")
    assert batch_level_statements(in_step, lambda names: set()) == [
        f"line {line} in training_step()"]  # the worker's own decision, the same
    epoch_end = _edited()
    plan = plan_run(info, analyze(epoch_end, ["w_norm", "val_seen"], None), epoch_end)
    assert plan.strategy.endswith("the training batches of 6 of 6 epochs skipped "
                                  "(FlowillowerCheckpoint)")
    # Estimates from the recorder's timing of its process (imports of torch and Lightning
    # included), less the recorded batch time of the epochs skipped.
    skips = info.skips
    assert skips.setup_s > 0.5 and skips.saved_s > 0
    assert blocked.estimate >= skips.setup_s + (info.summary["ended"] - skips.started)
    assert plan.estimate < blocked.estimate


def test_epochs_without_a_capture_train_on_from_a_restored_one(
        recorded, fresh, tmp_path: Path, monkeypatch) -> None:
    """Epochs 1, 3 and 5 without a usable capture (as with `every=2`, or files this
    machine has no record of): the worker restores epoch 0's end state, trains epoch 1
    from there, and so on; the values still equal a fresh run's, bit for bit."""
    import json

    root, run_dir = recorded
    copy = tmp_path / "copy" / ".flowillower"
    shutil.copytree(root / ".flowillower", copy)
    run_copy = copy / "runs" / run_dir.name
    captures = LightningCheckpoints(run_copy)
    forget = {captures.epochs[e]["file"] for e in (1, 3, 5)}
    for e in (2, 4):  # the captures kept need nothing from the ones forgotten
        assert not {captures.files[r] for r in captures.epochs[e]["refs"]} & forget
    ledger = ledger_file(run_copy)
    ledger.write_text("".join(line + "\n" for line in ledger.read_text().splitlines()
                              if json.loads(line)["file"] not in forget))
    assert sorted(LightningCheckpoints(run_copy).skippable()) == [0, 2, 4]
    script = tmp_path / "train.py"  # names no other test replays
    script.write_text(_edited().replace('"w_norm"', '"w_mix"').replace('"val_seen"',
                                                                        '"val_mix"'))
    batches = tmp_path / "batches.log"
    monkeypatch.setenv("BATCH_LOG", str(batches))
    report = fw.replay("w_mix,val_mix", dir=copy, script=script, yes=True,
                       echo=lambda *a, **k: None)
    assert report.ok, str(report)
    assert "the training batches of 3 of 6 epochs skipped" in report.runs[0].strategy
    assert batches.read_text().split().count("train") == 3 * 12  # epochs 1, 3, 5 trained
    assert _values(copy, "w_mix") == fresh["w_norm"]
    assert _values(copy, "val_mix") == fresh["val_seen"]


def test_a_doctored_manifest_cannot_drive_the_schedule(recorded, tmp_path: Path) -> None:
    """The words the schedule prints come from the run's manifest: escape sequences are
    dropped, and values of the wrong type neither crash the planner nor count."""
    import json

    from flowillower.hindsight.planner import load_run_info, plan_run

    root, run_dir = recorded
    copy = tmp_path / ".flowillower"
    shutil.copytree(root / ".flowillower", copy, ignore=shutil.ignore_patterns("git"))
    run_copy = copy / "runs" / run_dir.name
    manifest = checkpoint_dir(run_copy) / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[0]["replay"].update(by="Evil\x1b[2J\x1b]0;owned\x07", hooks="on_train_epoch_end",
                              per=["x"])
    for line in lines:
        if line["type"] == "ckpt":
            line["bytes"] = "a lot"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    plan = plan_run(load_run_info(run_copy), [])
    text = plan.strategy + "\n".join(plan.notes)
    assert "\x1b" not in text and "\x07" not in text
    assert plan.strategy.endswith("the training batches of 6 of 6 epochs skipped "
                                  "(Evil[2J]0;owned)")
    assert plan.info.skips.load_bytes == 0 and plan.info.skips.hooks == []
