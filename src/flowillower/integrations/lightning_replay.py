"""`FlowillowerCheckpoint`: Lightning runs that a hindsight replay skips through.

    from flowillower.integrations.lightning import FlowillowerCheckpoint, FlowillowerLogger
    trainer = Trainer(logger=FlowillowerLogger(), callbacks=[FlowillowerCheckpoint()])

While training, the callback captures the trainer's state (`lightning_state.py`) where
each epoch's last training batch has run. In a replay worker (`fw.replay` re-executes
the recorded script) it makes Lightning skip the training batches of every captured
epoch: instead of the first batch it restores that capture, and Lightning goes on from
there as it did originally (validation, `on_train_epoch_end`, the LR schedulers, the next
epoch). A statement added to an epoch-level hook therefore sees exactly the state it would
have seen, and the values equal a fresh run of the edited script, without its training.

Batches are only skipped when every statement being replayed sits in an epoch-level hook
(`EPOCH_HOOKS`) or outside any function; one in `training_step` (or any other function:
a helper may be called per batch) gets the whole run re-executed. Lightning's loops have
no public hook to skip a whole epoch (`on_train_batch_start` returning -1 also skips that
epoch's validation), so the callback wraps two methods of the trainer's training-epoch
loop while `fit` runs; tested with Lightning 2.x. See docs/integrations/lightning.md.
"""

from __future__ import annotations

import ast
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .. import api
from ..hindsight import session
from ..hindsight.callback_captures import innermost_function
from ..hindsight.capture_budget import free_floor
from ..hindsight.ckpt_files import MANIFEST, BackgroundWriter, WriteJob, torch_module
from ..hindsight.state import copies_landed, tree_stats
from ..hindsight.syntax import COMPOUND, fw_aliases, logged_names, walk_statements
from ..procfs import process_start_time
from ..run import Run
from ..sizes import parse_size
from . import lightning_state as state

try:  # the unified package first, then the standalone one
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on what the user installed
    from pytorch_lightning import Callback  # type: ignore[no-redef]

# Hooks that run once per epoch or outside the training batches: a statement there reads
# state the captures hold. Anything else may run per batch.
EPOCH_HOOKS = frozenset({
    "__init__", "setup", "teardown", "configure_optimizers", "configure_callbacks",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
    "on_train_epoch_start", "on_train_epoch_end",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "validation_step", "on_validation_batch_start",
    "on_validation_batch_end", "on_validation_model_eval", "on_validation_model_train",
    "on_save_checkpoint", "on_test_start", "on_test_end", "test_step",
    "on_test_epoch_start", "on_test_epoch_end",
})


# What a replay worker does with the captures, in the planner's words (the run's manifest
# carries it: hindsight/callback_captures.py reads it without importing Lightning).
REPLAY_DESCRIPTION = {
    "by": "FlowillowerCheckpoint", "loop": "epoch", "inner": "step",
    "skips": "training batches", "per": "training batch",
    "unless": "a replayed statement may run per training batch (in training_step, a batch "
              "hook or a helper function rather than an epoch-level hook), or the replayed "
              "module, optimizers or schedulers differ from the recorded ones",
    "hooks": sorted(EPOCH_HOOKS),
}


def batch_level_statements(source: str, present: Any) -> list[str]:
    """Statements logging names the original run lacks (`present(names)` says which it
    has) that may run per training batch: "line N in f()" for each."""
    tree = ast.parse(source)
    aliases = fw_aliases(tree)
    found = []
    for stmt, loc in walk_statements(tree.body):
        if isinstance(stmt, COMPOUND):
            continue
        names = logged_names(stmt, aliases)
        if names:
            found.append((names, stmt.lineno, innermost_function(loc)))
    have = present({n for names, _l, _f in found for n in names})
    return [f"line {line} in {func}()" for names, line, func in found
            if set(names) - have and func is not None and func not in EPOCH_HOOKS]


def _present_in(run_dir: Path) -> Any:
    def present(names: set[str]) -> set[str]:
        from ..store.reader import RunReader

        return set(RunReader(run_dir).load(sorted(names)).series) if names else set()

    return present


