"""Which runs have a model graph: the model page's "compare with" list (`/api/models`).

A run's graphs are `model/graph.json` (the main model, named ``""``) and
`model/<name>/graph.json`; only names the `/api/runs/{run}/model` endpoint would serve
are listed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError
from .routing import Endpoint, P
from .store_view import StoreView

__all__ = ["MODEL_NAME", "model_names", "model_run_endpoints"]

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def model_names(run_dir: Path) -> list[str]:
    """Names of the model graphs stored in `run_dir` (``""`` = the main model)."""
    base = run_dir / "model"
    names = [""] if (base / "graph.json").is_file() else []
    if base.is_dir():
        names += sorted(p.parent.name for p in base.glob("*/graph.json")
                        if MODEL_NAME.match(p.parent.name) and p.parent.name not in (".", ".."))
    return names


def model_runs(view: StoreView, hidden: bool = True, limit: int = 5000) -> dict[str, Any]:
    """Runs with at least one model graph, newest first (at most `limit`)."""
    out = []
    for row in sorted(view.rows(), key=lambda r: r.get("created") or 0, reverse=True):
        if row.get("hidden") and not hidden:
            continue
        try:
            names = model_names(view.run_dir(row["id"]))
        except (FlowillowerError, OSError):
            continue  # deleted (or unreadable) since the index saw it
        if names:
            out.append({"id": row["id"], "name": row.get("name"), "created": row.get("created"),
                        "models": names})
            if len(out) >= limit:
                break
    return {"runs": out}


def model_run_endpoints(view: StoreView) -> list[Endpoint]:
    """The `/api/models` endpoint over `view`."""
    def models(hidden: bool, limit: int) -> dict[str, Any]:
        return model_runs(view, hidden=hidden, limit=limit)

    return [Endpoint("GET", "/api/models", models, "Runs that have a model graph, newest first", [
        P("hidden", "boolean", default=True, description="include hidden runs"),
        P("limit", "integer", default=5000, minimum=1, maximum=100000)], tag="model")]
