"""`fw.system_metrics`: the current run's system-metrics sampler (`sysmetrics`).

A module of its own so that `sysmetrics` never imports `api` (and `api.init` may start a
sampler without an import circle)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import sysmetrics

__all__ = ["system_metrics"]


def system_metrics(interval: float = 10.0, sample_every: float = 1.0, *,
                   gpus: Iterable[int] | str | None = None, run: Any = None,
                   nvml: Any = "auto") -> sysmetrics.SystemSampler | None:
    """Sample system metrics for `run` (default: the current run) until it finishes:
    means of `sample_every`-second readings logged every `interval` seconds under
    `system/` (needs psutil: the `[system]` extra). `gpus`: "all" or NVML indices,
    overriding the visible-device rule. Replaces the run's earlier sampler; None under
    `fw.debug(True)` or on a rank that does not record."""
    if run is None:
        from .api import active_run

        run = active_run()
        if run is None:
            return None
    return sysmetrics.start(run, interval, sample_every, gpus=gpus, nvml=nvml)
