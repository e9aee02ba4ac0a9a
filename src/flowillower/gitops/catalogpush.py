"""Keeping a remote's run catalog (`catalog`) up to date after a push.

After the run refs went, the rows of the pushed runs whose catalog row is missing or
names another version are written onto the remote's newest catalog and pushed as a
fast-forward of it. Another machine that updated the catalog meanwhile makes that push
fail; then the newest catalog is fetched, joined (the union by run id) and pushed again,
a few times at most with a random pause, like run refs. A run's row is written only for
the version its ref names on the remote at that moment, so the row of a run that another
machine changed since is left to that machine's push.

Losing this race for good (or any error here) loses no run: the run refs are the truth,
and a filtered pull fetches whole the runs the catalog does not cover.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import GitError
from .catalog import (
    Catalog,
    fetch_catalog,
    read_catalog,
    rows_of_commits,
    seen_ref,
    shard_of,
    write_catalog,
)
from .pushstate import load_catalog_seen, save_catalog_seen
from .refs import BEHIND_REASONS, CATALOG_REF, RUN_REF_PREFIX, ls_remote
from .repo import redact, store_git

__all__ = ["update_catalog", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 10


def _push(git_dir: Path, url: str, commit: str, env: Mapping[str, str] | None
          ) -> tuple[bool, str]:
    """Offer `commit` as the remote's catalog (a fast-forward only); (done, git's words)."""
    proc = store_git(git_dir, ["push", "--porcelain", "--no-verify", url,
                               f"{commit}:{CATALOG_REF}"], transport=True, check=False,
                     env=env)
    text = proc.stdout.decode(errors="replace")
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].endswith(":" + CATALOG_REF):
            return parts[0] != "!", (parts[2] if len(parts) > 2 else "")
    return False, proc.stderr.decode(errors="replace").strip()


def update_catalog(git_dir: Path, url: str, pushed: dict[str, str],
                   there: dict[str, str], env: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """Give the runs `pushed` ({run id: commit now on the remote}) their rows in the
    remote's catalog. `there` is what the remote's refs were last seen as (its catalog
    ref included); the pushed runs' refs are taken as `pushed` at first. `env`: extra
    variables for git's transfers (a deploy's credentials, `refs.transport_env`).

    What the catalog this store last wrote or read describes is remembered
    (`pushstate.load_catalog_seen`), so while the remote's catalog is still that commit a
    push reads no row at all, and one that adds rows reads only their shards.

    Returns `{"rows" (rows written), "attempts" (catalog pushes made), "seconds",
    "error" (why the catalog was left as it was, or None)}`; never raises for the
    remote's sake: the runs are pushed whatever happens here.
    """
    start = time.perf_counter()
    report: dict[str, Any] = {"rows": 0, "attempts": 0, "seconds": 0.0, "error": None}
    current = {**there, **{RUN_REF_PREFIX + rid: sha for rid, sha in pushed.items()}}
    store_root, key = git_dir.parent, seen_ref(url).rsplit("/", 1)[-1]
    seen = loaded = load_catalog_seen(store_root, key)
    try:
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                # someone else moved the catalog: wait a random while, then look again
                time.sleep(min(3.0, random.uniform(0.05, 0.3) * 1.6 ** attempt))
                current = ls_remote(git_dir, url, [RUN_REF_PREFIX + "*", CATALOG_REF], env)
            remote_catalog = current.get(CATALOG_REF)
            base: Catalog | None = None
            if remote_catalog and seen is not None and seen[0] == remote_catalog:
                known = seen[1]
            else:  # another machine's catalog (or none yet): read all of it once
                base = read_catalog(git_dir, fetch_catalog(git_dir, url, remote_catalog, env)
                                    if remote_catalog else None)
                known = {rid: row["commit"] for rid, row in base.rows.items()}
                if base.commit:
                    seen = (base.commit, known)
            mine = {rid: sha for rid, sha in pushed.items()
                    if current.get(RUN_REF_PREFIX + rid) == sha and known.get(rid) != sha}
            if not mine and not (base and base.bad_shards):
                report["error"] = None  # complete (perhaps thanks to another machine)
                break
            if base is None:  # only the shards our rows go to
                if fetch_catalog(git_dir, url, remote_catalog, env) != remote_catalog:
                    seen = None  # that version is gone here: read the remote's whole
                    report["error"] = "the remote's run catalog changed while it was read"
                    continue
                base = read_catalog(git_dir, remote_catalog, {shard_of(rid) for rid in mine})
            rows = rows_of_commits(git_dir, mine)
            # our ref for the remote's catalog names the new version at once: it holds
            # the remote's as its parent, and the next try starts from the remote anyway
            commit = write_catalog(git_dir, base, rows, seen_ref(url))
            report["attempts"] += 1
            done, why = _push(git_dir, url, commit, env)
            if done:
                report["rows"], report["error"] = len(rows), None
                seen = (commit, {**known, **{rid: row["commit"] for rid, row in rows.items()}})
                break
            report["error"] = redact(f"the remote's run catalog was not updated: {why}")
            if not any(word in why for word in BEHIND_REASONS):
                break  # refused (a hook, permissions), not raced: trying again changes nothing
    except GitError as exc:
        report["error"] = f"the remote's run catalog was not updated: {exc}"
    if seen is not None and seen is not loaded:
        save_catalog_seen(store_root, key, *seen)
    return _finish(report, start)


def _finish(report: dict[str, Any], start: float) -> dict[str, Any]:
    report["seconds"] = round(time.perf_counter() - start, 4)
    return report
