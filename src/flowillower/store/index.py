"""The derived index: one SQLite file summarising every run for fast queries.

It is a cache. `runs/` is the truth; `Index.sync()` re-reads only the run directories
whose signature (a few stats) changed since last time, and `Index.rebuild()` starts over.
Deleting `index.sqlite` loses nothing. Writers never touch it, so any number of
processes can log while readers (CLI, UI, queries) sync it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunNotFoundError
from .documents import read_annotation
from .layout import runs_dir
from .reader import RunReader

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, project TEXT, name TEXT, status TEXT, created REAL, ended REAL,
    duration REAL, tags TEXT, notes TEXT, hidden INTEGER DEFAULT 0, host TEXT,
    git_head TEXT, git_branch TEXT, git_dirty INTEGER, snapshot TEXT, signature TEXT,
    meta TEXT, error TEXT, loops TEXT);
CREATE TABLE IF NOT EXISTS args (run_id TEXT, name TEXT, value, value_json TEXT,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS metrics (run_id TEXT, name TEXT, role TEXT, kind TEXT,
    count INTEGER, last, last_json TEXT, min REAL, max REAL, last_step INTEGER,
    replayed INTEGER, PRIMARY KEY (run_id, name));
CREATE INDEX IF NOT EXISTS metrics_name ON metrics(name);
CREATE INDEX IF NOT EXISTS args_name ON args(name);
"""


# What may change in a run folder, and where it shows. Creating summary.json, replays/ or
# notes/ changes the folder's own mtime; a new replay or note changes its subfolder's;
# only a live run appends to data.fwl without any folder noticing.
_FINISHED_PARTS = ("", "replays", "notes")
_LIVE_PARTS = ("", "replays", "notes", "data.fwl", "run.json")


def _signature(run_dir: str | Path, live: bool = True) -> str:
    """Cheap change detector: a few stats, no reads (plain strings: pathlib costs more
    than the stat itself at 10,000 runs)."""
    parts = []
    base = os.fspath(run_dir)
    for rel in (_LIVE_PARTS if live else _FINISHED_PARTS):
        try:
            st = os.stat(base + "/" + rel if rel else base)
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _sql_value(value: Any) -> Any:
    """A value SQLite keeps with its type (NaN/inf/objects go through JSON)."""
    if isinstance(value, bool) or value is None:
        return None if value is None else int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


_JSON_WORDS = {"true": True, "false": False, "null": None}


def _decode(value: Any, value_json: str) -> Any:
    """A stored value: the typed SQL column when it is exact, JSON otherwise (bools,
    NaN, huge ints, lists). Skipping json.loads halves loading 10,000 runs."""
    first = value_json[:1]
    if first in ("[", "{") or value is None:
        return _JSON_WORDS[value_json] if value_json in _JSON_WORDS else json.loads(value_json)
    if isinstance(value, str) and first != '"':  # an int too big for SQLite
        return json.loads(value_json)
    if value_json in _JSON_WORDS:
        return _JSON_WORDS[value_json]
    return value


def latest_annotation(run_dir: Path) -> dict[str, Any]:
    """Merged user edits (notes, hidden, tags) from `notes/*.json`, newest last."""
    merged: dict[str, Any] = {}
    notes_dir = run_dir / "notes"
    if notes_dir.is_dir():
        for path in sorted(notes_dir.glob("*.json")):
            merged.update(read_annotation(path))  # a broken edit is skipped, never fatal
    return merged


