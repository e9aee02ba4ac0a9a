"""The index's SQLite tables, and bringing an index written by an older version up to
date when a reader opens it.

The index is a cache of `runs/`, so an index of an unknown version is dropped and
rebuilt. Version 4 (the one before `fork_of`) is migrated in place instead: rebuilding
means reading every run again, and runs recorded before runs kept their own index row
(`index_journal`) would be decoded one by one. Version 4 kept each run's whole run.json
in a `meta` column that nothing read; its `fork_of` is taken from there, then the column
goes (it cost a JSON encoding per run and most of the table's bytes), and so do the
indexes of args and metrics by name, which no query used.
"""

from __future__ import annotations

import json
import sqlite3

from .index_rows import RUN_COLUMNS, fork_parent

SCHEMA_VERSION = 5  # 5: fork_of / fork_step columns; no meta column, no name indexes
# author: run.json's `user`; origin: the remote a pulled run came from (`provenance`),
# None for runs made here. Both, and host, as `index_rows.shown_text` keeps them.
# fork_of / fork_step: the parent and step of a fork (`index_rows.fork_parent`).
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, project TEXT, name TEXT, status TEXT, created REAL, ended REAL,
    duration REAL, tags TEXT, notes TEXT, hidden INTEGER DEFAULT 0, host TEXT,
    git_head TEXT, git_branch TEXT, git_dirty INTEGER, snapshot TEXT, signature TEXT,
    error TEXT, loops TEXT, author TEXT, origin TEXT, fork_of TEXT, fork_step INTEGER);
CREATE TABLE IF NOT EXISTS args (run_id TEXT, name TEXT, value, value_json TEXT,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS metrics (run_id TEXT, name TEXT, role TEXT, kind TEXT,
    count INTEGER, last, last_json TEXT, min REAL, max REAL, last_step INTEGER,
    replayed INTEGER, PRIMARY KEY (run_id, name));
"""
# Version 4's indexes by name, which no query used: each insert paid for them.
_DROPPED = ("DROP INDEX IF EXISTS metrics_name", "DROP INDEX IF EXISTS args_name")

# A run's row, by column name: an index migrated from version 4 orders its columns
# differently from a new one (ALTER TABLE appends).
INSERT_RUN = (f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})")


def _migrate_from_4(conn: sqlite3.Connection) -> bool:
    """Add the fork columns, filled from the kept run.json, and drop `meta`; inside the
    caller's transaction. False when this SQLite cannot drop a column (before 3.35):
    the caller rebuilds instead."""
    if sqlite3.sqlite_version_info < (3, 35):
        return False
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if "meta" not in columns or "fork_of" in columns:
        return False  # not the version 4 this knows
    conn.execute("ALTER TABLE runs ADD COLUMN fork_of TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN fork_step INTEGER")
    fixes = []
    for run_id, meta in conn.execute("SELECT id, meta FROM runs WHERE instr(meta, 'fork_of')"):
        try:
            fork = fork_parent(json.loads(meta))
        except (ValueError, TypeError, RecursionError):
            fork = None
        if fork is not None:
            fixes.append((fork[0], fork[1], run_id))
    conn.executemany("UPDATE runs SET fork_of=?, fork_step=? WHERE id=?", fixes)
    conn.execute("ALTER TABLE runs DROP COLUMN meta")
    for statement in _DROPPED:
        conn.execute(statement)
    return True


def prepare(conn: sqlite3.Connection) -> None:
    """Make `conn`'s database an index of this version: migrate (version 4), drop an
    index of any other version, create what is missing. One writer at a time (an
    immediate transaction): two readers opening an old index migrate it once."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        conn.executescript(SCHEMA)  # nothing to do, unless a table was dropped by hand
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if not (version == 4 and _migrate_from_4(conn)):
                for table in ("runs", "args", "metrics"):  # an old cache: rebuilt by sync
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for statement in SCHEMA.split(";"):  # executescript would commit first
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
