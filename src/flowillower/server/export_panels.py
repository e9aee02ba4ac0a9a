"""The run page's lineage card and family card in a static export.

Writes, next to each exported run's run.json, the documents the live endpoints answer
(`/api/runs/ID/lineage` -> `lineage.json`, `/api/runs/ID/family` -> `family.json`),
only for runs that have something to show. Runs outside the export are kept in the
graphs as `missing` nodes (drawn, never linked: the site has no page for them). The
system panel needs no file of its own: its `system/` series go into series.json.

Cost: one pass over the exported runs' input records and run.json files, plus the
lineage graph of the runs that have inputs or consumers (not one store scan per run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..lineage import graph, read_inputs
from ..store.catalog import Store
from ..store.documents import read_meta
from ..store.layout import runs_dir
from .family import ForkIndex, family_doc, has_family, segments_doc

__all__ = ["export_panels"]


def _lineage(store: Store, run_id: str, exported: set[str]) -> dict[str, Any]:
    doc = graph(store, run_id)
    doc["nodes"] = [{**n, "missing": n["missing"] or n["id"] not in exported}
                    for n in doc["nodes"]]
    return doc


def export_panels(store: Store, rows: list[dict[str, Any]], out: Path,
                  dump: Callable[[Path, Any], int]) -> dict[str, int]:
    """Write lineage.json and family.json of the exported `rows` under `out`/data/runs;
    `dump(path, obj)` writes one JSON document (and its file:// twin). Returns counts."""
    base = runs_dir(store.root)
    by_id = {r["id"]: r for r in rows}
    exported = set(by_id)
    involved: set[str] = set()
    for run_id in exported:
        records = read_inputs(base / run_id)
        if records:
            involved.add(run_id)
            involved.update(r["run"] for r in records)  # its sources: they have consumers
    parents = ForkIndex().parents(base, sorted(exported))
    counts = {"lineage": 0, "family": 0}
    for run_id in sorted(exported):
        dest = out / "data" / "runs" / run_id
        if run_id in involved:
            doc = _lineage(store, run_id, exported)
            if doc["edges"]:
                dump(dest / "lineage.json", doc)
                counts["lineage"] += 1
        fam = family_doc(run_id, parents, by_id.get,
                         segments_doc(base / run_id, read_meta(base / run_id) or {}))
        if has_family(fam):
            dump(dest / "family.json", fam)
            counts["family"] += 1
    return counts
