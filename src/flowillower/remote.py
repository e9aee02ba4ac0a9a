"""`fw.push` / `fw.pull`: share runs (data and code snapshots) through any git remote."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from .errors import GitError, InvalidRunRefError, RunNotFoundError
from .queries.filters import row_filter
from .store.catalog import Store


def push(remote: str = "origin", runs: str | Sequence[str] | None = None, *,
         include_large: bool = False, no_code: bool = False,
         dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Publish runs to `remote` (a remote name of your repo, a path or a URL).

    `runs` is a filter selecting what to push (default: all) or a list of run ids /
    prefixes / names (a path or `..` raises `InvalidRunRefError`; so does an empty
    string: all runs is `None`). Checkpoints never travel; large artifacts only with
    `include_large`; `no_code` sends run data without code snapshots.

    A Hugging Face Space (`https://huggingface.co/spaces/USER/SPACE` or `hf:USER/SPACE`)
    or a ModelScope studio (`ms:USER/STUDIO`) gets the static viewer of these runs as
    well as their data refs: `flowillower.server.deploy.deploy`'s summary comes back, and
    a `GitError` if the host refused the run refs (the site is then deployed already).
    """
    store = Store(dir, must_exist=True)
    if runs is None:
        ids = None
    elif isinstance(runs, str):
        if not runs.strip():
            raise InvalidRunRefError("an empty run selection; pass runs=None to push all")
        ids = [row["id"] for row in store.runs(row_filter(runs))]
    else:  # explicit references: the store's resolver, never a path
        ids = list(dict.fromkeys(store.resolve(ref) for ref in runs))
    from .server.deploy_targets import is_hosted

    if is_hosted(remote):
        result = deploy_runs(store.root, remote, ids, include_large=include_large,
                             no_code=no_code)
        refused = result["runs"].get("error")
        if refused:
            raise GitError(f"the viewer is deployed to {result['page']}, but {refused}")
        return result
    from .gitops.sync import push as push_runs

    return push_runs(store.root, remote, run_ids=ids, include_large=include_large,
                     no_code=no_code)


def deploy_runs(store_root: str | os.PathLike[str], target: str, ids: list[str] | None,
                **options: bool) -> dict[str, Any]:
    """Deploy the viewer with runs `ids` (all: None) of the store at `store_root` to a
    Space / studio, their data refs alongside; `options`: `include_large`, `no_code`.
    Returns `deploy`'s summary; a refusal of the run refs is in `["runs"]["error"]`."""
    from .server.deploy import deploy

    if ids == []:
        raise RunNotFoundError("no run matches; nothing to deploy")
    if ids is not None and not all(re.fullmatch(r"[\w.-]+", i) for i in ids):
        raise InvalidRunRefError("run ids are letters, digits, '.', '_' and '-'")
    # Ids are plain words (checked above): safe inside a filter's quotes.
    selection = None if ids is None else "id in [" + ", ".join(f"'{i}'" for i in ids) + "]"
    return deploy(store_root, target, runs_filter=selection, **options)


def pull(remote: str = "origin", *, dir: str | os.PathLike[str] | None = None
         ) -> dict[str, Any]:
    """Fetch teammates' runs from `remote`; they appear next to yours."""
    from .gitops.sync import pull as pull_runs

    store = Store(dir)
    result = pull_runs(store.root, remote)
    store.sync()
    return result
