"""Which fetched runs a `pull --runs` writes, decided from their run.json and summary.json.

A run's row for the filter is built from those two small files only (id, name, project,
tags, notes, created, host, author -- run.json's `user`, also spelled `user` --, status,
ended, duration, args and each metric's last value), read out of the fetched commits by
one `cat-file --batch` per level (commit, root tree, files) without listing the rest of
any run. Runs not selected are not written;
their fetched refs stay, so a later pull writes them without fetching again.

`RunSelection.parse` takes what `flowillower ls` takes (a filter: fitlog syntax, an
expression, words) or run references: a list, or comma-separated text without filter
characters, each matching an id, an id prefix, an id's random suffix or a name. When
every reference is a full run id, only those refs are fetched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRunRefError
from ..store.index_rows import shown_text
from .incoming import valid_run_id
from .pulltrees import parse_tree, read_objects

__all__ = ["RunSelection", "select_commits", "run_row"]

_FILTER_CHARS = re.compile(r"""[\s<>=!${}()"']""")
_FULL_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
_MAX_JSON = 16 * 2**20


@dataclass
class RunSelection:
    """The runs a pull writes: `matches(row)`; `ids` when only those refs need fetching."""

    matches: Callable[[dict[str, Any]], bool]
    ids: list[str] | None = None
    text: str = ""

    @classmethod
    def parse(cls, runs: str | Sequence[str],
              parse_filter: Callable[[str], Callable[[dict[str, Any]], bool]] | None = None
              ) -> RunSelection:
        """A selection from a filter text or run references (see the module).

        `parse_filter` compiles a filter text into a row predicate (the query layer's
        `queries.filters.parse_filter`, passed in: this layer sits below it); without it
        only run references are accepted.
        """
        if isinstance(runs, str):
            if not runs.strip():
                raise InvalidRunRefError("an empty run selection; pull without runs= for all")
            if _FILTER_CHARS.search(runs.strip()):
                if parse_filter is None:
                    raise InvalidRunRefError(f"not run references: {runs!r}")
                return cls(parse_filter(runs), None, runs)
            refs = [part.strip() for part in runs.split(",") if part.strip()]
        else:
            refs = [str(ref).strip() for ref in runs]
        if not refs or any(not ref or not valid_run_id(ref) for ref in refs):
            raise InvalidRunRefError(f"not run references: {runs!r}")
        wanted = set(refs)

        def matches(row: dict[str, Any]) -> bool:
            run_id, name = str(row.get("id", "")), row.get("name")
            return any(run_id == ref or run_id.startswith(ref) or run_id.endswith(ref)
                       or name == ref for ref in wanted)

        exact = refs if all(_FULL_ID.match(ref) for ref in refs) else None
        return cls(matches, exact, ",".join(refs))


def run_row(run_id: str, meta: dict[str, Any], summary: dict[str, Any] | None
            ) -> dict[str, Any]:
    """The filter row of a fetched run (the fields `flowillower ls` filters on that a
    run's run.json and summary.json hold)."""
    summary = summary or {}
    row: dict[str, Any] = {key: meta.get(key) for key in
                           ("name", "project", "tags", "notes", "created")}
    row["id"] = run_id
    # As the index keeps them (`flowillower ls` shows them so): `author == 'alice'` picks
    # the runs `ls "author == 'alice'"` lists once they are here.
    row["host"] = shown_text(meta.get("host"))
    row["user"] = row["author"] = shown_text(meta.get("user"))
    row["git_branch"] = (meta.get("git") or {}).get("branch") \
        if isinstance(meta.get("git"), dict) else None
    row["status"] = summary.get("status", "running")
    for key in ("ended", "duration"):
        row[key] = summary.get(key)
    args, last = summary.get("args"), summary.get("last")
    row["args"] = args if isinstance(args, dict) else {}
    row["metrics"] = {key: {"last": value} for key, value in last.items()} \
        if isinstance(last, dict) else {}
    return row


def _json(data: bytes | None) -> dict[str, Any] | None:
    if data is None or len(data) > _MAX_JSON:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def select_commits(git_dir: Path, commits: dict[str, str], selection: RunSelection
                   ) -> dict[str, str]:
    """The `{run id: commit}` of `commits` whose row `selection` matches (a run whose
    run.json cannot be read matches nothing)."""
    bodies = read_objects(git_dir, list(commits.values()))
    roots: dict[str, str] = {}
    for run_id, commit in commits.items():
        body = bodies.get(commit) or b""
        if body.startswith(b"tree "):
            roots[run_id] = body[5:body.index(b"\n")].decode()
    trees = read_objects(git_dir, list(roots.values()))
    files: dict[str, dict[bytes, str]] = {}
    for run_id, tree in roots.items():
        try:
            entries = parse_tree(trees.get(tree) or b"", len(tree) // 2)
        except ValueError:
            continue
        files[run_id] = {name: sha for mode, name, sha in entries
                         if name in (b"run.json", b"summary.json") and mode & 0o100000}
    blobs = read_objects(git_dir, [sha for found in files.values() for sha in found.values()])
    chosen = {}
    for run_id, commit in commits.items():
        found = files.get(run_id, {})
        meta = _json(blobs.get(found.get(b"run.json", "")))
        if meta is None:
            continue
        summary = _json(blobs.get(found.get(b"summary.json", "")))
        try:
            keep = selection.matches(run_row(run_id, meta, summary))
        except (TypeError, ValueError):
            keep = False  # a value the filter cannot compare: not a match
        if keep:
            chosen[run_id] = commit
    return chosen
