"""Hugging Face transformers: `FlowillowerCallback`, a `TrainerCallback` recording a run.

    from flowillower.integrations.transformers import FlowillowerCallback
    trainer = Trainer(model, args, train_dataset=..., callbacks=[FlowillowerCallback()])

(`report_to=` names only integrations transformers ships, so the callback is passed
explicitly.) The run starts at `on_train_begin` with the `TrainingArguments` and the model
config as args, records the model with an example batch, takes every `on_log` /
`on_evaluate` value at the trainer's global step, keyed by `epoch` / `step` loop
coordinates, and ends at `on_train_end`. Only the main process records. Imports
transformers when this module is imported, never before. See
docs/integrations/transformers.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from transformers import TrainerCallback

from .. import api
from ..run import Run

# Values of on_log that are bookkeeping, not metrics: the fractional epoch is a
# coordinate here.
_NOT_METRICS = {"epoch"}


def _numbers(values: Mapping[str, Any]) -> dict[str, float | int]:
    """The numbers of a logs / metrics dict (transformers may add strings)."""
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if key in _NOT_METRICS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = value  # NaN / inf too: a diverging loss is worth seeing
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            out[key] = float(value.item())  # a 0-d tensor or numpy scalar
    return out


def example_batch(dataloader: Any) -> dict[str, Any] | None:
    """One real batch built from the first example of the training set, without iterating
    the loader (that would draw from the shuffling RNG and change the training)."""
    dataset = getattr(dataloader, "dataset", None)
    collate = getattr(dataloader, "collate_fn", None)
    if dataset is None or collate is None:
        return None
    try:
        batch = collate([dataset[0]])
    except Exception:  # noqa: BLE001 - an odd dataset: record the module tree only
        return None
    return dict(batch) if isinstance(batch, Mapping) else None


class FlowillowerCallback(TrainerCallback):
    """Records a `transformers.Trainer` run into flowillower.

    `project`, `name`, `tags`, `notes`, `dir`: as for `fw.init` (the name defaults to
    `TrainingArguments.run_name` when one is set). A run already open in the process
    (`fw.init` before `trainer.train()`) or passed as `run=` is used instead. `log_model=False` skips the model graph; `finish=False` leaves the run open
    after training (an evaluation that follows then logs into it).
    """

    def __init__(self, project: str | None = None, name: str | None = None, *,
                 tags: list[str] | None = None, notes: str | None = None,
                 dir: str | os.PathLike[str] | None = None, run: Run | None = None,
                 log_model: bool = True, finish: bool = True) -> None:
        self._init = dict(project=project, name=name, tags=tags, notes=notes, dir=dir)
        self.run = run
        self._log_model = log_model
        self._finish = finish
        self._epoch: AbstractContextManager[Any] | None = None
        self._step: AbstractContextManager[Any] | None = None
        self._logged: tuple[int, frozenset[str]] | None = None
        self._logs: tuple[Any, bool] | None = None

    # -- the run -----------------------------------------------------------------------
    def _open(self, args: Any) -> Run | None:
        if api.is_debug() or not self._should_log(args):  # other processes record nothing
            return None
        if self.run is None or self.run.status is not None:
            self.run = api.open_run()
            if self.run is None:
                init = dict(self._init)
                if init["name"] is None and args.run_name and args.run_name != args.output_dir:
                    init["name"] = args.run_name
                self.run = api.init(**init)
        return self.run if self.run.status is None else None

    def _should_log(self, args: Any) -> bool:
        # A property that asks the distributed state each time: read once per arguments.
        if self._logs is None or self._logs[0] is not args:
            self._logs = (args, bool(getattr(args, "should_log", True)))
        return self._logs[1]

    def _live(self, args: Any) -> Run | None:
        run = self.run
        if run is None or run.status is not None or api.is_debug() or \
                not self._should_log(args):
            return None
        return run

    # -- loop coordinates --------------------------------------------------------------
    def _enter(self, run: Run, name: str, index: int) -> AbstractContextManager[Any]:
        scope = run.iteration(name, index)
        scope.__enter__()
        return scope

    def _close_step(self) -> None:
        if self._step is not None:
            scope, self._step = self._step, None
            scope.__exit__(None, None, None)

    def _close(self) -> None:
        self._close_step()
        if self._epoch is not None:
            scope, self._epoch = self._epoch, None
            scope.__exit__(None, None, None)

    # -- TrainerCallback ---------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Start (or join) the run; record the arguments, the model config, the model."""
        run = self._open(args)
        if run is None:
            return
        config: dict[str, Any] = {"args": args.to_dict()}
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model"] = model_config.to_dict()
        run.config(config)
        if self._log_model and model is not None:
            from ..model.api import log_model

            batch = example_batch(kwargs.get("train_dataloader"))
            if batch is not None:
                device = getattr(model, "device", None)
                batch = {k: v.to(device) if hasattr(v, "to") and device is not None else v
                         for k, v in batch.items()}
            log_model(run, model, None, kwargs=batch)

    def on_epoch_begin(self, args, state, control, **kwargs):
        run = self._live(args)
        if run is None:
            return
        self._close()
        # state.epoch is fractional and counts from 0: its integer part is the epoch.
        self._epoch = self._enter(run, "epoch", int(state.epoch or 0))

    def on_step_begin(self, args, state, control, **kwargs):
        run = self._live(args)
        if run is None or self._epoch is None:
            return
        self._close_step()
        # The step being taken, numbered as `on_log` will report it (global_step after
        # the update).
        self._step = self._enter(run, "step", state.global_step + 1)

    def on_epoch_end(self, args, state, control, **kwargs):
        # Values logged after the epoch's last step (an epoch-end evaluation) are keyed
        # by the epoch only.
        self._close_step()

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Every value the trainer logs (loss, learning rate, grad norm, eval metrics)."""
        run = self._live(args)
        values = _numbers(logs or {})
        if run is None or not values:
            return
        run.log_metrics(values, state.global_step)
        self._logged = (state.global_step, frozenset(values))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Evaluation metrics, unless `on_log` just recorded the same ones."""
        run = self._live(args)
        values = _numbers(metrics or {})
        if run is None or not values:
            return
        if self._logged == (state.global_step, frozenset(values)):
            return
        run.log_metrics(values, state.global_step)

    def on_save(self, args, state, control, **kwargs):
        """A checkpoint was written: persist the values so far, note where it went."""
        run = self._live(args)
        if run is None:
            return
        folder = os.path.abspath(os.path.join(args.output_dir,
                                              f"checkpoint-{state.global_step}"))
        run.event("checkpoint", path=folder, step=state.global_step)
        run.flush()

    def on_train_end(self, args, state, control, **kwargs):
        """Leave the loops and end the run (with `finish=False`: flush it only)."""
        self._close()
        run = self._live(args)
        if run is None:
            return
        if self._finish:
            run.finish()
        else:
            run.flush()
