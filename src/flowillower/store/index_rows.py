"""A run's index row: what the index keeps of one run, built from its files.

`scan_run` decodes the run's records (the slow path, numpy); `row_record` turns the
parts into the `runs` table's columns. The writer records the same parts in
`<run>/index-row.json` (`store.index_journal`) so readers need not decode the run.
Values are kept with their type when SQLite can hold them exactly, and as JSON always.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRunRefError
from ..heartbeat import liveness
from ..procfs import pid_alive
from .documents import read_meta, read_summary
from .resolve import check_ref


def sql_value(value: Any) -> Any:
    """A value SQLite keeps with its type (NaN/inf/objects go through JSON)."""
    if type(value) is float:  # the common case first
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or value is None:
        return None if value is None else int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _real(value: Any) -> float | None:
    """A number as a REAL column gives it back (an int as a float, NaN as NULL), so the
    records written equal the records read (`assemble_rows`)."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


def to_json(value: Any) -> str:
    """The JSON text the index keeps next to every value (exact for any value)."""
    if value == [] and isinstance(value, list):  # tags and loops, mostly
        return "[]"
    return json.dumps(value, default=str, allow_nan=True)


_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")


def from_json(text: str) -> Any:
    """`json.loads(text)`, quicker for the plain numbers most values are."""
    if text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1):
        return int(text)  # the commonest: steps, counts, seeds, batch sizes
    match = _PLAIN_NUMBER.fullmatch(text)
    if match is None:
        return json.loads(text)
    return float(text) if match.group(1) or match.group(2) else int(text)


@dataclass
class RunParts:
    """One run as the index sees it, before user edits (notes/) are applied.

    `args`: (name, value_json); `metrics`: (name, role, kind, count, last_json, min, max,
    last_step, replayed) — the same tuples whether scanned or read from a row file."""

    run_id: str
    meta: dict[str, Any]
    status: str
    created: float | None
    ended: float | None
    error: str | None
    loops: list[str] = field(default_factory=list)
    args: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[tuple] = field(default_factory=list)


def run_status(run_dir: Path) -> str:
    """`RunReader(run_dir).status` without importing the reader (and numpy): a CLI that
    finds every row in place never loads numpy."""
    summary = read_summary(run_dir)
    if summary and summary.get("status"):
        return summary["status"]
    meta = read_meta(run_dir) or {}
    if meta.get("host") == socket.gethostname() and not pid_alive(
            int(meta.get("pid", 0)), meta.get("pid_start")):
        return "killed"
    return liveness(run_dir, "running")  # another host's run with a stale heartbeat: lost


def scan_run(run_dir: Path) -> RunParts:
    """Decode every record of the run (the path a reader takes without a valid row)."""
    import numpy as np  # readers only: the logging side imports this module lazily

    from .reader import RunReader

    reader = RunReader(run_dir)
    meta = reader.meta
    summary = reader.summary or {}
    data = reader.load()
    created = meta.get("created") or summary.get("created")
    ended = summary.get("ended")
    if ended is None and data.series:  # running or killed: last value's time
        ended = max(float(s.time.max()) for s in data.series.values() if len(s.time))
    parts = RunParts(reader.id, meta, reader.status, created, ended, summary.get("error"),
                     list(data.loop_names))
    for series in data.series.values():
        name = series.name  # an arg sharing a metric's name is keyed `args.<name>`
        if series.role == "arg":
            parts.args.append((name, to_json(series.last())))
            continue
        if series.role == "sys":
            continue
        lo = hi = None
        if series.kind in ("float", "int") and len(series.values):
            vals = series.values.astype(np.float64)
            finite = vals[np.isfinite(vals)]
            if len(finite):
                lo, hi = float(finite.min()), float(finite.max())
        parts.metrics.append((name, series.role, series.kind, len(series.values),
                              to_json(series.last()), lo, hi,
                              int(series.step[-1]) if len(series.step) else None,
                              bool(series.replayed.any())))
    return parts


# What a name shown in a listing may be at most: a run's own documents may come from a
# teammate's push, and a megabyte of "author" must not widen every table it is listed in.
SHOWN_TEXT_LIMIT = 120


def shown_text(value: Any, limit: int = SHOWN_TEXT_LIMIT) -> str | None:
    """A name a run records about itself (author, host) or its origin, as the index keeps
    and listings show it: text only (else None), control and invisible formatting
    characters (bidi overrides, zero-width) each replaced by U+FFFD, and at most `limit`
    characters (longer text is cut and ends in "…"). Empty text is None."""
    if type(value) is not str or not value:
        return None
    if len(value) <= limit and value.isprintable():
        return value  # the common case: nothing to do
    cut = value[:limit - 1] + "…" if len(value) > limit else value
    return "".join(c if c.isprintable() else "\ufffd" for c in cut)


