"""`Store`: the one object readers use (CLI, UI, queries) to reach runs and the index.

Filtering is the query layer's job: `runs()` takes a predicate over rows, built above
(`flowillower.queries.filters.row_filter`), so nothing here depends on `queries/`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .index import Index
from .layout import find_store_root, runs_dir
from .provenance import forget_run
from .resolve import InvalidRunRefError, check_ref, run_path

if TYPE_CHECKING:  # the reader brings numpy: only commands that decode a run load it
    from .reader import RunReader

RowPredicate = Callable[[dict[str, Any]], bool]


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

    def runs(self, where: RowPredicate | None = None, *, include_hidden: bool = True,
             sync: bool = True, limit: int | None = None) -> list[dict[str, Any]]:
        """Run rows (newest first); with `where`, only those for which `where(row)` holds;
        with `limit`, the first `limit` of them (without `where`, only those are loaded).

        A filter text (fitlog syntax, expression, words) becomes a predicate with
        `flowillower.queries.filters.row_filter(text)`.
        """
        if isinstance(where, str):
            # Parsing filter text belongs to the query layer, above the store.
            raise TypeError("Store.runs takes a predicate; turn filter text into one with "
                            "flowillower.queries.filters.row_filter(text)")
        if sync:
            self.sync()
        if where is None:
            return self.index.run_rows(include_hidden=include_hidden, limit=limit)
        rows = [row for row in self.index.run_rows(include_hidden=include_hidden) if where(row)]
        return rows if limit is None else rows[:max(limit, 0)]

    def resolve(self, ref: str) -> str:
        """Run id from an id, unique prefix, unique random suffix or unique name.

        The one door to a run (see `store.resolve`): paths, `..`, empty or hidden
        references, symlinks and folders that hold no run raise `InvalidRunRefError` /
        `RunNotFoundError`; the id returned always names a real run folder in `runs/`.
        """
        return self.run_dir(ref).name

    def run_dir(self, ref: str) -> Path:
        """`runs/<id>` of the run `ref` names, checked to be a real run folder inside
        `runs/` (never a symlink, never outside); errors as `resolve`."""
        runs = runs_dir(self.root)
        try:
            check_ref(ref)
        except InvalidRunRefError as exc:
            self._explain_named(ref, exc)
            raise
        if os.path.lexists(runs / ref):
            # An entry of that exact name: a run, or a clear error about why it is not one
            # (a symlink, a folder without run files), never a lookup that could match
            # some other run by name.
            return run_path(runs, ref)
        self.sync()
        # The index is a cache: the folder may be gone or swapped since, so check it.
        return run_path(runs, self.index.resolve(ref))

    def _explain_named(self, ref: object, exc: InvalidRunRefError) -> None:
        """A refused reference that is some run's name (names may hold `/`): say to use
        the id instead. The name is never used as a path."""
        if not isinstance(ref, str) or not ref.strip() or "\x00" in ref:
            return
        if not runs_dir(self.root).is_dir():
            return
        self.sync()
        ids = self.index.ids_named(ref)
        if ids:
            exc.args = (f"{exc} ({ref!r} is the name of {', '.join(ids[:5])}: give the "
                        "id, names that look like paths are never looked up)",)

    def reader(self, ref: str) -> RunReader:
        """A reader of the run `ref` names (checked as `run_dir`)."""
        from .reader import RunReader

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
        # One clock reading: two readings could straddle a second and name a later edit
        # as earlier, and `latest_annotation` applies edits in name order.
        micros = time.time_ns() // 1000
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(micros // 1_000_000)) + \
            f".{micros % 1_000_000:06d}"
        path = notes / f"{stamp}-{secrets.token_hex(3)}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(fields))
            os.replace(tmp, path)
        except BaseException:
            # A full disk or an interrupt: no half-written leftover; the previous edit
            # stays the one in effect.
            tmp.unlink(missing_ok=True)
            raise
        return fields

    def delete(self, ref: str) -> str:
        """Remove a run folder for good (its code snapshot is collected by `gc`).

        The boundary is checked again right before the move, and links are never
        followed: what is moved is the run folder itself, into the store's trash.
        """
        run_id = self.resolve(ref)
        runs = runs_dir(self.root)
        trash_root = self.root / ".trash"
        trash_root.mkdir(exist_ok=True)
        # A unique name: a previous delete that could not finish never blocks this one.
        trash = trash_root / f"{run_id}-{secrets.token_hex(4)}"
        target = run_path(runs, run_id)  # re-checked right before the move
        # Move aside first so a half-finished delete never leaves a half-run behind.
        # os.replace renames the entry itself: were it swapped for a link since the
        # check, the link moves, not what it points to.
        os.replace(target, trash)
        if trash.is_symlink():
            trash.unlink()
        else:
            shutil.rmtree(trash, ignore_errors=True)  # rmtree never follows links
        forget_run(self.root, run_id)  # its pull record and checkpoint digests
        self.sync()
        return run_id
