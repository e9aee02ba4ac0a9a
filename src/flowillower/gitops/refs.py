"""Where runs and snapshots live in the store's repository, and where remotes are named."""

from __future__ import annotations

from pathlib import Path

from .repo import store_git

__all__ = ["RUN_REF_PREFIX", "INCOMING_PREFIX", "INCOMING_CODE_PREFIX", "list_refs",
           "project_dirs"]

RUN_REF_PREFIX = "refs/flowillower/runs/"
INCOMING_PREFIX = "refs/flowillower/incoming/"
# Code refs as a remote has them, before their names are checked against their ids.
INCOMING_CODE_PREFIX = "refs/flowillower/incoming-code/"


def list_refs(git_dir: Path, prefix: str) -> dict[str, str]:
    """{ref name: object id} of our refs under `prefix`."""
    listing = store_git(git_dir, ["for-each-ref", "--format=%(refname) %(objectname)",
                                  prefix]).stdout.decode()
    return dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)


def project_dirs(store_root: Path) -> list[Path]:
    """Where a remote *name* is looked up: the project holding the store, then cwd."""
    return list(dict.fromkeys([Path(store_root).parent, Path.cwd()]))
