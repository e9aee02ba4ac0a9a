"""`fw.push` that shares the viewer too: a Hugging Face Space or a ModelScope studio gets
the static UI of the runs (`server.deploy`) with their data refs alongside; any other
remote gets the runs only (`remote.push`). It lives with the web UI because it needs
the UI's export, which the run-sharing layer below (`remote`, `gitops`) never imports.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GitError, InvalidRunRefError, RunNotFoundError
from ..remote import push as push_runs
from ..remote import select_runs
from ..store.catalog import Store

__all__ = ["push", "deploy_runs", "hosted_target"]


def push(remote: str = "origin", runs: str | Sequence[str] | None = None, *,
         include_large: bool = False, no_code: bool = False,
         dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """`flowillower.remote.push` (same arguments and result) for any remote; a Hugging
    Face Space (`https://huggingface.co/spaces/USER/SPACE` or `hf:USER/SPACE`) or a
    ModelScope studio (`ms:USER/STUDIO`) also gets the static viewer of these runs: the
    result is then `flowillower.server.deploy.deploy`'s summary, and a `GitError` says so
    if the host refused the run refs (the viewer is deployed already).
    """
    store = Store(dir, must_exist=True)
    target = hosted_target(remote, store.root)
    if target is None:
        return push_runs(remote, runs, include_large=include_large, no_code=no_code, dir=dir)
    result = deploy_runs(store.root, target, select_runs(store, runs),
                         include_large=include_large, no_code=no_code)
    refused = result["runs"].get("error")
    if refused:
        raise GitError(f"the viewer is deployed to {result['page']}, but {refused}")
    return result


def hosted_target(remote: str, store_root: str | os.PathLike[str]) -> str | None:
    """`remote` itself, or the address of the git remote it names in your project, when
    that is a Space or a studio; None for any other remote."""
    from ..gitops.refs import project_dirs
    from ..gitops.repo import resolve_remote
    from .deploy_targets import is_hosted

    if is_hosted(remote):
        return remote
    try:
        url = resolve_remote(remote, project_dirs(Path(store_root)), push=True)
    except GitError:
        return None  # not a remote name: the plain push says what is wrong
    return url if is_hosted(url) else None


def deploy_runs(store_root: str | os.PathLike[str], target: str, ids: list[str] | None,
                **options: bool) -> dict[str, Any]:
    """Deploy the viewer with runs `ids` (all: None) of the store at `store_root` to
    `target`, their data refs alongside; `options`: `include_large`, `no_code`.
    Returns `deploy`'s summary; a refusal of the run refs is in `["runs"]["error"]`."""
    from .deploy import deploy

    if ids == []:
        raise RunNotFoundError("no run matches; nothing to deploy")
    if ids is not None and not all(re.fullmatch(r"[\w.-]+", i) for i in ids):
        raise InvalidRunRefError("run ids are letters, digits, '.', '_' and '-'")
    # Ids are plain words (checked above): safe inside a filter's quotes.
    selection = None if ids is None else "id in [" + ", ".join(f"'{i}'" for i in ids) + "]"
    return deploy(store_root, target, runs_filter=selection, **options)
