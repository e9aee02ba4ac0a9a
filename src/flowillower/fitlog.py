"""fitlog's function names over the flowillower store: `import flowillower.fitlog as fitlog`.

A fitlog user changes one import line. Differences that are on purpose: the code is
snapshotted without touching your `.git` (fitlog renames it), and any branch works.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import random
from typing import Any

from . import api

_log_dir: str | None = None


def set_log_dir(log_dir: str, new_log: bool = False) -> None:
    """Where runs are stored (fitlog: the logs folder). `new_log` starts a fresh run."""
    global _log_dir
    _log_dir = str(log_dir)
    if new_log:
        api.end_current_run()
    api.set_defaults(dir=_log_dir)


def get_log_dir() -> str | None:
    """The store directory set with `set_log_dir` (None: the default location)."""
    return _log_dir


def _run():
    if api.is_debug():
        return None
    if api.open_run() is None:
        api.init(dir=_log_dir)
    return api.active_run()


def commit(file: str | None = None, fit_msg: str | None = None) -> None:
    """fitlog commits the code here; flowillower snapshots it when the run starts."""
    run = _run()
    if run is not None and fit_msg:
        run.notes = fit_msg


def _flatten(value: Any, name: str | None) -> dict[str, Any]:
    """fitlog's nesting: {'dev': {'acc': 1}} under name 'metric' -> 'dev-acc'."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            full = f"{name}-{key}" if name else str(key)
            flat.update(_flatten(inner, full) if isinstance(inner, dict) else {full: inner})
        return flat
    if name is None:
        raise ValueError("a plain value needs a name: add_metric(0.9, step, name='acc')")
    return {name: value}


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "numel", lambda: 1)() == 1 else value


def add_metric(value: Any, step: int, name: str | None = None, epoch: int | None = None
               ) -> None:
    """A metric at a step (dict values nest as `a-b`)."""
    run = _run()
    if run is None:
        return
    values = {k: _scalar(v) for k, v in _flatten(value, name).items()}
    if epoch is not None:
        values["epoch"] = epoch
    run.log_metrics(values, step)


def add_loss(value: Any, step: int, name: str | None = None, epoch: int | None = None) -> None:
    """A loss at a step; stored like any metric (named `loss` when unnamed)."""
    add_metric(value, step, name or ("loss" if not isinstance(value, dict) else None), epoch)


def add_best_metric(value: Any, name: str | None = None) -> None:
    """The best value of a metric, kept as run-level `best-<name>`."""
    run = _run()
    if run is not None:
        flat = _flatten(value, name)
        run.record_args({f"best-{k}": _scalar(v) for k, v in flat.items()})


def _hyper_dict(value: Any, name: str | None) -> dict[str, Any]:
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, configparser.ConfigParser):
        return {f"{s}-{k}": v for s in value.sections() for k, v in value[s].items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return _flatten(value, None)
    return _flatten(value, name)


def add_hyper(value: Any, name: str | None = None) -> None:
    """Hyper-parameters: a value with a name, or a dict / Namespace / ConfigParser /
    dataclass."""
    run = _run()
    if run is not None:
        run.record_args(_hyper_dict(value, name))


def add_hyper_in_file(file_path: str) -> None:
    """Hyper-parameters from the lines between two `#####hyper` markers of a file."""
    lines, inside = {}, False
    with open(file_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip().startswith("#####hyper"):
                inside = not inside
                continue
            if inside and "=" in line and not line.strip().startswith("#"):
                key, _, raw = line.partition("=")
                lines[key.strip()] = raw.split("#")[0].strip()
    add_hyper(lines)


def add_other(value: Any, name: str | None = None) -> None:
    """Anything else worth keeping with the run (run-level)."""
    run = _run()
    if run is not None:
        run.record_args({k: _scalar(v) for k, v in _flatten(value, name).items()})


def add_progress(total_steps: int) -> None:
    """The planned number of steps (shown as progress)."""
    run = _run()
    if run is not None:
        run.record_args({"total_steps": int(total_steps)})


def set_rng_seed(rng_seed: int | None = None, random_: bool = True, numpy: bool = True,
                 pytorch: bool = True, deterministic: bool = True, **legacy: Any) -> int:
    """Seed python, numpy and torch (those installed) and record the seed."""
    seed = rng_seed if rng_seed is not None else int.from_bytes(os.urandom(4), "little") % 10**8
    use_random = legacy.pop("random", random_)
    if use_random:
        random.seed(seed)
    if numpy:
        try:
            import numpy as np

            np.random.seed(seed)
        except ImportError:
            pass
    if pytorch:
        try:
            import torch

            torch.manual_seed(seed)
            if deterministic:
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
        except ImportError:
            pass
    os.environ["FITLOG_RNG_SEED"] = str(seed)
    run = _run()
    if run is not None:
        run.record_args({"rng_seed": seed})
    return seed


def finish(status: int = 0, send_to_bot: str | None = None) -> None:
    """End the run: status 0 = success, 1 = failed; `send_to_bot` is a webhook URL."""
    run = api.open_run()
    if run is not None:
        run.finish("success" if status == 0 else "failed", send_to_bot)


def debug(flag: bool = True) -> None:
    """Turn every call into a no-op."""
    api.debug(flag)


__all__ = ["set_log_dir", "get_log_dir", "commit", "add_metric", "add_loss", "add_best_metric",
           "add_hyper", "add_hyper_in_file", "add_other", "add_progress", "set_rng_seed",
           "finish", "debug"]