def fork_parent(meta: Any) -> tuple[str, int] | None:
    """(parent run, step) of a run.json's `fork_of` (`fw.init(fork_from=...)`), when it
    is well-formed: a mapping whose `run` could name a run (`resolve.check_ref`: no
    path, no `..`) and whose `step` is a 64-bit int (not a bool); None otherwise. A
    pulled run's run.json may be hostile: anything else is no fork."""
    fork = meta.get("fork_of") if type(meta) is dict else None
    if type(fork) is not dict:
        return None
    run, step = fork.get("run"), fork.get("step")
    if type(run) is not str or type(step) is not int or not -(2**63) <= step < 2**63:
        return None
    try:
        check_ref(run)
    except InvalidRunRefError:
        return None
    return run, step


# The `runs` table's columns, in `row_record`'s order (`store.index_schema` creates them).
RUN_COLUMNS = ("id", "project", "name", "status", "created", "ended", "duration", "tags",
               "notes", "hidden", "host", "git_head", "git_branch", "git_dirty", "snapshot",
               "signature", "error", "loops", "author", "origin", "fork_of", "fork_step")


def row_record(parts: RunParts, notes: dict[str, Any], sig: str,
               origin: str | None = None) -> tuple:
    """The `runs` table's columns (`RUN_COLUMNS`) for `parts`, user edits (`notes`)
    applied; `origin`: the remote the run was pulled from (None for a run made here)."""
    meta = parts.meta
    git = meta.get("git") or {}
    created, ended = _real(parts.created), _real(parts.ended)
    fork = fork_parent(meta) if "fork_of" in meta else None
    return (
        parts.run_id, meta.get("project"), meta.get("name") or parts.run_id, parts.status,
        created, ended, _real(ended - created) if (ended and created) else None,
        to_json(notes.get("tags", meta.get("tags", []))),
        notes.get("notes", meta.get("notes", "")), int(bool(notes.get("hidden", False))),
        shown_text(meta.get("host")), git.get("head"), git.get("branch"),
        None if git.get("dirty") is None else int(bool(git.get("dirty"))),
        git.get("snapshot"), sig, parts.error, to_json(parts.loops),
        shown_text(meta.get("user")), shown_text(origin),
        fork[0] if fork else None, fork[1] if fork else None,
    )


def arg_records(parts: RunParts) -> list[tuple]:
    """Rows of the `args` table: (run_id, name, value, value_json)."""
    return [(parts.run_id, name, sql_value(from_json(text)), text)
            for name, text in parts.args]


def metric_records(parts: RunParts) -> list[tuple]:
    """Rows of the `metrics` table (typed `last` next to its JSON)."""
    return [(parts.run_id, name, role, kind, count, sql_value(from_json(last)), last,
             _real(lo), _real(hi), last_step, int(replayed))
            for name, role, kind, count, last, lo, hi, last_step, replayed in parts.metrics]


_JSON_WORDS = {"true": True, "false": False, "null": None}


def stored_value(value: Any, value_json: str) -> Any:
    """A value as the index keeps it (`sql_value`, `to_json`): the typed column when it
    is exact, JSON otherwise (bools, NaN, huge ints, lists). Skipping json.loads halves
    loading 10,000 runs."""
    first = value_json[:1]
    if first in ("[", "{") or value is None:
        return _JSON_WORDS[value_json] if value_json in _JSON_WORDS else json.loads(value_json)
    if isinstance(value, str) and first != '"':  # an int too big for SQLite
        return json.loads(value_json)
    if value_json in _JSON_WORDS:
        return _JSON_WORDS[value_json]
    return value


def assemble_rows(records: list[tuple], args: Iterable[tuple], metrics: Iterable[tuple]
                  ) -> dict[str, dict[str, Any]]:
    """The rows readers get ({id: row}, in the order of `records`): `records` of the
    `runs` table (`RUN_COLUMNS`), with the `args` and `metrics` records of those runs
    (of others: skipped). The same whether the records were just written (a first sync)
    or read back from SQLite: `row_record` writes what the columns give back."""
    rows = {}
    for rec in records:
        row = dict(zip(RUN_COLUMNS, rec))
        del row["signature"]
        tags, loops = row["tags"], row["loops"]  # mostly "[]": no parse for those
        row["tags"] = json.loads(tags) if tags and tags != "[]" else []
        row["loops"] = json.loads(loops) if loops and loops != "[]" else []
        row["hidden"] = bool(row["hidden"])
        step = row.pop("fork_step")  # fork_of: {"run", "step"} of a fork, else None
        if row["fork_of"] is not None:
            row["fork_of"] = {"run": row["fork_of"], "step": step}
        row["args"], row["metrics"] = {}, {}
        rows[row["id"]] = row
    # A float is exact as stored (`sql_value`): most values skip `stored_value`.
    get = rows.get
    for run_id, name, value, value_json in args:
        row = get(run_id)
        if row is not None:
            row["args"][name] = value if type(value) is float else stored_value(value,
                                                                                value_json)
    for run_id, name, role, kind, count, last, last_json, lo, hi, last_step, replayed in (
            metrics):
        row = get(run_id)
        if row is not None:
            row["metrics"][name] = {
                "role": role, "kind": kind, "count": count,
                "last": last if type(last) is float else stored_value(last, last_json),
                "min": lo, "max": hi, "last_step": last_step, "replayed": replayed == 1}
    return rows
