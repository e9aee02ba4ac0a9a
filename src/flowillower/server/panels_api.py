"""Endpoints of the runs table's best markers and the run page's family card.

`GET /api/best`: the best value of several metric columns among the runs a filter
matches, in one pass over the cached rows (`StoreView.best`), where the table used to
sort the rows once per column. `GET /api/runs/{run}/family`: the runs a run was forked
from, the tree of forks around it and its segments (`family.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store.documents import read_meta
from .family import ForkIndex, family_doc, parse_fork, segments_doc
from .routing import ApiError, Endpoint, P
from .store_view import StoreView

__all__ = ["panel_endpoints", "run_family"]


class _Parents:
    """{run: fork_of} of every fork in the store, kept per generation of the view's rows:
    a new fork is a new run, so it comes with a new generation (one `stat` per run then,
    nothing on the next pages)."""

    def __init__(self) -> None:
        self.forks = ForkIndex()
        self._kept: tuple[int, dict[str, dict[str, Any]]] = (-1, {})

    def get(self, view: StoreView, runs_root: Path) -> dict[str, dict[str, Any]]:
        rows = view.rows()
        generation = view.generation
        if self._kept[0] != generation:
            if rows and "fork_of" in rows[0]:  # an index that keeps fork_of: no file read
                found = {r["id"]: fork for r in rows if (fork := parse_fork(r)) is not None}
            else:
                found = self.forks.parents(runs_root, [r["id"] for r in rows])
            self._kept = (generation, found)
        return self._kept[1]


def run_family(view: StoreView, parents_of: _Parents, ref: str) -> dict[str, Any]:
    """The family document of run `ref` (see `family.family_doc`)."""
    run_dir: Path = view.run_dir(ref)
    parents = parents_of.get(view, run_dir.parent)
    segments = segments_doc(run_dir, read_meta(run_dir) or {})
    return family_doc(run_dir.name, parents, view.row, segments)


def panel_endpoints(view: StoreView) -> list[Endpoint]:
    """`/api/best` and `/api/runs/{run}/family` over `view`."""
    parents = _Parents()

    def best(col: list[str], goal: list[str], q: str | None, hidden: bool) -> dict[str, Any]:
        if not col:
            raise ApiError(400, "give at least one col= metric column (e.g. last:loss)",
                           "col")
        return {"generation": view.generation, **view.best(col, goal, q=q, hidden=hidden)}

    def family(run: str) -> dict[str, Any]:
        return run_family(view, parents, run)

    return [
        Endpoint("GET", "/api/best", best,
                 "The best value of metric columns among the matched runs, in one pass", [
                     P("col", many=True, max_length=300,
                       description="metric column: last:M, best:M, min:M or max:M"),
                     P("goal", many=True, max_length=3,
                       description="min or max, one per col= in the same order (default: "
                                   "the metric's name decides)"),
                     P("q", description="filter, as /api/runs takes it"),
                     P("hidden", "boolean", default=False, description="include hidden runs")]),
        Endpoint("GET", "/api/runs/{run}/family", family,
                 "A run's parent, its forks as a tree, and its segments (resumed runs)", [
                     P("run", where="path", required=True, max_length=200,
                       description="run id, unique id prefix or unique name")]),
    ]
