"""PyTorch Lightning: `FlowillowerLogger`, a Lightning `Logger` writing into a flowillower run.

    from flowillower.integrations.lightning import FlowillowerLogger
    trainer = Trainer(logger=FlowillowerLogger(project="mnist"), max_epochs=3)

Lightning's epochs and steps become flowillower loop coordinates: the logger adds a small
callback to the trainer (the `Logger` API has no loop hooks) that keeps the training
thread inside `run.iteration("epoch", e)` and `run.iteration("step", s)` while Lightning
trains, so the logger's values, `fw.log` calls inside the `LightningModule` and `fw.watch`
statistics all carry `epoch` and `step`. Imports `lightning.pytorch` (or the older
`pytorch_lightning`) when this module is imported, never before. See
docs/integrations/lightning.md.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from .. import api
from ..run import Run

try:  # the unified package first, then the standalone one
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # pragma: no cover - depends on what the user installed
    from pytorch_lightning import Callback  # type: ignore[no-redef]
    from pytorch_lightning.loggers.logger import (  # type: ignore[no-redef]
        Logger,
        rank_zero_experiment,
    )
    from pytorch_lightning.utilities import rank_zero_only  # type: ignore[no-redef]

# Lightning's finalize statuses -> a run's final status. "success" is handled apart (the
# run stays open for a later `trainer.test`), "finished" comes from a signal handler.
_FINAL = {"failed": "failed", "finished": "killed", "interrupted": "killed",
          "killed": "killed"}


class LoopCoordinates(Callback):
    """Keeps the training thread inside `epoch` / `step` iterations of `run` while
    Lightning trains. An iteration stays open until the next one starts (values Lightning
    logs after `on_train_epoch_end`, validation's included, still belong to that epoch);
    a validation pass and the epoch's end close the step iteration, so their values are
    keyed by epoch only."""

    def __init__(self, logger: FlowillowerLogger) -> None:
        self._logger = logger
        self._epoch: AbstractContextManager[Any] | None = None
        self._step: AbstractContextManager[Any] | None = None

    def _enter(self, name: str, index: int) -> AbstractContextManager[Any] | None:
        if api.is_debug():
            return None
        run = self._logger.experiment
        if not isinstance(run, Run) or run.status is not None:
            return None
        scope = run.iteration(name, index)
        scope.__enter__()
        return scope

    def close_step(self) -> None:
        """Leave the open `step` iteration (its wall time is recorded as `time/step`)."""
        if self._step is not None:
            scope, self._step = self._step, None
            scope.__exit__(None, None, None)

    def close(self) -> None:
        """Leave both iterations (end of fit, or the run is ending)."""
        self.close_step()
        if self._epoch is not None:
            scope, self._epoch = self._epoch, None
            scope.__exit__(None, None, None)

    @rank_zero_only
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.close()
        self._epoch = self._enter("epoch", trainer.current_epoch)

    @rank_zero_only
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        self.close_step()
        if self._epoch is not None:
            # Lightning's own step (optimizer steps taken): the x-axis its logger uses.
            self._step = self._enter("step", trainer.global_step)

    @rank_zero_only
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self.close_step()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Before the module's own hook: what it logs belongs to the epoch, not a step.
        self.close_step()

    @rank_zero_only
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.close()


def _params_dict(params: Any) -> Any:
    """What `run.config` takes: Lightning hands over a dict (`AttributeDict`), a
    Namespace, or a dataclass / OmegaConf object; values inside may be any of them."""
    if isinstance(params, argparse.Namespace):
        return dict(vars(params))
    if isinstance(params, Mapping):
        return {str(k): v for k, v in params.items()}
    return params


class FlowillowerLogger(Logger):
    """A Lightning `Logger` recording into a flowillower run (rank zero only).

    `project`, `name`, `tags`, `notes`, `dir`: as for `fw.init`, which starts the run on
    first use, unless `run=` is given or a run is already open in this process (then
    that one is used). `watch=True` (or a dict of `fw.watch` options) records model
    statistics at each training step; `log_graph=True` records the model with
    `fw.log_model`, using the module's `example_input_array` when it has one.
    `finalize("success")` flushes and leaves the run open (a `trainer.test` after
    `trainer.fit` logs into the same run); the run ends with the process, `fw.finish()`
    or `logger.finish()`. A failed or interrupted trainer ends it at once as
    `failed` / `killed`.
    """

    def __init__(self, project: str | None = None, name: str | None = None, *,
                 tags: list[str] | None = None, notes: str | None = None,
                 dir: str | os.PathLike[str] | None = None, run: Run | None = None,
                 watch: bool | Mapping[str, Any] = False, log_graph: bool = True) -> None:
        super().__init__()
        self._init = dict(project=project, name=name, tags=tags, notes=notes, dir=dir)
        self._run = run
        self._watch = watch
        self._log_graph = log_graph
        self._watched: set[int] = set()
        self._graphed: set[int] = set()
        # The callback keeping the trainer's epoch / step as loop coordinates.
        self.coordinates = LoopCoordinates(self)

    def __getstate__(self) -> dict[str, Any]:
        # Strategies that spawn processes pickle the trainer with its loggers: a run (its
        # threads, locks, files) belongs to the process that started it, so the copy
        # starts its own on first use, on rank zero only.
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The project the run belongs to."""
        if api.is_debug():
            return str(self._init["project"] or "debug")
        run = self.experiment
        return run.project if isinstance(run, Run) else str(self._init["project"] or "")

    @property
    def version(self) -> str:
        """The run's id."""
        if api.is_debug():
            return "debug"
        run = self.experiment
        return run.id if isinstance(run, Run) else ""

    @property
    def save_dir(self) -> str | None:
        """None: Lightning then puts its checkpoints under the trainer's
        `default_root_dir` (`<root>/<project>/<run id>/checkpoints`), never inside the
        store, whose run folders are pushed."""
        return None

    @property
    @rank_zero_experiment
    def experiment(self) -> Run | Any:
        """The flowillower `Run` (on other ranks: Lightning's no-op stand-in; None under
        `fw.debug(True)`, which starts no run)."""
        if self._run is None:
            if api.is_debug():
                return None
            self._run = api.open_run() or api.init(**self._init)
        return self._run

    # -- logging -----------------------------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log Lightning's metrics at its step; its `epoch` entry is a coordinate (the
        loop callback's), not a metric."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        values = {k: v for k, v in metrics.items() if k != "epoch"}
        if values:
            self.experiment.log_metrics(values, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Record hyper-parameters, nested dicts / dataclasses / Namespaces / OmegaConf
        flattened to dotted names (`model.width`)."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        self.experiment.config(_params_dict(params))

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Lightning calls this as a stage starts: record the model once (`fw.log_model`),
        start `watch`, and plug the loop callback into the model's trainer."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        run = self.experiment
        self._attach(model)
        if self._watch and id(model) not in self._watched:
            self._watched.add(id(model))
            self._start_watch(run, model)
        if not self._log_graph or id(model) in self._graphed:
            return
        self._graphed.add(id(model))
        example = input_array if input_array is not None else getattr(
            model, "example_input_array", None)
        from ..model.api import log_model

        log_model(run, model, example)

    def _attach(self, model: Any) -> None:
        try:
            trainer = model.trainer
        except (AttributeError, RuntimeError):  # a module not attached to a trainer
            return
        if trainer is not None and self.coordinates not in trainer.callbacks:
            trainer.callbacks.append(self.coordinates)

    def _start_watch(self, run: Run, model: Any) -> None:
        from ..model.api import watch

        options = dict(self._watch) if isinstance(self._watch, Mapping) else {}

        def sink(stats: dict[str, Any], step: int) -> None:
            run.log_at_step(stats, step, role="watch")

        watch(model, run=run, sink=sink, **options)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Note each checkpoint Lightning saves (path, monitored score) as a run event."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        score = getattr(checkpoint_callback, "best_model_score", None)
        self.experiment.event(
            "checkpoint", path=str(getattr(checkpoint_callback, "last_model_path", "") or
                                   getattr(checkpoint_callback, "best_model_path", "")),
            best=str(getattr(checkpoint_callback, "best_model_path", "")),
            score=None if score is None else float(score))

    @rank_zero_only
    def save(self) -> None:
        """Persist everything logged so far."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        run = self.experiment
        if run.status is None:
            run.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """`success`: flush, the run stays open; `failed` and the like end the run."""
        if api.is_debug():  # fw.debug(True): nothing is recorded
            return
        self.coordinates.close()
        run = self.experiment
        if run.status is not None:
            return
        final = _FINAL.get(status)
        if final is None:
            run.flush()
        else:
            run.finish(final)

    def finish(self, status: str = "success") -> None:
        """End the run now (otherwise it ends with the process or `fw.finish()`)."""
        self.coordinates.close()
        if self._run is not None and isinstance(self._run, Run):
            self._run.finish(status)


# The replay callback lives in its own module; importable from here with the logger.
from .lightning_replay import FlowillowerCheckpoint  # noqa: E402

__all__ = ["FlowillowerCheckpoint", "FlowillowerLogger", "LoopCoordinates"]
