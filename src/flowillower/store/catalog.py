"""`Store`: the one object readers use (CLI, UI, queries) to reach runs and the index."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import RunNotFoundError, StoreError
from .index import Index
from .layout import find_store_root, runs_dir
from .reader import RunReader


class Store:
    """A store directory: run folders, the code-snapshot repo and the derived index."""

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, must_exist: bool = False
                 ) -> None:
        self.root = find_store_root(dir)
        if must_exist and not runs_dir(self.root).is_dir():
            raise StoreError(f"no flowillower store at {self.root}; log a run first or pass "
                             "--dir to point at a project")
        self.index = Index(self.root)
        self.git_dir = self.root / "git"

    def sync(self) -> int:
        """Bring the index up to date with the run folders."""
        return self.index.sync()

    def runs(self, filter: str | None = None, *, include_hidden: bool = True,
             sync: bool = True) -> list[dict[str, Any]]:
        """Run rows (newest first), optionally filtered (see `flowillower.queries.filters`)."""
        if sync:
            self.sync()
        rows = self.index.run_rows(include_hidden=include_hidden)
        if filter:
            from ..queries.filters import parse_filter

            predicate = parse_filter(filter)
            rows = [row for row in rows if predicate(row)]
        return rows

    def resolve(self, ref: str) -> str:
        """Run id from an id, unique prefix, unique random suffix or unique name."""
        if (runs_dir(self.root) / ref).is_dir():
            return ref
        self.sync()
        return self.index.resolve(ref)

    def run_dir(self, ref: str) -> Path:
        return runs_dir(self.root) / self.resolve(ref)

    def reader(self, ref: str) -> RunReader:
        return RunReader(self.run_dir(ref))

    def annotate(self, ref: str, **fields: Any) -> dict[str, Any]:
        """Record a user edit (notes, hidden, tags) as a new file: runs stay merge-free."""
        allowed = {"notes", "hidden", "tags"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot annotate {sorted(unknown)}; allowed: {sorted(allowed)}")
        run_dir = self.run_dir(ref)
        notes = run_dir / "notes"
        notes.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
        path = notes / f"{stamp}-{secrets.token_hex(3)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fields))
        os.replace(tmp, path)
        return fields

    def delete(self, ref: str) -> str:
        """Remove a run folder for good (its code snapshot is collected by `gc`)."""
        run_id = self.resolve(ref)
        target = runs_dir(self.root) / run_id
        if not target.is_dir():
            raise RunNotFoundError(f"no run {run_id}")
        # Move aside first so a half-finished delete never leaves a half-run behind.
        trash = self.root / ".trash" / run_id
        trash.parent.mkdir(exist_ok=True)
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.sync()
        return run_id
