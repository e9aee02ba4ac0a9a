"""Hugging Face transformers: a tiny GPT-2 (2 layers, random init) trained for a few steps
by a real `Trainer` on random token ids, CPU only, no downloads.

The run must hold the trainer's logged values and evaluation metrics keyed by `epoch` /
`step`, the arguments and model config, the model graph traced on a real batch, and its
status; other processes record nothing. The page's example is the training run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import flowillower as fw  # noqa: E402
from flowillower import api  # noqa: E402
from flowillower.store.reader import RunReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _doc_example() -> str:
    text = (ROOT / "docs" / "integrations" / "transformers.md").read_text()
    (complete,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                   if b.startswith("import ")]
    return complete


def _train(tmp_path: Path, monkeypatch, source: str) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "transformers.md", "exec"), namespace)
    return namespace


def test_docs_example_records_logs_eval_metrics_config_and_graph(tmp_path: Path,
                                                                 monkeypatch) -> None:
    ns = _train(tmp_path, monkeypatch, _doc_example())
    trainer = ns["trainer"]
    history = trainer.state.log_history  # what the trainer itself logged
    (reader,) = [RunReader(d) for d in (tmp_path / "project" / ".flowillower" / "runs").iterdir()]
    assert reader.status == "success" and reader.meta["project"] == "gpt2-tiny"

    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    df = fw.dataframe("loss", "learning_rate", "grad_norm")
    assert [(int(s), v) for s, v in zip(df["step"], df["loss"])] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in losses]
    assert losses and [s for s, _ in losses] == [2, 4, 6]
    assert df["epoch"].tolist() == [0, 0, 0]
    assert df["learning_rate"].is_monotonic_decreasing and df["grad_norm"].gt(0).all()

    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    ev = fw.dataframe("eval_loss")
    assert [(int(s), v) for s, v in zip(ev["step"], ev["eval_loss"])] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in evals]
    assert [s for s, _ in evals] == [3, 6]
    series = reader.load().series
    assert len(series["eval_loss"].values) == 2  # on_evaluate did not record them twice
    assert series["train_loss"].last() == pytest.approx(
        [h["train_loss"] for h in history if "train_loss" in h][0])
    assert "epoch" not in series  # a coordinate

    row = fw.runs().iloc[0]
    assert (row["args.learning_rate"], row["args.max_steps"], row["model.n_layer"],
            row["model.n_embd"], row["model.vocab_size"]) == (1e-3, 6, 2, 32, 64)

    graph = json.loads((reader.dir / "model" / "graph.json").read_text())
    assert graph["root"] == "GPT2LMHeadModel" and graph["probed"] and not graph["error"]
    # Traced on a real batch: one example of 16 token ids, with its labels.
    inputs = {n["name"]: n["out_shapes"] for n in graph["nodes"] if n["kind"] == "input"}
    assert inputs == {"input_ids": [[1, 16]], "labels": [[1, 16]]}
    assert any(n.get("path") == "transformer.h.1" for n in graph["nodes"])


def test_only_the_logging_process_records(tmp_path: Path, monkeypatch) -> None:
    from transformers import TrainingArguments

    # What a second data-parallel process sees: should_log is false there.
    monkeypatch.setattr(TrainingArguments, "should_log", property(lambda self: False))
    source = _doc_example().replace("max_steps=6", "max_steps=2").split("\nprint(")[0]
    ns = _train(tmp_path, monkeypatch, source)
    assert ns["trainer"].state.global_step == 2
    assert api.open_run() is None
    assert not (tmp_path / "project" / ".flowillower" / "runs").exists()


def test_debug_mode_records_nothing(tmp_path: Path, monkeypatch) -> None:
    fw.debug(True)
    source = _doc_example().replace("max_steps=6", "max_steps=2").split("\nprint(")[0]
    ns = _train(tmp_path, monkeypatch, source)
    assert ns["trainer"].state.global_step == 2
    assert api.open_run() is None
    assert not (tmp_path / "project" / ".flowillower").exists()


def test_a_run_opened_before_training_is_used_and_can_stay_open(tmp_path: Path,
                                                                monkeypatch) -> None:
    run = fw.init(project="outer", name="mine")
    source = (_doc_example().replace("max_steps=6", "max_steps=2")
              .replace('FlowillowerCallback(project="gpt2-tiny")',
                       "FlowillowerCallback(finish=False)")
              .replace('save_strategy="no"', 'save_strategy="steps", save_steps=2')
              .split("\nprint(")[0])
    ns = _train(tmp_path, monkeypatch, source)
    from flowillower.integrations.transformers import FlowillowerCallback

    (ours,) = [c for c in ns["trainer"].callback_handler.callbacks
               if isinstance(c, FlowillowerCallback)]
    assert ours.run is run
    assert run.status is None
    before = RunReader(run.dir).load().series
    ns["trainer"].evaluate()
    fw.finish()
    series = RunReader(run.dir).load().series
    evals = [h["eval_loss"] for h in ns["trainer"].state.log_history if "eval_loss" in h]
    assert series["eval_loss"].values.tolist() == pytest.approx(evals, rel=1e-6)
    n_before = len(before["eval_loss"].values) if "eval_loss" in before else 0
    assert len(series["eval_loss"].values) == n_before + 1  # the evaluate() after train
    assert "train_loss" in series
    (saved,) = [e for e in RunReader(run.dir).load().events if e["event"] == "checkpoint"]
    assert saved["step"] == 2 and (Path(saved["path"]) / "model.safetensors").is_file()


def test_logged_values_numbers_only_nan_kept(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from flowillower.integrations.transformers import FlowillowerCallback

    run = fw.init(project="direct")
    callback = FlowillowerCallback(run=run, log_model=False)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    state = TrainerState(global_step=7, epoch=0.5)
    callback.on_log(args, state, TrainerControl(), logs={
        "loss": float("nan"), "grad_norm": torch.tensor(1.5), "note": "text",
        "epoch": 0.5, "flag": True, "tokens": 128})
    callback.on_train_end(args, state, TrainerControl())
    assert run.status == "success"
    series = RunReader(run.dir).load().series
    assert sorted(n for n in series if series[n].role == "metric") == [
        "grad_norm", "loss", "tokens"]
    assert str(series["loss"].values[0]) == "nan" and series["grad_norm"].last() == 1.5
    assert series["tokens"].last() == 128 and series["loss"].step.tolist() == [7]
