"""What `FlowillowerCheckpoint` captures of a Lightning trainer, and reading it back.

A capture is taken where a training epoch's last batch has run and nothing after it has
(validation, `on_train_epoch_end`, the epoch's LR steps): the LightningModule (weights,
gradients, train/eval flags and its plain attributes such as lists of step outputs), the
optimizers, the LR schedulers, the precision plugin (a GradScaler's state), Lightning's
loop progress (`global_step`, batch counters), the epoch's accumulated logged values
(what `trainer.callback_metrics` reduces at the epoch's end) and every global RNG. A
replay restores exactly that at exactly that point, so the code after the batches runs
on the state it saw originally.

Files live in `<run>/checkpoints/lightning/` (local only, like every checkpoint: never
pushed, freed by `flowillower gc --checkpoints`), written by the same background writer
as `fw.checkpointing`'s, with their digests in `<store>/local/checkpoints/<run
id>.lightning.jsonl`; nothing is loaded unless its bytes are what this machine wrote.
The manifest is read by `hindsight/callback_captures.py` (shared with the replay planner,
which imports neither Lightning nor this module); loading a capture happens here.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..hindsight import ledger
from ..hindsight.callback_captures import CapturedIterations
from ..hindsight.ckpt_files import CKPT_DIRNAME, BlobRef
from ..hindsight.ckpt_store import load_checkpoint_file
from ..hindsight.state import (
    capture_object,
    capture_rng,
    copy_tree,
    object_kind,
    restore_object,
    restore_rng,
)

LIGHTNING_DIR = "lightning"  # under the run's checkpoints/ folder
FORMAT = "lightning-1"


def checkpoint_dir(run_dir: Path) -> Path:
    """`<run>/checkpoints/lightning`."""
    return Path(run_dir) / CKPT_DIRNAME / LIGHTNING_DIR


def ledger_file(run_dir: Path) -> Path:
    """The digest record of a run's Lightning checkpoints (beside `fw.checkpointing`'s,
    never mixed with it: both writers number their files from 0)."""
    run_dir = Path(run_dir)
    return ledger.ledger_path(run_dir.parent.parent, f"{run_dir.name}.{LIGHTNING_DIR}")


def trainer_objects(trainer: Any, module: Any) -> dict[str, Any]:
    """The live objects a capture copies and a replay restores in place."""
    objects: dict[str, Any] = {"module": module}
    for i, optimizer in enumerate(trainer.optimizers):
        objects[f"optimizer{i}"] = optimizer
    for i, config in enumerate(trainer.lr_scheduler_configs):
        objects[f"scheduler{i}"] = config.scheduler
    objects["precision"] = trainer.precision_plugin
    return objects


def object_kinds(objects: dict[str, Any]) -> dict[str, str]:
    return {name: object_kind(obj) for name, obj in objects.items()}


def _live(trainer: Any, module: Any) -> dict[str, Any]:
    """Live objects a pickled state may point at (a logged value's sync function is a
    method of the strategy, which holds the model): pickled as references, never copied."""
    return {"trainer": trainer, "strategy": trainer.strategy, "module": module}


def _dumps(value: Any, live: dict[str, Any]) -> bytes:
    ids = {id(obj): key for key, obj in live.items()}

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> str | None:
            return ids.get(id(obj))

    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buf.getvalue()


def _loads(data: bytes, live: dict[str, Any]) -> Any:
    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return live[pid]

    return _Unpickler(io.BytesIO(data)).load()


def _user_attributes(module: Any, live: dict[str, Any]) -> bytes:
    """The module's own plain attributes (`self.outputs = []`...), each pickled on its own
    so one that cannot be (a file handle) does not stop the others."""
    import torch

    out: dict[str, bytes] = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training" or callable(value) \
                or isinstance(value, torch.nn.Module):
            continue
        try:
            out[key] = _dumps(value, live)
        except Exception:  # not picklable: not restorable either
            continue
    return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)


def _restore_attributes(module: Any, data: bytes, live: dict[str, Any]) -> None:
    for key, raw in pickle.loads(data).items():
        value = _loads(raw, live)
        current = getattr(module, key, None)
        if isinstance(current, list) and isinstance(value, list):
            current[:] = value  # in place: other objects may hold the same list
        elif isinstance(current, dict) and isinstance(value, dict):
            current.clear()
            current.update(value)
        else:
            setattr(module, key, value)


def _results(trainer: Any) -> dict[str, Any] | None:
    """The epoch's accumulated `self.log(..., on_epoch=True)` values (metric objects by
    name), reduced into `trainer.callback_metrics` when the epoch ends."""
    results = getattr(trainer.fit_loop.epoch_loop, "_results", None)
    return results if isinstance(results, dict) else None


def capture(trainer: Any, module: Any, objects: dict[str, Any], kinds: dict[str, str],
            loop_totals: dict[tuple[str, ...], int], host: list[Any]) -> dict[str, Any]:
    """An independent copy of the trainer's state right now (device tensors are copied
    to host memory and appended to `host`: see `state.copy_tree`)."""
    live = _live(trainer, module)
    results = _results(trainer)
    return {
        "objects": {name: capture_object(kinds[name], obj, host)
                    for name, obj in objects.items()},
        "attrs": _user_attributes(module, live),
        "results": _dumps(dict(results), live) if results is not None else None,
        "loops": copy_tree(trainer.fit_loop.state_dict(), host),
        "rng": capture_rng(),
        "totals": [[list(path), n] for path, n in loop_totals.items()],
    }


def _restore_loops(fit_loop: Any, state: dict[str, Any]) -> None:
    """Put Lightning's progress counters back, without `load_state_dict`'s restart mode
    (which would make the loops behave as if resuming a saved checkpoint)."""
    for key, value in state.items():
        *path, last = key.split(".")
        if last == "state_dict":
            if path == ["epoch_loop"]:
                fit_loop.epoch_loop.on_load_checkpoint(value)  # the logger's step count
            continue
        target = fit_loop
        for part in [*path, last]:
            target = getattr(target, part, None)
        if target is not None and callable(getattr(target, "load_state_dict", None)):
            target.load_state_dict(value)


def restore(trainer: Any, module: Any, objects: dict[str, Any], kinds: dict[str, str],
            tree: dict[str, Any]) -> dict[tuple[str, ...], int]:
    """Put a `capture` back into the live trainer; returns the loop totals it recorded."""
    for name, state in tree["objects"].items():
        restore_object(kinds[name], objects[name], state)
    live = _live(trainer, module)
    _restore_attributes(module, tree["attrs"], live)
    results = _results(trainer)
    if results is not None and tree.get("results") is not None:
        results.clear()
        results.update(_loads(tree["results"], live))
    _restore_loops(trainer.fit_loop, tree["loops"])
    restore_rng(tree["rng"])
    return {tuple(path): n for path, n in tree["totals"]}


class LightningCheckpoints(CapturedIterations):
    """A run's Lightning captures: the manifest (read by `CapturedIterations`, which the
    replay planner shares), and verified lazy loading."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, LIGHTNING_DIR)
        self._cache: dict[int, Any] = {}

    @property
    def epochs(self) -> dict[int, dict[str, Any]]:
        """Epoch -> its capture's manifest line."""
        return self.entries

    @property
    def mid_validation(self) -> set[int]:
        """Epochs validated before their last batch (never skipped)."""
        return self.unskippable

    def _file(self, seq: int) -> Any:
        if seq not in self._cache:
            name = self.files[seq]
            self._cache[seq] = load_checkpoint_file(self.dir / name,
                                                    self.digests.get(name))[0]
        return self._cache[seq]

    def load(self, epoch: int) -> dict[str, Any]:
        """The state captured at the end of `epoch`'s batches (tensors shared with
        earlier captures resolved); earlier files no longer needed are forgotten."""
        entry = self.epochs[epoch]
        used = {int(entry["seq"])}

        def resolve(x: Any) -> Any:
            if isinstance(x, BlobRef):
                used.add(x.seq)
                return self._file(x.seq)["blobs"][x.key]
            if isinstance(x, dict):
                return {k: resolve(v) for k, v in x.items()}
            if isinstance(x, list):
                return [resolve(v) for v in x]
            if isinstance(x, tuple) and not hasattr(x, "_fields"):
                return tuple(resolve(v) for v in x)
            return x

        tree = resolve(self._file(int(entry["seq"]))["tree"])
        for seq in list(self._cache):
            if seq not in used:
                del self._cache[seq]
        return tree
