"""Lineage: one run using another run's artifact, recorded so pipelines can be traced.

`use_artifact(ref, name)` returns the local path of an artifact another run logged with
`fw.log_artifact` and records the dependency in the current run as a new file,
`<run>/inputs/<stamp>-<hex>.json` (one file per use: a run stays append-only and
merge-free, and the record travels with the run folder). A run's *inputs* are read from
its own folder; its *consumers* are the runs whose inputs name it. `graph` joins both
into the small DAG `flowillower show` and the run page draw.

Trust: the source run is reached only through the store boundary (`Store.run_dir`), the
artifact path comes from the run's own record and must stay inside the run's
`artifacts/` folder, links leading out of the run are refused (`store.resolve.run_file`).
Input records of pulled runs are data: their fields are checked, never used as paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
import warnings
from pathlib import Path
from typing import Any

from . import registry
from .errors import FlowillowerError, InvalidRunRefError, RunNotFoundError
from .store.catalog import Store
from .store.resolve import check_ref, run_file

__all__ = ["ArtifactNotFoundError", "RunRow", "use_artifact", "best", "read_inputs",
           "consumers", "graph", "INPUTS_DIRNAME"]

INPUTS_DIRNAME = "inputs"
_RECORD = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}-[0-9a-f]{6}\.json$")
_MAX_RECORD = 8192  # bytes; a record is a few short fields
_MAX_NODES = 200  # a DAG bigger than this is cut (the page draws a small graph)


class ArtifactNotFoundError(FlowillowerError):
    """The run holds no artifact by that name (or its file is gone)."""


class RunRow(dict):
    """A run row (as `fw.runs()` gives) that also answers `.id`, `.name`, `.value`."""

    @property
    def id(self) -> str:
        return self["id"]

    @property
    def name(self) -> str:
        return self.get("name", "")

    @property
    def value(self) -> Any:
        """The metric value `best` chose this run by."""
        return self.get("best_value")


# -- resolving the source --------------------------------------------------------------
def _source_run(store: Store, ref: str, name: str) -> tuple[str, str | None]:
    """(run id, registry reference or None) for `ref`: `registry:MODEL[@ALIAS]`, a run
    reference, or a filter text (the newest matching run holding artifact `name`)."""
    if ref.startswith(registry.PREFIX):
        model, version = registry.parse_reference(ref)
        return registry.resolve(model, version, dir=store.root), ref
    try:
        return store.resolve(ref), None
    except InvalidRunRefError:
        raise  # a path, `..`, a link: never retried as anything else (filters spell
        # `val/acc` as `val-acc`)
    except RunNotFoundError:
        pass  # not a run: maybe a filter
    from .queries.filters import compile_filter

    rows = store.runs()
    predicate = compile_filter(ref, rows).predicate
    matched = [r for r in rows if predicate(r)]
    for row in matched:  # newest first
        metric = (row.get("metrics") or {}).get(name)
        if metric is not None:
            return row["id"], None
    raise RunNotFoundError(f"no run matches {ref!r} with an artifact {name!r}"
                           if matched else f"no run or filter match for {ref!r}")


def artifact_path(run_dir: Path, name: str, step: int | None = None) -> tuple[Path, str]:
    """(absolute path, path inside the run) of artifact `name` of the run at `run_dir`:
    the value at `step`, else the last one logged. Refuses records pointing outside the
    run's `artifacts/` folder and links leading out of the run."""
    from .store.reader import RunReader

    series = RunReader(run_dir).load({name}).series.get(name)
    refs = []
    if series is not None:
        for at, value in zip(series.step.tolist(), series.values.tolist()):
            if isinstance(value, dict) and value.get("$media") == "artifact":
                if step is None or at == step:
                    refs.append(value)
    if not refs:
        at_step = "" if step is None else f" at step {step}"
        raise ArtifactNotFoundError(f"run {run_dir.name} has no artifact {name!r}{at_step}")
    rel = refs[-1].get("path")
    parts = rel.split("/") if isinstance(rel, str) else []
    if (len(parts) < 2 or parts[0] != "artifacts" or any(p in ("", ".", "..") for p in parts)
            or "\\" in rel or "\x00" in rel):
        raise InvalidRunRefError(f"artifact {name!r} of run {run_dir.name} names "
                                 f"{str(rel)[:80]!r}, not a file of the run's artifacts")
    path = run_file(run_dir, *parts)  # a link leading out of the run is refused here
    if not path.exists():
        raise ArtifactNotFoundError(f"artifact {name!r} of run {run_dir.name} is missing "
                                    f"on disk ({rel}); was it left out of a push?")
    return path, rel


# -- recording -------------------------------------------------------------------------
def _record(run: Any, entry: dict[str, Any]) -> None:
    """Write the dependency as a new file in the run; a full or read-only disk costs the
    record only (a warning), never the script that asked for the artifact."""
    micros = time.time_ns() // 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(micros // 1_000_000))
    name = f"{stamp}.{micros % 1_000_000:06d}-{secrets.token_hex(3)}.json"
    tmp = None
    try:
        run.ensure_on_disk()
        folder = run.dir / INPUTS_DIRNAME
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.tmp"  # never read as a record (readers want the pattern)
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(entry, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / name)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        warnings.warn(f"flowillower: could not record that run {run.id} used artifact "
                      f"{entry['artifact']!r} of run {entry['run']}: {exc}", stacklevel=3)


