"""The derived index: one SQLite file summarising every run for fast queries.

It is a cache. `runs/` is the truth; `Index.sync()` re-reads only the run directories
whose signature (a few stats) changed since last time, and `Index.rebuild()` starts over.
Deleting `index.sqlite` loses nothing. Writers never touch it, so any number of
processes can log while readers (CLI, UI, queries) sync it. A run records its own row
at start and finish (`index_journal`): readers take it instead of decoding the run's
records while it still matches the run's files and summary, and scan the run otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import RunNotFoundError
from .documents import read_annotation
from .index_journal import read_row, record_finish
from .index_rows import (
    RUN_COLUMNS,
    RunParts,
    arg_records,
    assemble_rows,
    metric_records,
    row_record,
    run_status,
    scan_run,
    shown_text,
)
from .index_schema import INSERT_RUN, prepare
from .layout import runs_dir
from .provenance import pulled_origins
from .signature import FINISHED_PARTS, first_look, signature

# Host parameters one SQLite statement may take (the library's floor since 3.32).
_MAX_PARAMS = 32766
def latest_annotation(run_dir: Path) -> dict[str, Any]:
    """Merged user edits (notes, hidden, tags) from `notes/*.json`, newest last."""
    merged: dict[str, Any] = {}
    notes_dir = run_dir / "notes"
    if notes_dir.is_dir():
        for path in sorted(notes_dir.glob("*.json")):
            merged.update(read_annotation(path))  # a broken edit is skipped, never fatal
    return merged


class _Batch:
    """Rows of several runs, written with one statement per table."""

    def __init__(self, keep: tuple[list, list, list] | None = None) -> None:
        self.runs: list[tuple] = []
        self.args: list[tuple] = []
        self.metrics: list[tuple] = []
        self.known: list[tuple[str]] = []  # runs the index had: their old args go first
        self.kept = keep  # every record written, when the caller keeps them

    def add(self, parts: RunParts, row: tuple, known: bool = True) -> None:
        """Add one run, all of it or (when its values do not decode) none of it."""
        args, metrics = arg_records(parts), metric_records(parts)
        self.runs.append(row)
        self.args.extend(args)
        self.metrics.extend(metrics)
        if known:
            self.known.append((row[0],))

    def write(self, conn: sqlite3.Connection) -> None:
        """Inside the caller's transaction: a run's row and its args/metrics go together."""
        if not self.runs:
            return
        if self.known:  # a run new to the index has none (a first sync: no deletes at all)
            conn.executemany("DELETE FROM args WHERE run_id=?", self.known)
            conn.executemany("DELETE FROM metrics WHERE run_id=?", self.known)
        # OR REPLACE: another reader may have indexed a "new" run since this one looked.
        conn.executemany(INSERT_RUN, self.runs)
        conn.executemany("INSERT OR REPLACE INTO args VALUES (?,?,?,?)", self.args)
        conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         self.metrics)
        if self.kept is not None:
            for kept, written in zip(self.kept, (self.runs, self.args, self.metrics)):
                kept.extend(written)
        self.runs, self.args, self.metrics, self.known = [], [], [], []


_HIDDEN = RUN_COLUMNS.index("hidden")


def _newest_first(record: tuple) -> tuple:
    """Sort key of a `runs` record, reversed: ORDER BY created DESC, id DESC (NULL last)."""
    created = record[4]
    return created is not None, created or 0.0, record[0]


class Index:
    """SQLite summary of a store's runs, kept in step with `runs/` on demand."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root)
        self.path = self.root / "index.sqlite"
        self._local = threading.local()
        # Parsed rows of the last run_rows() call, dropped whenever sync changes anything.
        self._rows_cache: dict[str, dict[str, Any]] | None = None
        # The records a first sync wrote (runs, args, metrics): the rows, once assembled.
        self._written: tuple[list, list, list] | None = None

    def _forget_rows(self) -> None:
        self._rows_cache = self._written = None

    # -- connection ------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            prepare(conn)  # an older version's index: migrated, or dropped and rebuilt
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
        known: dict[str, tuple[str, str]] = {}
        origin_of: dict[str, str] = {}
        for run_id, sig, status, origin in conn.execute(
                "SELECT id, signature, status, origin FROM runs"):
            known[run_id] = (sig, status)
            if origin is not None:
                origin_of[run_id] = origin
        base = runs_dir(self.root)
        present: set[str] = set()
        changed: list[tuple[str, str | None, bool]] = []
        looked: set[str] = set()  # the names of `changed`
        entries = sorted(os.scandir(base), key=lambda e: e.name) if base.is_dir() else []
        for entry in entries:
            # Never a symlink: a link in runs/ may lead anywhere on disk (store boundary).
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            present.add(entry.name)
            if entry.name not in known:  # new: its signature comes with its listing
                changed.append((entry.path, None, True))
                looked.add(entry.name)
                continue
            old_sig, old_status = known[entry.name]
            sig = signature(entry.path, live=old_status == "running")
            if old_sig == sig and not (old_status == "running"
                                       and self._may_have_died(entry.name)):
                continue
            changed.append((entry.path, sig, old_status == "running"))
            looked.add(entry.name)
        # An empty index (a first sync): the rows are the records this sync writes, so
        # they need not be read back (`assemble_rows` gives what `_load_rows` would).
        kept: tuple[list, list, list] | None = ([], [], []) if not known else None
        updated = self._index_paths(conn, changed, kept)
        moved = self._follow_origins(conn, origin_of, present - looked)
        updated += moved
        gone = set(known) - present
        if gone or updated:
            self._forget_rows()
        if kept is not None and kept[0] and not moved and conn.execute(
                "SELECT count(*) FROM runs").fetchone()[0] == len(kept[0]):
            # (unless another reader indexed runs meanwhile: then they are read back)
            kept[0].sort(key=_newest_first, reverse=True)  # as _load_rows' ORDER BY
            self._written = kept  # never changed again: run_rows assembles what it needs
        if gone:
            conn.execute("BEGIN")
            for run_id in gone:
                for table, col in (("runs", "id"), ("args", "run_id"), ("metrics", "run_id")):
                    conn.execute(f"DELETE FROM {table} WHERE {col}=?", (run_id,))
            conn.execute("COMMIT")
        return updated

    def _follow_origins(self, conn: sqlite3.Connection, indexed: dict[str, str],
                        ids: set[str]) -> int:
        """Set the origin of runs in `ids` whose pull record changed since they were
        indexed (a record written after the run was first seen); their files did not
        change, so their signature says nothing. Cheap: the records are cached."""
        pulled = pulled_origins(self.root)
        fixes = []
        for run_id in ids if pulled or indexed else ():
            now = shown_text(pulled.get(run_id))
            if now != indexed.get(run_id):
                fixes.append((now, run_id))
        if fixes:
            conn.execute("BEGIN")
            conn.executemany("UPDATE runs SET origin=? WHERE id=?", fixes)
            conn.execute("COMMIT")
        return len(fixes)

    def add_runs(self, ids: Iterable[str]) -> int:
        """Index these runs now (e.g. the ones `pull` just brought), without walking the
        whole store; ids that are not run folders in `runs/` are skipped. A finished run
        without a valid row (rows never travel) is read once and gets one, so later
        readers and `reindex` need not decode it either. Returns #indexed."""
        base = runs_dir(self.root)
        paths = []
        for run_id in ids:
            if not isinstance(run_id, str) or not run_id or run_id.startswith(".") \
                    or "/" in run_id or "\\" in run_id or "\x00" in run_id:
                continue
            path = os.path.join(base, run_id)
            if os.path.isdir(path) and not os.path.islink(path):
                if read_row(path) is None and os.path.exists(path + "/summary.json"):
                    record_finish(Path(path))  # best effort: without it, scanned below
                paths.append((path, signature(path), True))
        updated = self._index_paths(self.connect(), paths)
        if updated:
            self._forget_rows()
        return updated

    def _index_paths(self, conn: sqlite3.Connection,
                     paths: list[tuple[str, str | None, bool]],
                     keep: tuple[list, list, list] | None = None) -> int:
        """Index run folders: from their recorded rows where those hold, else by scanning.
        `paths`: (folder, its signature or None for a first look, whether that is the
        long one of a live run); `keep`: lists the records written are added to."""
        batch = _Batch(keep)
        updated = 0
        origins = pulled_origins(self.root) if paths else {}
        conn.execute("BEGIN")  # a transaction per batch of runs: a commit per run costs more
        try:
            for path, sig, live in paths:
                names, new = None, sig is None  # new: not in the index when sync looked
                if new:
                    look = first_look(path)
                    if look is None:
                        continue  # gone meanwhile
                    sig, names = look
                    live = "summary.json" not in names
                parts = read_row(path, names)
                if parts is not None and parts.status == "running":
                    parts.status = run_status(Path(path))  # its process may be gone
                if live:  # a new or live run: the short signature once it has finished
                    status = parts.status if parts is not None else run_status(Path(path))
                    if status != "running":  # the finished parts come first in the long one
                        sig = "|".join(sig.split("|")[:len(FINISHED_PARTS)])
                from_row = parts is not None
                if parts is None:
                    if not os.path.exists(path + "/run.json") \
                            and not os.path.exists(path + "/data.fwl"):
                        continue  # a directory being created right now
                    parts = scan_run(Path(path))
                # The signature says whether notes/ exists (its third part): no stat here.
                notes = latest_annotation(Path(path)) if sig.split("|")[2] != "-" else {}
                origin = origins.get(parts.run_id)
                try:
                    batch.add(parts, row_record(parts, notes, sig, origin), known=not new)
                except (ValueError, RecursionError):
                    if not from_row:
                        raise
                    parts = scan_run(Path(path))  # a row whose value texts are no JSON
                    batch.add(parts, row_record(parts, notes, sig, origin), known=not new)
                updated += 1
                if len(batch.runs) >= 500:  # let other readers' writes in now and then
                    batch.write(conn)
                    conn.execute("COMMIT")
                    conn.execute("BEGIN")
            batch.write(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return updated

    def _may_have_died(self, run_id: str) -> bool:
        # A running run whose process was killed changes no file: re-check its status.
        return run_status(runs_dir(self.root) / run_id) != "running"

    def rebuild(self) -> int:
        """Forget everything and index all runs again (`flowillower reindex`)."""
        self.close()
        self._forget_rows()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(str(self.path) + suffix)
            except FileNotFoundError:
                pass
        return self.sync()

    # -- reading ---------------------------------------------------------------------
    def run_rows(self, ids: Iterable[str] | None = None, *, include_hidden: bool = True,
                 limit: int | None = None) -> list[dict[str, Any]]:
        """One dict per run, newest first: fields, `args` {name: value}, `metrics`
        {name: stats}; with `limit`, only the newest `limit` runs (of `ids`, if given).

        Rows are cached between syncs that change nothing; callers get copies of the
        list, and must not mutate the row dicts.
        """
        if self._rows_cache is None and self._written is not None:
            records, args, metrics = self._written
            if ids is None and limit is not None and limit >= 0:  # the first page only
                page = [r for r in records if include_hidden or not r[_HIDDEN]][:limit]
                return list(assemble_rows(page, args, metrics).values())
            self._rows_cache, self._written = assemble_rows(records, args, metrics), None
        if self._rows_cache is None and ids is None and limit is not None \
                and 0 <= limit <= _MAX_PARAMS:
            # The first page of a cold process: load only those runs' args and metrics.
            return list(self._load_rows(limit, include_hidden).values())
        if self._rows_cache is None:
            self._rows_cache = self._load_rows()
        rows = self._rows_cache.values()
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        rows = [r for r in rows if include_hidden or not r["hidden"]]
        return rows if limit is None else rows[:max(limit, 0)]

    def _load_rows(self, limit: int | None = None, include_hidden: bool = True
                   ) -> dict[str, dict[str, Any]]:
        conn = self.connect()
        records = conn.execute(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
            + ("" if include_hidden else " WHERE hidden=0") + " ORDER BY created DESC, id DESC"
            + ("" if limit is None else f" LIMIT {int(limit)}")).fetchall()
        only, params = "", ()
        if limit is not None:
            only, params = f" WHERE run_id IN ({','.join('?' * len(records))})", tuple(
                rec[0] for rec in records)
        return assemble_rows(
            records, conn.execute("SELECT run_id, name, value, value_json FROM args" + only,
                                  params),
            conn.execute("SELECT run_id, name, role, kind, count, last, last_json, min, max, "
                         "last_step, replayed FROM metrics" + only, params))

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
