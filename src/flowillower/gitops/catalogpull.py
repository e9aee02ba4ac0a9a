"""What a filtered pull (`pull --runs FILTER`) fetches, decided from the remote's catalog.

The remote's refs are listed (one `ls-remote`) and its catalog fetched (only what is new
since this store last saw it). A run whose row describes exactly the version its ref
names is fetched only when the filter matches that row; a run the catalog does not cover
(no row, a row for another version, a partial or unreadable one) is fetched whole and
looked at, as is every run of a remote without a catalog (pushed by an older
flowillower). Whatever is fetched is checked against the run's own run.json and
summary.json afterwards (`pullselect.select_commits`): a lying row can only make a run
be fetched and then left out, or be missed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GitError
from .catalog import covers, fetch_catalog, read_catalog, seen_ref
from .incoming import valid_run_id
from .pullselect import RunSelection, run_row
from .pulltrees import read_objects
from .refs import (
    CATALOG_REF,
    CODE_PREFIX,
    INCOMING_CODE_PREFIX,
    INCOMING_PREFIX,
    RUN_REF_PREFIX,
    ls_remote,
)
from .repo import redact, store_git

__all__ = ["CatalogPlan", "plan_fetch", "fetch_code"]

_ALL = [f"+{RUN_REF_PREFIX}*:{INCOMING_PREFIX}*", f"+{CODE_PREFIX}*:{INCOMING_CODE_PREFIX}*"]


@dataclass
class CatalogPlan:
    """The refspecs a filtered pull fetches, and what the catalog said.

    `report` is `{"state": "used" | "missing" | "unreadable", "runs" (run refs on the
    remote), "matched" (rows the filter matches), "skipped" (rows it does not: never
    fetched), "uncovered" (runs without a usable row: fetched whole to look), "error"}`.
    """

    specs: list[str]
    report: dict[str, Any]
    code_refs: set[str] = field(default_factory=set)  # the remote's code ref names


def _matches(selection: RunSelection, run_id: str, row: dict[str, Any]) -> bool:
    try:
        return bool(selection.matches(run_row(run_id, row["meta"], row["summary"])))
    except (TypeError, ValueError, KeyError, AttributeError):
        return False  # a value the filter cannot compare: not a match, as for a run


def plan_fetch(git_dir: Path, url: str, selection: RunSelection) -> CatalogPlan:
    """The refspecs of a pull of the runs `selection` may match (see the module)."""
    listing = ls_remote(git_dir, url, [RUN_REF_PREFIX + "*", CODE_PREFIX + "*", CATALOG_REF])
    runs = {ref.removeprefix(RUN_REF_PREFIX): sha for ref, sha in listing.items()
            if ref.startswith(RUN_REF_PREFIX)}
    code = {ref for ref in listing if ref.startswith(CODE_PREFIX)}
    report: dict[str, Any] = {"state": "used", "runs": len(runs), "matched": 0,
                              "skipped": 0, "uncovered": 0, "error": None}
    if CATALOG_REF not in listing:
        report.update(state="missing", uncovered=len(runs))
        return CatalogPlan(list(_ALL), report, code)
    try:
        catalog = read_catalog(git_dir, fetch_catalog(git_dir, url, listing[CATALOG_REF]))
    except GitError as exc:
        report.update(state="unreadable", uncovered=len(runs), error=str(exc))
        return CatalogPlan(list(_ALL), report, code)
    wanted, snapshots = [], []
    for run_id, sha in sorted(runs.items()):
        row = catalog.rows.get(run_id)
        if valid_run_id(run_id) and covers(row, sha):
            assert row is not None
            if not _matches(selection, run_id, row):
                report["skipped"] += 1
                continue
            report["matched"] += 1
            if isinstance(row.get("snapshot"), str):
                snapshots.append(row["snapshot"])
        else:
            report["uncovered"] += 1  # (an invalid id is fetched to be refused by name)
        wanted.append(run_id)
    specs = [f"+{RUN_REF_PREFIX}{rid}:{INCOMING_PREFIX}{rid}" for rid in wanted]
    specs += [f"+{CODE_PREFIX}{sha}:{INCOMING_CODE_PREFIX}{sha}"
              for sha in dict.fromkeys(snapshots) if CODE_PREFIX + sha in code]
    # never an empty list (a fetch without refspecs would fetch the remote's HEAD): the
    # catalog, already here, costs nothing to name again
    specs.append(f"+{CATALOG_REF}:{seen_ref(url)}")
    return CatalogPlan(specs, report, code)


def fetch_code(git_dir: Path, url: str, plan: CatalogPlan, commits: dict[str, str]) -> int:
    """Fetch the code snapshots the selected runs (`commits`) name in their own run.json
    that this store and this pull lack (rows that lied about them, runs the catalog did
    not cover), into the staging code refs; how many were asked for."""
    if plan.report["state"] != "used" or not commits:
        return 0
    bodies = read_objects(git_dir, [f"{commit}:run.json" for commit in commits.values()])
    names = set()
    for data in bodies.values():
        try:
            meta = json.loads(data) if data is not None and len(data) < 2**24 else None
        except (ValueError, UnicodeDecodeError):
            meta = None
        git = meta.get("git") if isinstance(meta, dict) else None
        sha = git.get("snapshot") if isinstance(git, dict) else None
        if isinstance(sha, str) and CODE_PREFIX + sha in plan.code_refs:
            names.add(sha)
    if not names:
        return 0
    have = store_git(git_dir, ["for-each-ref", "--format=%(refname:lstrip=3)", CODE_PREFIX,
                               INCOMING_CODE_PREFIX]).stdout.decode().split()
    missing = sorted(names - {ref.rsplit("/", 1)[-1] for ref in have})
    if not missing:
        return 0
    proc = store_git(git_dir, ["fetch", "--quiet", "--no-tags", "--no-prune",
                               "--no-recurse-submodules", "--stdin", url],
                     input="".join(f"+{CODE_PREFIX}{sha}:{INCOMING_CODE_PREFIX}{sha}\n"
                                   for sha in missing).encode(),
                     transport=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(redact(f"fetching code snapshots from {url} failed: {err}"))
    return len(missing)