def use_artifact(ref: Any, name: str, *, step: int | None = None,
                 dir: str | os.PathLike[str] | None = None) -> str:
    """Local path of artifact `name` of another run, recording the dependency in the
    current run (started implicitly, like `fw.log`).

    `ref`: a run id / prefix / name, a row of `fw.runs()` / `fw.best()`, a filter text
    (the newest matching run that has the artifact) or `registry:MODEL@ALIAS` (also
    `@vN`, or no `@` for the newest version). The path is inside the store: read it,
    never write to it. Under `fw.debug(True)` nothing is recorded.
    """
    from . import api

    run = api.active_run()
    store = Store(dir if dir is not None else (run.store_root if run else None),
                  must_exist=True)
    text = registry.run_id_of(ref)
    run_id, via = _source_run(store, text, name)
    path, rel = artifact_path(store.run_dir(run_id), name, step)
    if run is not None and run_id != run.id:
        _record(run, {"run": run_id, "artifact": name, "path": rel, "via": via,
                      "time": time.time()})
    return str(path)


# -- choosing ---------------------------------------------------------------------------
def best(metric: str, runs: Any = None, mode: str = "min", *, of: str = "best",
         dir: str | os.PathLike[str] | None = None) -> RunRow:
    """The run whose `metric` is best: lowest (`mode="min"`) or highest (`"max"`) of its
    best value (`of="best"`) or last value (`of="last"`). `runs`: a filter text or a list
    of run references (default: every run). NaN values never win."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    if of not in ("best", "last"):
        raise ValueError(f"of must be 'best' or 'last', not {of!r}")
    store = Store(dir, must_exist=True)
    rows = store.runs()
    if isinstance(runs, str):
        from .queries.filters import compile_filter

        predicate = compile_filter(runs, rows).predicate
        rows = [r for r in rows if predicate(r)]
    elif runs is not None:
        wanted = {store.resolve(registry.run_id_of(r)) for r in runs}
        rows = [r for r in rows if r["id"] in wanted]
    field = mode if of == "best" else "last"
    scored = []
    for row in rows:
        value = ((row.get("metrics") or {}).get(metric) or {}).get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            scored.append((value, row))
    if not scored:
        raise RunNotFoundError(f"no run has a number for metric {metric!r}")
    pick = min if mode == "min" else max
    value, row = pick(scored, key=lambda item: item[0])
    return RunRow({**row, "best_value": value})


# -- reading ------------------------------------------------------------------------------
def _plain_file(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size <= _MAX_RECORD


def read_inputs(run_dir: Path) -> list[dict[str, Any]]:
    """A run's input records (oldest first), one per (source run, artifact); records that
    are damaged, links, or name no plain run id are skipped."""
    folder = run_dir / INPUTS_DIRNAME
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return []
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in names:
        path = folder / entry
        if not _RECORD.match(entry) or not _plain_file(path):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            check_ref(doc["run"])
        except (OSError, ValueError, UnicodeDecodeError, TypeError, KeyError,
                FlowillowerError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("artifact"), str):
            continue
        via = doc.get("via") if isinstance(doc.get("via"), str) else None
        when = doc.get("time") if isinstance(doc.get("time"), (int, float)) else None
        seen.setdefault((doc["run"], doc["artifact"]),
                        {"run": doc["run"], "artifact": doc["artifact"][:200],
                         "via": via, "time": when})
    return list(seen.values())


def _all_inputs(store: Store) -> dict[str, list[dict[str, Any]]]:
    """{run id: its inputs} for every run folder that has an inputs folder."""
    runs = store.root / "runs"
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        inputs = read_inputs(Path(entry.path))
        if inputs:
            found[entry.name] = inputs
    return found


def consumers(store: Store, run_id: str,
              table: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Runs that used an artifact of `run_id`: [{"run", "artifact", "via", "time"}]."""
    table = _all_inputs(store) if table is None else table
    return [{**record, "run": consumer} for consumer, records in sorted(table.items())
            for record in records if record["run"] == run_id]


def graph(store: Store, ref: str) -> dict[str, Any]:
    """The lineage DAG around run `ref`: its direct inputs and consumers, and the nodes
    and edges reached upstream and downstream from it (at most `_MAX_NODES` nodes)."""
    run_id = store.resolve(ref)
    table = _all_inputs(store)
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    nodes: set[str] = {run_id}
    for direction in ("up", "down"):
        todo = [run_id]
        while todo and len(nodes) < _MAX_NODES:
            current = todo.pop()
            linked = (table.get(current, []) if direction == "up"
                      else consumers(store, current, table))
            for record in linked:
                src, dst = (record["run"], current) if direction == "up" else \
                    (current, record["run"])
                edges.setdefault((src, dst, record["artifact"]),
                                 {"from": src, "to": dst, "artifact": record["artifact"],
                                  "via": record["via"]})
                other = record["run"]
                if other not in nodes:
                    nodes.add(other)
                    todo.append(other)
    known = {row["id"]: row for row in store.index.run_rows(sorted(nodes))}
    return {
        "run": run_id,
        "inputs": table.get(run_id, []),
        "consumers": consumers(store, run_id, table),
        "nodes": [{"id": node, "name": known.get(node, {}).get("name"),
                   "status": known.get(node, {}).get("status"),
                   "missing": node not in known} for node in sorted(nodes)],
        "edges": sorted(edges.values(), key=lambda e: (e["from"], e["to"], e["artifact"])),
    }