def _say(text: str) -> None:
    print(f"flowillower: {text}", file=sys.stderr, flush=True)


class FlowillowerCheckpoint(Callback):
    """Capture a Lightning run's state at each epoch's end of training (every `every`-th
    epoch) so hindsight replays skip the training; `max_disk` caps the bytes written (a
    number or a size like ``"5GB"``). Rank zero only; off under `fw.debug(True)`."""

    def __init__(self, every: int = 1, max_disk: int | str | None = None) -> None:
        if every < 1:
            raise ValueError("every must be a positive number of epochs")
        self.every = every
        self.max_disk = None if max_disk is None else parse_size(max_disk)
        self.stopped: str | None = None
        self.captured: list[int] = []  # epochs captured (recording) or skipped (replay)
        self._run: Run | None = None
        self._writer: BackgroundWriter | None = None
        self._store: state.LightningCheckpoints | None = None
        self._replay: Any = None
        self._objects: dict[str, Any] = {}
        self._kinds: dict[str, str] = {}
        self._loop: Any = None
        self._pending: int | None = None
        self._seq = 0
        self._mid_validation: set[int] = set()
        self._share: tuple[int, int, bool] | None = None  # epochs [first, stop), last?

    # -- which run -------------------------------------------------------------------------
    def _find_run(self, trainer: Any) -> Run | None:
        if api.is_debug():
            return None
        for logger in trainer.loggers:
            # FlowillowerLogger, named rather than imported (lightning.py imports us).
            if type(logger).__module__ == f"{__package__}.lightning":
                run = logger.experiment
                return run if isinstance(run, Run) else None
        return api.open_run()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        run = self._find_run(trainer)
        if run is None or run.status is not None:
            return
        self._run = run
        self._objects = state.trainer_objects(trainer, pl_module)
        self._kinds = state.object_kinds(self._objects)
        replay = session.current()
        if replay is not None:
            self._start_replay(trainer, replay)
        else:
            self._start_recording(run)
        if self._writer is not None or self._store is not None:
            self._wrap(trainer, pl_module)

    # -- recording -------------------------------------------------------------------------
    def _start_recording(self, run: Run) -> None:
        run.ensure_on_disk()
        directory = state.checkpoint_dir(run.dir)
        if (directory / MANIFEST).exists():
            return  # a second fit in this run: replays follow the first one
        self._writer = BackgroundWriter(directory, state.ledger_file(run.dir))
        torch = torch_module()
        package = sys.modules.get("lightning") or sys.modules.get("pytorch_lightning")
        started = process_start_time()  # what a replay pays before training starts
        self._note({"type": "meta", "format": state.FORMAT, "objects": self._kinds,
                    "replay": REPLAY_DESCRIPTION, "every": self.every, "time": time.time(),
                    "setup_s": None if started is None else round(time.time() - started, 4),
                    "lightning": getattr(package, "__version__", None),
                    "torch_threads": torch.get_num_threads() if torch else None})

    def _note(self, entry: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.submit(WriteJob(-1, entry, None, 0.0))

    def _batches_done(self, trainer: Any) -> bool:
        progress = self._loop.batch_progress
        return bool(progress.is_last_batch
                    or progress.current.ready >= trainer.num_training_batches)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        # Validation inside an epoch (val_check_interval < 1): that epoch's batches and
        # validations interleave, so it cannot be skipped as one block.
        if self._loop is None or trainer.sanity_checking or self._batches_done(trainer):
            return
        epoch = trainer.current_epoch
        if epoch not in self._mid_validation:
            self._mid_validation.add(epoch)
            if self._writer is not None:
                self._note({"type": "mid_validation", "i": epoch})

    def _capture(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        writer, run = self._writer, self._run
        assert writer is not None and run is not None
        if (self.stopped or epoch % self.every or epoch in self._mid_validation
                or writer.error is not None):
            return
        # At most two captures wait in memory for the writer: then training waits.
        writer.wait_until(lambda: writer.held() < 2)
        t0 = time.perf_counter()
        host: list[Any] = []
        try:
            tree = state.capture(trainer, pl_module, self._objects, self._kinds,
                                 run.loop_position().loop_totals, host)
        except Exception as exc:  # state that cannot be copied must never stop training
            tree, size = None, 0
            reason: str | None = f"its state could not be captured ({type(exc).__name__}: {exc})"
        else:
            size = tree_stats(tree)[0]
            reason = self._disk_refusal(size)
        if reason is not None or tree is None:
            self.stopped = reason
            self._note({"type": "stopped", "i": epoch, "reason": reason})
            warnings.warn(f"flowillower: Lightning checkpoints stopped at epoch {epoch}: "
                          f"{reason}; replays re-execute the epochs after it.", stacklevel=2)
            return
        seq, self._seq = self._seq, self._seq + 1
        writer.submit(WriteJob(seq, {"type": "ckpt", "seq": seq, "kind": "batches_end",
                                     "i": epoch, "m": 0}, tree, time.perf_counter() - t0,
                               size, copies_landed(host) if host else None))
        self.captured.append(epoch)

    def _disk_refusal(self, size: int) -> str | None:
        writer = self._writer
        assert writer is not None and self._run is not None
        written, _done, held = writer.accounted()
        if self.max_disk is not None and written + held + size > self.max_disk:
            return f"its checkpoints would pass max_disk={self.max_disk:,} bytes"
        try:
            usage = shutil.disk_usage(self._run.dir)
        except OSError:
            return None
        if usage.free - writer.held_bytes - size < free_floor(usage.total):
            return f"the disk would have less than {free_floor(usage.total):,} bytes free"
        return None

    # -- replaying -------------------------------------------------------------------------
    def _start_replay(self, trainer: Any, replay: Any) -> None:
        run_dir = Path(replay.plan["run_dir"])
        store = state.LightningCheckpoints(run_dir)
        if replay.plan.get("callback_loop"):  # one worker's share of the run's epochs
            self._start_share(trainer, store, replay)
            return
        if not store.exists:
            return
        why = self._why_not_skip(store, replay, run_dir)
        if why:
            _say(f"Lightning replay: every epoch is trained again ({why})")
            return
        self._store, self._replay = store, replay
        epochs = sorted(store.skippable())
        _say(f"Lightning replay: the training batches of {len(epochs)} epoch(s) are skipped "
             f"(epochs {', '.join(map(str, epochs))}), their end state restored from "
             "the run's checkpoints")

    def _start_share(self, trainer: Any, store: state.LightningCheckpoints | None,
                     replay: Any) -> None:
        """Train epochs [first, stop) only: restore the capture of epoch first-1 where
        epoch 0's batches would start, stop after stop-1 unless this worker ends the run
        (its values outside those epochs are the driver's to drop: hindsight/groups.py)."""
        plan = replay.plan
        first, stop, last = int(plan["first"]), int(plan["stop"]), bool(plan["post_loop"])
        what = f"this worker's epochs {first}..{stop - 1}"
        assert store is not None
        extra = ""
        if first > 0 and (not store.exists or (store.meta or {}).get("objects") != self._kinds):
            # No capture reached this worker (an executor that ships none), or the code's
            # trainer differs from the recorded one: train from the start instead (the
            # same values; the driver drops those of the earlier epochs).
            why = ("no capture reached this worker" if not store.exists else "the trainer's "
                   "optimizers, schedulers or module differ from what the run recorded")
            extra, store = (f"; {why}, so it trains epochs 0..{first - 1} first (their "
                            "values are dropped)"), None
        elif first > 0 and first - 1 not in store.skippable():
            raise RuntimeError(f"flowillower: {what} start from the capture of epoch "
                               f"{first - 1}, which this machine has no usable record of")
        self._store, self._replay, self._share = store, replay, (first, stop, last)
        if not last and (trainer.min_epochs or 0) > stop:
            extra += (f"; min_epochs={trainer.min_epochs} keeps it training past epoch "
                     f"{stop - 1} (those epochs' values are dropped)")
        _say(f"Lightning replay: {what} are trained"
             + (f", from the capture of epoch {first - 1}" if first and store else "")
             + ("" if last else ", then it stops") + extra)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._share is None or self._replay is None:
            return
        first, stop, last = self._share
        epoch = trainer.current_epoch
        if first <= epoch and (last or epoch < stop):
            self._replay.mark(f"iter {epoch}")  # the driver's progress and check
        if not last and epoch >= stop - 1:
            trainer.should_stop = True

    def _why_not_skip(self, store: state.LightningCheckpoints, replay: Any,
                      run_dir: Path) -> str | None:
        if store.meta.get("objects") != self._kinds:
            return ("the trainer's optimizers, schedulers or module differ from what the "
                    "run recorded")
        if not Path(replay.plan.get("scratch", "")).name.startswith("attempt0"):
            return "the replay skipping them failed"  # the driver's retry: train for real
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        if not main:
            return "the replayed script could not be read"
        try:
            source = Path(main).read_text(encoding="utf-8")
            batch_level = batch_level_statements(source, _present_in(run_dir))
        except (OSError, SyntaxError, ValueError) as exc:
            return f"the replayed script could not be read: {exc}"
        if batch_level:
            return ("the statement(s) at " + ", ".join(batch_level)
                    + " may run at every training batch")
        if not store.skippable():
            return "no epoch was captured"
        return None

    def _skip_now(self, trainer: Any) -> bool:
        assert self._store is not None
        epoch = trainer.current_epoch
        if self._loop.batch_progress.current.ready != 0:
            return False
        if self._share is not None:  # only to jump to the share's first epoch
            return epoch == 0 and self._share[0] > 0 and not self.captured
        return epoch in self._store.skippable()

    def _restore(self, trainer: Any, pl_module: Any, epoch: int) -> None:
        assert self._store is not None and self._run is not None
        if not self.captured and self._replay is not None and self._share is None:
            # Marked before the first skip: a crash after it makes the driver retry
            # with every epoch trained.
            self._replay.mark("skipped")
        totals = state.restore(trainer, pl_module, self._objects, self._kinds,
                               self._store.load(epoch))
        # Loop totals only: the thread's current step belongs to the open epoch.
        position = self._run.loop_position()
        self._run.restore_loop_position(position._replace(loop_totals=totals))
        self.captured.append(epoch)

    # -- the wrapped loop methods -------------------------------------------------------------
    def _wrap(self, trainer: Any, pl_module: Any) -> None:
        loop = trainer.fit_loop.epoch_loop
        real_advance, real_end = loop.advance, loop.on_advance_end
        self._loop = loop

        def advance(data_fetcher: Any, *args: Any, **kwargs: Any) -> Any:
            if self._store is not None and self._skip_now(trainer):
                share = self._share
                self._pending = share[0] - 1 if share else trainer.current_epoch
                return None
            return real_advance(data_fetcher, *args, **kwargs)

        def on_advance_end(data_fetcher: Any, *args: Any, **kwargs: Any) -> Any:
            if self._pending is not None:
                epoch, self._pending = self._pending, None
                self._restore(trainer, pl_module, epoch)
            elif self._writer is not None and self._batches_done(trainer):
                self._capture(trainer, pl_module)
            return real_end(data_fetcher, *args, **kwargs)

        loop.advance, loop.on_advance_end = advance, on_advance_end

    def _unwrap(self) -> None:
        if self._loop is not None:
            for name in ("advance", "on_advance_end"):
                vars(self._loop).pop(name, None)
            self._loop = None

    def _close(self) -> None:
        self._unwrap()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.submit(WriteJob(-1, {"type": "end", "n": len(self.captured)}, None, 0.0))
            writer.close()
            if writer.error is not None:
                warnings.warn(f"flowillower: Lightning checkpoints could not be written "
                              f"({writer.error!r}); replays will train every epoch again",
                              stacklevel=3)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing of it belongs in Lightning's own checkpoints
