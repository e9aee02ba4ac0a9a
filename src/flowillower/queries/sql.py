"""`fw.query(sql)`: raw read-only SQL over the derived index.

Tables: `runs` (id, project, name, status, created, ended, duration, tags, notes, hidden,
host, git_head, git_branch, git_dirty, snapshot, meta, error, loops), `args` (run_id,
name, value, value_json) and `metrics` (run_id, name, role, kind, count, last, last_json,
min, max, last_step, replayed).
"""

from __future__ import annotations

import os
import sqlite3

import pandas as pd

from ..store.catalog import Store


def query(sql: str, params: tuple | dict | None = None, *,
          dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Run a SELECT against the index (synced first) and return a DataFrame."""
    store = Store(dir)
    store.sync()
    # A separate read-only connection: a query can never modify the index.
    # as_uri() percent-encodes: a `#` or `?` in the store's path would otherwise cut the
    # URI short and open (creating it) some other file, read-write.
    uri = f"{store.index.path.absolute().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return pd.read_sql_query(sql, conn, params=params)
