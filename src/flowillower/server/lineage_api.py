"""The lineage endpoint: a run's inputs, consumers and the small DAG around it.

Read-only; the run reference goes through the store boundary (`Store.resolve`), and the
records come from `lineage.graph`, which checks every field of a run's input files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..lineage import graph
from ..store.catalog import Store
from .routing import Endpoint, P

__all__ = ["lineage_endpoints"]


def lineage_endpoints(store_root: Path) -> list[Endpoint]:
    """`GET /api/runs/{run}/lineage` over the store at `store_root`."""
    store = Store(store_root)

    def lineage(run: str) -> dict[str, Any]:
        return graph(store, run)

    run = P("run", where="path", required=True, max_length=200, description="run id or name")
    return [Endpoint("GET", "/api/runs/{run}/lineage", lineage,
                     "A run's inputs and consumers (use_artifact) as a small DAG", [run])]
