"""The server's window on a store: run rows kept fresh off the request path.

Syncing the index stats every run directory (10,000 runs: ~0.1-0.3 s), so requests never
wait for it: a single worker thread re-syncs when a request finds the rows older than
`interval` seconds and requests answer from the rows of the previous sync meanwhile
(stale by at most one sync). Only the very first request, and requests right after an
edit, wait. Derived results (filtered lists, column facts, sort orders) are cached per
generation of the rows, so scrolling a 10,000-row table re-sorts nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FilterSyntaxError, RunNotFoundError
from ..store.catalog import Store
from ..store.layout import runs_dir
from ..store.resolve import InvalidRunRefError, check_ref, run_path
from .columns import (
    RUN_FIELDS,
    STAT_PREFIXES,
    Row,
    cell,
    hashable,
    lower_is_better,
    sort_key,
    table_columns,
)
from .routing import ApiError


class StoreView:
    """Cached run rows of one store plus the table / points queries over them."""

    def __init__(self, store_root: str | Path, interval: float = 0.5) -> None:
        self.store = Store(store_root)
        self.root = self.store.root
        self.interval = interval
        self.generation = 0
        self._rows: list[Row] | None = None
        self._by_id: dict[str, Row] = {}
        self._count = -1
        self._last_sync = 0.0
        self._gap = interval
        self._syncs = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._wanted = 0  # sync requests; the worker serves them in order
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    # -- keeping fresh -----------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            # One long-lived thread: the index keeps one sqlite connection per thread.
            self._worker = threading.Thread(target=self._work, name="flowillower-ui-sync",
                                            daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._wanted <= self._syncs:
                    self._cond.wait()
                target = self._wanted
            started = time.monotonic()
            try:
                self._sync_once()
                self._error = None
            except BaseException as exc:  # reported to the waiting request
                self._error = exc
            with self._cond:
                self._syncs = max(self._syncs, target)
                self._last_sync = time.monotonic()
                # A big store takes a while to stat: keep syncing to a third of the time.
                self._gap = max(self.interval, 3 * (self._last_sync - started))
                self._cond.notify_all()

    def _sync_once(self) -> None:
        updated = self.store.sync()
        conn = self.store.index.connect()
        count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        if updated or count != self._count or self._rows is None:
            rows = self.store.index.run_rows()
            self._by_id = {r["id"]: r for r in rows}
            self._rows = rows
            self._count = count
            self.generation += 1
            with self._cache_lock:
                self._cache.clear()

    def refresh(self, wait: bool = False) -> None:
        """Make sure rows are at most `interval` old; `wait` blocks for a fresh sync."""
        self._ensure_worker()
        with self._cond:
            stale = time.monotonic() - self._last_sync >= self._gap
            if self._rows is None or wait:
                if self._rows is None and not wait and self._wanted > self._syncs:
                    target = self._wanted  # join the first sync already asked for
                else:  # a sync in flight may have started before an edit: one more
                    target = self._wanted = max(self._wanted, self._syncs) + 1
                self._cond.notify_all()
                while self._syncs < target:
                    self._cond.wait(timeout=60)
                if self._error is not None and self._rows is None:
                    raise self._error
            elif stale and self._wanted <= self._syncs:
                self._wanted = self._syncs + 1
                self._cond.notify_all()

    def prime(self) -> None:
        """Start the first sync now (server start-up) without waiting for it."""
        self._ensure_worker()
        with self._cond:
            if self._wanted <= self._syncs:
                self._wanted = self._syncs + 1
                self._cond.notify_all()

    def rows(self) -> list[Row]:
        self.refresh()
        return self._rows or []

    def row(self, run_id: str) -> Row | None:
        self.refresh()
        return self._by_id.get(run_id)

    # -- run references ----------------------------------------------------------------
    def resolve(self, ref: str) -> str:
        """A known run id from an id, unique prefix or name; ApiError(404/400) otherwise.

        Checked by the store's resolver (`store.resolve.check_ref`) before anything else,
        so `..`, `/etc` or a NUL byte never reach the file system; lookups answer from
        the cached rows and the index (no sync on the request path).
        """
        try:
            check_ref(ref)
        except InvalidRunRefError as exc:
            raise ApiError(400, str(exc)) from None
        self.refresh()
        if ref in self._by_id:
            return ref
        try:
            return self.store.index.resolve(ref)
        except RunNotFoundError:
            pass
        # A run newer than the last sync (a link to a run just started or forked): one
        # fresh sync before saying it does not exist.
        self.refresh(wait=True)
        try:
            return self.store.index.resolve(ref)
        except RunNotFoundError as exc:
            raise ApiError(404, str(exc)) from None

    def run_dir(self, ref: str) -> Path:
        """The run's folder, checked to be a real run directly inside `runs/` (not a
        symlink, not deleted since the last sync)."""
        run_id = self.resolve(ref)
        try:
            return run_path(runs_dir(self.root), run_id)
        except InvalidRunRefError as exc:
            raise ApiError(400, str(exc)) from None
        except RunNotFoundError as exc:
            raise ApiError(404, f"run {run_id}: {exc} (deleted?)") from None

    # -- cached derived results --------------------------------------------------------
    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        key = (self.generation, *key)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return value

    def filtered(self, q: str | None, hidden: bool) -> list[Row]:
        """Rows matching filter `q` (plain text, expression or fitlog syntax), its names
        resolved against the listed runs (an unknown or ambiguous name is a 400)."""
        return self._matched(q, hidden)[0]

    def _matched(self, q: str | None, hidden: bool) -> tuple[list[Row], list[dict]]:
        rows = self.rows()
        q = (q or "").strip()

        def compute() -> tuple[list[Row], list[dict]]:
            base = rows if hidden else [r for r in rows if not r.get("hidden")]
            if not q:
                return base, []
            from ..queries.filters import compile_filter

            try:
                compiled = compile_filter(q, base)
                return ([r for r in base if compiled.predicate(r)],
                        [u.as_dict() for u in compiled.uses])
            except FilterSyntaxError as exc:
                raise ApiError(400, f"bad filter: {exc}", "q") from None
            except (TypeError, ValueError, RecursionError) as exc:
                raise ApiError(400, f"bad filter {q[:80]!r}: {exc}", "q") from None

        return self._cached(("filter", q, hidden), compute)

    def filter_facts(self, q: str | None, hidden: bool) -> dict[str, Any]:
        """How each name of filter `q` resolved, and a filter that works on these runs."""
        def example() -> str | None:
            from ..queries.filters import example_filter

            return example_filter(self._matched("", hidden)[0])

        return {"names": self._matched(q, hidden)[1],
                "example": self._cached(("filter-example", hidden), example)}

    def columns(self, q: str | None, hidden: bool) -> list[dict[str, Any]]:
        """Every column of the matched runs, with constant ones flagged (to fold)."""
        rows = self.filtered(q, hidden)

        return self._cached(("columns", (q or "").strip(), hidden),
                            lambda: table_columns(rows))

    def ordered(self, q: str | None, hidden: bool, sort: str, desc: bool,
                group: str | None) -> list[Row]:
        rows = self.filtered(q, hidden)

        def compute() -> list[Row]:
            out = sorted(rows, key=lambda r: sort_key(cell(r, sort)), reverse=desc)
            if desc:  # missing values last in both directions
                out = [r for r in out if cell(r, sort) is not None] + \
                      [r for r in out if cell(r, sort) is None]
            if group:
                out.sort(key=lambda r: sort_key(cell(r, group)))  # stable: keeps `sort`
            return out

        return self._cached(("order", (q or "").strip(), hidden, sort, desc, group), compute)

    # -- queries -----------------------------------------------------------------------
    def table(self, q: str | None = None, sort: str = "created", desc: bool = True,
              offset: int = 0, limit: int = 100, group: str | None = None,
              cols: list[str] | None = None, hidden: bool = False) -> dict[str, Any]:
        """One page of the runs table (the `/api/runs` answer)."""
        columns = self.columns(q, hidden)
        known = {c["key"] for c in columns}
        for key in [sort, group, *(cols or [])]:
            if key and key not in known and not self._valid_key(key):
                raise ApiError(400, f"unknown column {key!r}; see `columns` in the answer "
                               "for the available ones", "sort")
        rows = self.ordered(q, hidden, sort, desc, group)
        wanted = cols or [c["key"] for c in columns
                          if c["visible"] and not c["constant"] and c["group"] != "run"]
        page = rows[offset:offset + limit]
        out_rows = []
        for r in page:
            out = {k: r.get(k) for k in ("id", "name", "status", "created", "duration",
                                         "tags", "notes", "hidden", "host", "author",
                                         "origin", "git_branch",
                                         "project")}
            out["cells"] = {k: cell(r, k) for k in wanted}
            out["replayed"] = sorted(m for m, s in r["metrics"].items() if s.get("replayed"))
            if group:
                out["group"] = cell(r, group)
            out_rows.append(out)
        result: dict[str, Any] = {
            "generation": self.generation, "total": len(self._rows or []),
            "matched": len(rows), "offset": offset, "limit": limit, "sort": sort,
            "desc": desc, "group": group, "columns": columns, "rows": out_rows,
            "filter": self.filter_facts(q, hidden),
        }
        if group:
            counts: dict[Any, int] = {}
            for r in rows:
                key = hashable(cell(r, group))
                counts[key] = counts.get(key, 0) + 1
            result["groups"] = [{"value": k, "count": v} for k, v in
                                list(counts.items())[:500]]
        return result

    @staticmethod
    def _valid_key(key: str) -> bool:
        kind, sep, name = key.partition(":")
        return bool(sep and name) and kind in ("arg", *STAT_PREFIXES)

    def best(self, cols: list[str], goals: list[str] | None = None, q: str | None = None,
             hidden: bool = False) -> dict[str, Any]:
        """The best value of each metric column among the matched runs, in one pass.

        `goals[i]` ("min" / "max") says which way column `cols[i]` is better; missing, the
        metric's name decides (`columns.lower_is_better`). Only finite numbers count
        (NaN, inf, booleans and text never win). Answers `{"best": {key: {"value",
        "goal", "run", "ties"}}}` (`value` None when no matched run has a number there)."""
        goals = list(goals or [])
        if len(goals) > len(cols):
            raise ApiError(400, "give at most one goal= per col=", "goal")
        wanted: list[tuple[str, str, str, str]] = []  # key, stat, metric, goal
        for i, key in enumerate(dict.fromkeys(cols)):
            stat, _, name = key.partition(":")
            if stat not in ("last", "best", "min", "max") or not name:
                raise ApiError(400, f"{key!r} is not a metric column (last:, best:, min:, "
                               "max: and a metric name)", "col")
            goal = goals[i] if i < len(goals) else ("min" if lower_is_better(name) else "max")
            if goal not in ("min", "max"):
                raise ApiError(400, f"goal must be min or max, not {goal!r}", "goal")
            wanted.append((key, stat, name, goal))
        rows = self.filtered(q, hidden)

        def compute() -> dict[str, Any]:
            found: dict[str, list] = {k: [None, None, 0] for k, *_ in wanted}  # value, id, ties
            for r in rows:  # rows outside, columns inside: one pass over the matched runs
                metrics = r["metrics"]
                for key, stat, name, goal in wanted:
                    stats = metrics.get(name)
                    if stats is None:
                        continue
                    v = cell(r, key) if stat == "best" else stats.get(stat)
                    if type(v) is not float and type(v) is not int:
                        continue  # bools, text, None
                    if v != v or v in (math.inf, -math.inf):
                        continue
                    slot = found[key]
                    if slot[0] is None or (v < slot[0] if goal == "min" else v > slot[0]):
                        slot[0], slot[1], slot[2] = v, r["id"], 1
                    elif v == slot[0]:
                        slot[2] += 1
            return {"matched": len(rows), "best": {
                key: {"value": found[key][0], "goal": goal, "run": found[key][1],
                      "ties": found[key][2]} for key, _s, _n, goal in wanted}}

        return self._cached(("best", (q or "").strip(), hidden,
                             tuple((k, g) for k, _s, _n, g in wanted)), compute)

    def points(self, dims: list[str], q: str | None = None, hidden: bool = False,
               limit: int = 10000) -> dict[str, Any]:
        """Columnar values of some columns for every matched run (scatter, parallel axes)."""
        for key in dims:
            if key not in RUN_FIELDS and not self._valid_key(key):
                raise ApiError(400, f"unknown column {key!r}", "dim")
        rows = self.filtered(q, hidden)[:limit]
        return {"generation": self.generation, "matched": len(rows),
                "ids": [r["id"] for r in rows], "names": [r["name"] for r in rows],
                "status": [r["status"] for r in rows],
                "dims": {k: [cell(r, k) for r in rows] for k in dims}}
