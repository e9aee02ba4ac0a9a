"""`fw.dataframe`: runs and their values as a pandas DataFrame.

With names, the result has FlorDB's shape: one row per (run, loop coordinates), run-level
values (args, values logged outside loops) broadcast onto every row of their run, and
values logged at different loop depths joined on the loop columns they share
(an epoch-level `val_acc` repeats on each step row of that epoch). Replayed values land
in the same rows as original ones. Without names: one row per run with its args and the
last / min / max of each metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunNotFoundError
from ..store.catalog import Store
from ..store.reader import RunData, RunReader, Series
from .filters import row_filter

_RUN_COLUMNS = ["run_id", "run_name", "project", "status"]


RunSelection = str | Sequence[str] | None


def _select(store: Store, runs: RunSelection, include_hidden: bool) -> list[dict[str, Any]]:
    """Index rows (newest first) of a filter string, or of a list of run references
    resolved by the store's resolver (paths, `..` and the like raise
    `InvalidRunRefError`; explicitly named runs are included even when hidden)."""
    if runs is None or isinstance(runs, str):
        return store.runs(row_filter(runs), include_hidden=include_hidden)
    ids = {store.resolve(ref) for ref in runs}
    # Synced: a full id resolves without looking at the index, whose row of that run may
    # predate its last values (finished since the last listing).
    return [row for row in store.runs(include_hidden=True) if row["id"] in ids]


def _run_reader(store: Store, run_id: str) -> RunReader | None:
    """A reader of the run's folder, None if it vanished since the index saw it."""
    try:
        return RunReader(store.run_dir(run_id))
    except RunNotFoundError:
        return None


def runs(runs: RunSelection = None, *, dir: str | os.PathLike[str] | None = None,
         include_hidden: bool = False) -> pd.DataFrame:
    """One row per run: fields, args, and `<metric>`, `<metric>.min`, `<metric>.max`.

    `runs`: a filter string, or a list of run ids / id prefixes / names.
    """
    store = Store(dir)
    rows = _select(store, runs, include_hidden)
    # a metric whose name is any listed run's arg is `metric.<name>` in every run: one
    # column never holds one run's arg and another's metric
    arg_names = {name for row in rows for name in row["args"]}
    records = []
    for row in rows:
        record: dict[str, Any] = {
            "run_id": row["id"], "run_name": row["name"], "project": row["project"],
            "status": row["status"], "created": pd.to_datetime(row["created"], unit="s"),
            "duration": row["duration"], "tags": row["tags"],
        }
        for name, value in row["args"].items():
            record[name] = value
        for name, stats in row["metrics"].items():
            key = name if name not in record and name not in arg_names else f"metric.{name}"
            record[key] = stats["last"]
            if stats["min"] is not None and stats["kind"] != "object":
                record[f"{key}.min"] = stats["min"]
                record[f"{key}.max"] = stats["max"]
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=[*_RUN_COLUMNS, "created", "duration", "tags"])
    return _typed_columns(frame)


