"""Choosing where replay tasks run: `--executor`, `fw.replay(executor=...)`, or a lab-wide
default in `$FLOWILLOWER_REPLAY_EXECUTOR` (`local`, `ray`, `ray=HOST:PORT`, `slurm`)."""

from __future__ import annotations

import os
from collections.abc import Callable

from .executor import Executor, LocalExecutor

EXECUTOR_ENV = "FLOWILLOWER_REPLAY_EXECUTOR"  # a lab-wide default: local, ray[=ADDRESS]


def make_executor(kind: str | None = "local", workers: int | None = 1,
                  echo: Callable[[str], None] | None = None) -> Executor:
    """The executor named `kind`: "local", "ray" (the cluster `ray start` made on this
    machine, or $RAY_ADDRESS), "ray=HOST:PORT", or "slurm[=FOLDER]" (submitit jobs; the
    folder on the cluster's shared disk). None: `$FLOWILLOWER_REPLAY_EXECUTOR`, else
    local. `workers` None: 1 locally, every CPU of a Ray cluster, 8 Slurm jobs."""
    if kind is None:
        kind = os.environ.get(EXECUTOR_ENV, "").strip() or "local"
    name, _, address = kind.partition("=")
    name = name.strip().lower()
    if name == "local" and not address:
        return LocalExecutor(workers or 1)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(address.strip() or None, workers, echo=echo)
    if name == "slurm":
        from .slurm_executor import SlurmExecutor

        return SlurmExecutor(address.strip() or None, workers, echo=echo)
    raise ValueError(f"unknown executor {kind!r}; available: local, ray, ray=HOST:PORT, "
                     "slurm, slurm=SUBMITIT_FOLDER")