class Index:
    """SQLite summary of a store's runs, kept in step with `runs/` on demand."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root)
        self.path = self.root / "index.sqlite"
        self._local = threading.local()
        # Parsed rows of the last run_rows() call, dropped whenever sync changes anything.
        self._rows_cache: dict[str, dict[str, Any]] | None = None

    # -- connection ------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:  # an old cache: drop it, it is rebuilt below
                for table in ("runs", "args", "metrics"):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.executescript(SCHEMA)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- keeping in step -------------------------------------------------------------
    def sync(self) -> int:
        """Re-index run directories that changed; drop vanished ones. Returns #updated."""
        conn = self.connect()
        known = {run_id: (sig, status) for run_id, sig, status in
                 conn.execute("SELECT id, signature, status FROM runs")}
        base = runs_dir(self.root)
        present: set[str] = set()
        updated = 0
        entries = sorted(os.scandir(base), key=lambda e: e.name) if base.is_dir() else []
        for entry in entries:
            # Never a symlink: a link in runs/ may lead anywhere on disk (store boundary).
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            present.add(entry.name)
            old_sig, old_status = known.get(entry.name, (None, "running"))
            sig = _signature(entry.path, live=old_status == "running")
            if old_sig == sig and not (old_status == "running"
                                       and self._may_have_died(entry.name)):
                continue
            run_dir = Path(entry.path)
            if old_status == "running":  # store the short form once it has finished
                sig = _signature(run_dir, live=RunReader(run_dir).status == "running")
            if not (run_dir / "run.json").exists() and not (run_dir / "data.fwl").exists():
                continue  # a directory being created right now
            self._index_run(conn, run_dir, sig)
            updated += 1
        gone = set(known) - present
        if gone or updated:
            self._rows_cache = None
        if gone:
            conn.execute("BEGIN")
            for run_id in gone:
                for table, col in (("runs", "id"), ("args", "run_id"), ("metrics", "run_id")):
                    conn.execute(f"DELETE FROM {table} WHERE {col}=?", (run_id,))
            conn.execute("COMMIT")
        return updated

    def _may_have_died(self, run_id: str) -> bool:
        # A running run whose process was killed changes no file: re-check its status.
        return RunReader(runs_dir(self.root) / run_id).status != "running"

    def rebuild(self) -> int:
        """Forget everything and index all runs again (`flowillower reindex`)."""
        self.close()
        self._rows_cache = None
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(str(self.path) + suffix)
            except FileNotFoundError:
                pass
        return self.sync()

    def _index_run(self, conn: sqlite3.Connection, run_dir: Path, sig: str) -> None:
        reader = RunReader(run_dir)
        meta = reader.meta
        summary = reader.summary or {}
        data = reader.load()
        status = reader.status
        notes = latest_annotation(run_dir)
        created = meta.get("created") or summary.get("created")
        ended = summary.get("ended")
        if ended is None and data.series:  # running or killed: last value's time
            ended = max(float(s.time.max()) for s in data.series.values() if len(s.time))
        git = meta.get("git") or {}
        metric_rows, arg_rows = [], []
        for name, series in data.series.items():
            if series.role == "arg":
                value = series.last()
                arg_rows.append((reader.id, name, _sql_value(value), _json(value)))
                continue
            if series.role == "sys":
                continue
            last = series.last()
            lo = hi = None
            if series.kind in ("float", "int") and len(series.values):
                vals = series.values.astype(np.float64)
                finite = vals[np.isfinite(vals)]
                if len(finite):
                    lo, hi = float(finite.min()), float(finite.max())
            metric_rows.append((reader.id, name, series.role, series.kind, len(series.values),
                                _sql_value(last), _json(last), lo, hi,
                                int(series.step[-1]) if len(series.step) else None,
                                int(series.replayed.any())))
        row = (
            reader.id, meta.get("project"), meta.get("name") or reader.id, status, created,
            ended, (ended - created) if (ended and created) else None,
            _json(notes.get("tags", meta.get("tags", []))), notes.get("notes", meta.get("notes", "")),
            int(bool(notes.get("hidden", False))), meta.get("host"), git.get("head"),
            git.get("branch"), None if git.get("dirty") is None else int(bool(git.get("dirty"))),
            git.get("snapshot"), sig, _json(meta), summary.get("error"), _json(data.loop_names),
        )
        conn.execute("BEGIN")
        try:
            conn.execute("INSERT OR REPLACE INTO runs VALUES (" + ",".join("?" * len(row)) + ")",
                         row)
            conn.execute("DELETE FROM args WHERE run_id=?", (reader.id,))
            conn.execute("DELETE FROM metrics WHERE run_id=?", (reader.id,))
            conn.executemany("INSERT INTO args VALUES (?,?,?,?)", arg_rows)
            conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?,?)", metric_rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reading ---------------------------------------------------------------------
    def run_rows(self, ids: Iterable[str] | None = None, *, include_hidden: bool = True
                 ) -> list[dict[str, Any]]:
        """One dict per run: fields, `args` {name: value}, `metrics` {name: stats}.

        Rows are cached between syncs that change nothing; callers get copies of the
        list, and must not mutate the row dicts.
        """
        if self._rows_cache is None:
            self._rows_cache = self._load_rows()
        rows = self._rows_cache.values()
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        return [r for r in rows if include_hidden or not r["hidden"]]

    def _load_rows(self) -> dict[str, dict[str, Any]]:
        conn = self.connect()
        cur = conn.execute("SELECT id, project, name, status, created, ended, duration, tags, "
                           "notes, hidden, host, git_head, git_branch, git_dirty, snapshot, "
                           "error, loops FROM runs ORDER BY created DESC, id DESC")
        cols = [d[0] for d in cur.description]
        rows = {}
        for rec in cur:
            row = dict(zip(cols, rec))
            row["tags"] = json.loads(row["tags"] or "[]")
            row["loops"] = json.loads(row["loops"] or "[]")
            row["hidden"] = bool(row["hidden"])
            row["args"], row["metrics"] = {}, {}
            rows[row["id"]] = row
        for run_id, name, value, value_json in conn.execute(
                "SELECT run_id, name, value, value_json FROM args"):
            if run_id in rows:
                rows[run_id]["args"][name] = _decode(value, value_json)
        for run_id, name, role, kind, count, last, last_json, lo, hi, last_step, replayed in (
                conn.execute("SELECT run_id, name, role, kind, count, last, last_json, min, "
                             "max, last_step, replayed FROM metrics")):
            if run_id in rows:
                rows[run_id]["metrics"][name] = {
                    "role": role, "kind": kind, "count": count,
                    "last": _decode(last, last_json), "min": lo,
                    "max": hi, "last_step": last_step, "replayed": bool(replayed)}
        return rows

    def ids_named(self, name: str) -> list[str]:
        """Ids of the runs named exactly `name` (no pattern matching)."""
        return [r[0] for r in self.connect().execute(
            "SELECT id FROM runs WHERE name=? ORDER BY id", (name,))]

    def resolve(self, ref: str) -> str:
        """A run id from an id, a unique id prefix, a unique random suffix or a unique
        run name. Only looks up the index: callers check `ref` (`resolve.check_ref`)
        and the folder (`resolve.run_path`) before touching the file system."""
        from .resolve import ambiguous

        conn = self.connect()
        exact = conn.execute("SELECT id FROM runs WHERE id=?", (ref,)).fetchone()
        if exact:
            return exact[0]
        # `%` and `_` are LIKE wildcards: escape them so they only match themselves.
        pattern = ref.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        matches = conn.execute(
            "SELECT id, name FROM runs WHERE id LIKE ? ESCAPE '!' OR id LIKE ? ESCAPE '!' "
            "OR name=? ORDER BY id", (pattern + "%", "%-" + pattern + "%", ref)).fetchall()
        if len(matches) == 1:
            return matches[0][0]
        if not matches:
            raise RunNotFoundError(f"no run matches {ref!r}; `flowillower ls` lists the runs")
        raise ambiguous(ref, [(run_id, name) for run_id, name in matches])
