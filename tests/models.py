"""Tiny torch models and a stand-in Run shared by the model tests (graph, watch, run).

Import with ``from models import ...`` (tests/ is on sys.path, as for conftest). Needs
torch: import it after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class FakeRun:
    """The Run methods model/api.py uses: write_json, log_metrics, on_step (+ `loop`).

    What it is given must be JSON-able, as a real run stores it: files are kept as
    their JSON round trip, metrics are checked with `json.dumps`.
    """

    def __init__(self) -> None:
        self.files: dict[str, Any] = {}
        self.metrics: list[tuple[dict, int | None]] = []
        self.hooks: list[Callable[[int], None]] = []

    def write_json(self, relpath: str, obj: Any) -> None:
        self.files[relpath] = json.loads(json.dumps(obj))

    def log_metrics(self, values: dict, step: int | None = None) -> None:
        json.dumps(values)  # what the run stores must be JSON-able
        self.metrics.append((dict(values), step))

    def on_step(self, callback: Callable[[int], None]) -> Any:
        self.hooks.append(callback)
        hooks = self.hooks

        class Handle:
            def remove(self) -> None:
                if callback in hooks:
                    hooks.remove(callback)
        return Handle()

    def loop(self, n: int) -> Iterator[int]:
        """What fw.loop does for the watcher: on_step(global step) before each iteration."""
        for i in range(n):
            for hook in list(self.hooks):
                hook(i)
            yield i


def mlp(n_in: int = 8, hidden: int = 16, n_out: int = 3) -> nn.Module:
    """Linear - ReLU - Linear: modules "0", "1", "2"."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class Twice(nn.Module):
    """One module (`shared`) called twice in a forward pass; input (n, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.shared = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.shared(torch.tanh(self.shared(h)))
