"""`fw.push` / `fw.pull`: share runs (data and code snapshots) through any git remote."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .errors import InvalidRunRefError
from .queries.filters import parse_filter, row_filter
from .store.catalog import Store


def select_runs(store: Store, runs: str | Sequence[str] | None) -> list[str] | None:
    """Run ids for `runs`: None (all runs) stays None; a string is a filter; a list holds
    run ids / prefixes / names, each resolved by the store (a path, `..` or an empty
    string raises `InvalidRunRefError`)."""
    if runs is None:
        return None
    if isinstance(runs, str):
        if not runs.strip():
            raise InvalidRunRefError("an empty run selection; pass runs=None to push all")
        return [row["id"] for row in store.runs(row_filter(runs))]
    # explicit references: the store's resolver, never a path
    return list(dict.fromkeys(store.resolve(ref) for ref in runs))


def push(remote: str = "origin", runs: str | Sequence[str] | None = None, *,
         include_large: bool = False, no_code: bool = False,
         dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Publish runs to `remote` (a remote name of your repo, a path or a URL).

    `runs` is a filter selecting what to push (default: all) or a list of run ids /
    prefixes / names (a path or `..` raises `InvalidRunRefError`; so does an empty
    string: all runs is `None`). Checkpoints never travel; large artifacts only with
    `include_large`; `no_code` sends run data without code snapshots.
    """
    from .gitops.sync import push as push_runs

    store = Store(dir, must_exist=True)
    return push_runs(store.root, remote, run_ids=select_runs(store, runs),
                     include_large=include_large, no_code=no_code)


def pull(remote: str = "origin", *, runs: str | Sequence[str] | None = None,
         no_media: bool = False, dir: str | os.PathLike[str] | None = None
         ) -> dict[str, Any]:
    """Fetch teammates' runs from `remote`; they appear next to yours.

    `runs` writes only some: a filter as `flowillower ls` takes (over the fields of each
    run's run.json and summary.json: project, name, tags, host, user, created, status,
    args, last metric values) or run ids / id prefixes / names (a list, or text joined
    by commas). A filter is matched against the remote's run catalog first, so only
    matching runs are fetched (runs the catalog does not describe, or a remote without
    one, are fetched whole; the result's `catalog` says how many). `no_media` leaves
    `media/` and `artifacts/` files on the remote for later (a pull without it, or
    opening the run in the UI, brings them).
    """
    from .gitops.pullselect import RunSelection
    from .gitops.sync import pull as pull_runs

    selection = RunSelection.parse(runs, parse_filter) if runs is not None else None
    store = Store(dir)
    result = pull_runs(store.root, remote, runs=selection, no_media=no_media)
    store.sync()
    return result