def _typed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Give object columns a real dtype when every present value agrees (NaN stays NaN)."""
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        present = [v for v in frame[col] if v is not None and v is not pd.NA]
        kinds = {type(v) for v in present}
        if kinds == {bool}:
            frame[col] = pd.array(frame[col].tolist(), dtype="boolean")
        elif kinds == {int} and all(-(2**63) <= v < 2**63 for v in present):
            frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
        elif kinds and kinds <= {int, float}:
            frame[col] = frame[col].astype("float64")
    return frame


def _series_frame(series: Series, data: RunData) -> tuple[pd.DataFrame, list[str]]:
    """A value column plus the loop columns this series is keyed by."""
    coords = data.ctx_coords[series.ctx]
    used = [i for i in range(coords.shape[1]) if (coords[:, i] >= 0).any()]
    columns: dict[str, Any] = {data.loop_names[i]: coords[:, i] for i in used}
    keys = [data.loop_names[i] for i in used]
    if not keys and series.role != "arg" and len(series.values) > 1:
        # Logged repeatedly outside any loop: its steps are the coordinates.
        columns["step"] = series.step
        keys = ["step"]
    values = series.values
    if series.kind == "int":
        values = pd.array(values, dtype="Int64")
    elif series.kind == "object":
        values = _objects(values)
    columns[series.name] = values
    frame = pd.DataFrame(columns)
    if keys:
        # A value logged twice in one iteration: the later one wins, as in a dict.
        frame = frame.drop_duplicates(subset=keys, keep="last")
    elif len(frame) > 1:
        frame = frame.iloc[[-1]]
    return frame, keys


def _objects(values: np.ndarray) -> Any:
    kinds = {type(v) for v in values}
    if kinds == {bool}:
        return pd.array(list(values), dtype="boolean")
    if kinds == {str}:
        return pd.array(list(values), dtype="object")
    return values


def _broadcast(column: pd.Series, index: pd.Index) -> Any:
    """A run-level value (the column's one row) repeated on every row of `index`."""
    value = column.iloc[0] if len(column) else None
    if not pd.api.types.is_scalar(value):
        # A list, tuple or dict is one cell's value: assigned bare, pandas would take a
        # list for a whole column (or fail on its length) and a dict for a mapping.
        cells = np.empty(len(index), object)
        cells.fill(value)
        return pd.Series(cells, index=index, dtype=object)
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
        return pd.Series([value] * len(index), index=index, dtype=column.dtype)
    return value


def _run_frame(reader: RunReader, names: list[str]) -> pd.DataFrame:
    data = reader.load(names)
    frames = [(_series_frame(data.series[n], data)) for n in names if n in data.series]
    if not frames:
        return pd.DataFrame()
    # Deepest series first, then join shallower ones on the loop columns they share.
    frames.sort(key=lambda fk: -len(fk[1]))
    result, result_keys = frames[0]
    for frame, keys in frames[1:]:
        shared = [k for k in keys if k in result_keys]
        if not keys:  # run level: broadcast
            for col in frame.columns:
                result[col] = _broadcast(frame[col], result.index)
            continue
        if shared and set(keys) <= set(result_keys):
            result = result.merge(frame, on=shared, how="left")
        else:  # sibling loops or new coordinates: outer join keeps every value
            result = result.merge(frame, on=shared, how="outer") if shared else pd.concat(
                [result, frame], ignore_index=True)
            result_keys = result_keys + [k for k in keys if k not in result_keys]
    loops = [c for c in dict.fromkeys([*data.loop_names, "step"]) if c in result.columns]
    if loops:
        result = result.sort_values(loops, kind="stable", na_position="first")
        for col in loops:
            if result[col].isna().any() or (result[col] < 0).any():
                result[col] = pd.array(result[col].where(result[col] >= 0), dtype="Int64")
    result.insert(0, "run_id", reader.id)
    result.insert(1, "run_name", reader.meta.get("name", reader.id))
    ordered = ["run_id", "run_name", *loops]
    return result[ordered + [c for c in result.columns if c not in ordered]].reset_index(
        drop=True)


def dataframe(*names: str, runs: RunSelection = None,
              dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Values across runs. See the module docstring for the shape.

    `names`: value names (metrics, args or replayed values); none -> one row per run.
    `runs`: a filter (fitlog syntax, expression or text) selecting the runs, or a list
    of run ids / id prefixes / names (anything else, e.g. a path, raises
    `InvalidRunRefError`).
    """
    if not names:
        return globals()["runs"](runs, dir=dir)
    store = Store(dir)
    rows = _select(store, runs, include_hidden=False)
    frames = []
    for row in reversed(rows):  # oldest first, like a lab notebook
        reader = _run_reader(store, row["id"])
        if reader is None:
            continue
        frame = _run_frame(reader, list(names))
        if not frame.empty:
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "run_name", *names])
    result = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for name in names:
        if name not in result.columns:
            result[name] = pd.NA
    return result
