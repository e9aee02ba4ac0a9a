"""A remote's run catalog: each run's filter row, so a filtered pull fetches only matches.

`push` keeps, on the ref `refs/flowillower/catalog` of each remote, one commit whose tree
holds `format` and `rows/<xx>.json`: 256 shards (`xx` = the first two hex digits of the
sha1 of the run id), each a JSON object `{run id: row}`. A row is what `flowillower ls`
filters on, copied from that run's own run.json and summary.json as they are in the run
commit it names: `{"commit", "meta": {name, project, tags, notes, created, host, user,
git.branch}, "summary": {status, ended, duration, args, last}, "snapshot"}`. A push of
one run rewrites one shard (about 1/256 of the rows) and the small tree above it.

The catalog is a hint, never trusted. A row counts only for the exact commit the run's
ref names on the remote (a stale row, a missing one, one over `ROW_MAX` bytes, or any
row of a shard over `SHARD_MAX` bytes or not parsing means "fetch that run whole and
look"), and a pull checks every fetched run against its own files again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GitError
from .fastimport import import_tree_commit
from .incoming import valid_run_id
from .pulltrees import parse_tree, read_objects
from .refs import CATALOG_REF
from .repo import redact, store_git

__all__ = ["CATALOG_REF", "Catalog", "ROW_MAX", "SHARD_MAX", "seen_ref", "shard_of",
           "make_row", "rows_of_commits", "read_catalog", "covers", "write_catalog",
           "fetch_catalog"]

ROW_MAX = 32 * 1024  # bytes of one row's JSON; a larger row says "look at the run"
SHARD_MAX = 8 * 2**20  # a larger shard is not read at all (its runs are fetched whole)
_FORMAT = b"flowillower run catalog 1\n"
_SEEN_PREFIX = "refs/flowillower/catalogs/"  # our copy of each remote's catalog
_META_KEYS = ("name", "project", "tags", "notes", "created", "host", "user")
_SUMMARY_KEYS = ("status", "ended", "duration", "args", "last")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_MAX_JSON = 16 * 2**20


def seen_ref(url: str) -> str:
    """The local ref keeping our copy of `url`'s catalog (one per remote)."""
    return _SEEN_PREFIX + hashlib.sha1(url.encode("utf-8", "replace")).hexdigest()[:16]


def shard_of(run_id: str) -> str:
    """The shard file (`rows/xx.json`) holding `run_id`'s row."""
    return f"rows/{hashlib.sha1(run_id.encode()).hexdigest()[:2]}.json"


def make_row(commit: str, meta: dict[str, Any], summary: dict[str, Any] | None
             ) -> dict[str, Any]:
    """The catalog row of one run version (a bare "partial" row when it would be larger
    than `ROW_MAX`: a pull then looks at the run itself)."""
    summary = summary if isinstance(summary, dict) else {}
    git = meta.get("git")
    row: dict[str, Any] = {
        "commit": commit,
        "meta": {key: meta[key] for key in _META_KEYS if key in meta},
        "summary": {key: summary[key] for key in _SUMMARY_KEYS if key in summary},
    }
    if isinstance(git, dict):
        if isinstance(git.get("branch"), str):
            row["meta"]["git"] = {"branch": git["branch"]}
        if isinstance(git.get("snapshot"), str) and _COMMIT.match(git["snapshot"]):
            row["snapshot"] = git["snapshot"]
    if len(json.dumps(row, separators=(",", ":"))) > ROW_MAX:
        return {"commit": commit, "partial": True}
    return row


def _json_object(data: bytes | None) -> dict[str, Any] | None:
    if data is None or len(data) > _MAX_JSON:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def rows_of_commits(git_dir: Path, commits: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{run id: row} built from each run commit's own run.json and summary.json (one
    `cat-file --batch`); a commit without a readable run.json gets a partial row."""
    names = [f"{commit}:{name}" for commit in commits.values()
             for name in ("run.json", "summary.json")]
    blobs = read_objects(git_dir, names)
    rows = {}
    for run_id, commit in commits.items():
        meta = _json_object(blobs.get(f"{commit}:run.json"))
        summary = _json_object(blobs.get(f"{commit}:summary.json"))
        rows[run_id] = make_row(commit, meta, summary) if meta is not None \
            else {"commit": commit, "partial": True}
    return rows


@dataclass
class Catalog:
    """One catalog version as read: its usable rows and every shard's blob."""

    commit: str | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    shards: dict[str, str] = field(default_factory=dict)  # "rows/xx.json" -> blob id
    bad_shards: set[str] = field(default_factory=set)  # unreadable: rebuilt from scratch


def _valid_row(row: Any, measure: bool) -> bool:
    """A row of the right shape (and, if `measure`, within `ROW_MAX` bytes: a shard
    smaller than that cannot hold a larger row)."""
    if not isinstance(row, dict) or not isinstance(row.get("commit"), str) \
            or not _COMMIT.match(row["commit"]):
        return False
    if row.get("partial") is True:
        return True
    return isinstance(row.get("meta"), dict) and isinstance(row.get("summary"), dict) \
        and (not measure or len(json.dumps(row, separators=(",", ":"))) <= ROW_MAX)


def _entries(git_dir: Path, tree: str) -> dict[bytes, tuple[int, str]]:
    data = read_objects(git_dir, [tree]).get(tree)
    if data is None:
        raise ValueError("missing tree")
    return {name: (mode, sha) for mode, name, sha in parse_tree(data, len(tree) // 2)}


def _sizes(git_dir: Path, shas: list[str]) -> dict[str, tuple[str, int]]:
    proc = store_git(git_dir, ["cat-file",
                               "--batch-check=%(objectname) %(objecttype) %(objectsize)"],
                     input="".join(f"{sha}\n" for sha in shas).encode())
    found = {}
    for line in proc.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].isdigit():
            found[fields[0]] = (fields[1], int(fields[2]))
    return found


def read_catalog(git_dir: Path, commit: str | None, only: set[str] | None = None
                 ) -> Catalog:
    """The rows of catalog `commit` (present in the store), keeping only what passes the
    checks above; a catalog that cannot be read at all is an empty one. With `only` (shard
    paths), just those shards' rows are read (every shard's blob id still is)."""
    catalog = Catalog(commit=commit)
    if not commit:
        return catalog
    try:
        body = read_objects(git_dir, [commit]).get(commit) or b""
        if not body.startswith(b"tree "):
            raise ValueError("not a commit")
        root = _entries(git_dir, body[5:body.index(b"\n")].decode())
        mode, rows_tree = root.get(b"rows", (0, ""))
        if mode != 0o40000:
            return catalog
        for name, (mode, sha) in _entries(git_dir, rows_tree).items():
            if mode in (0o100644, 0o100755) and re.fullmatch(rb"[0-9a-f]{2}\.json", name):
                catalog.shards[f"rows/{name.decode()}"] = sha
    except ValueError:
        return Catalog(commit=commit)
    wanted = {path: sha for path, sha in catalog.shards.items()
              if only is None or path in only}
    sizes = _sizes(git_dir, list(wanted.values()))
    small = [sha for sha, (kind, size) in sizes.items() if kind == "blob" and size <= SHARD_MAX]
    blobs = read_objects(git_dir, small)
    for path, sha in wanted.items():
        data = blobs.get(sha)
        doc = _json_object(data)
        if doc is None:
            catalog.bad_shards.add(path)
            continue
        measure = len(data or b"") > ROW_MAX
        for run_id, row in doc.items():
            # a row filed under another shard, a name that is no run id, a wrong shape:
            # ignored (that run is looked at directly)
            if valid_run_id(run_id) and shard_of(run_id) == path and _valid_row(row, measure):
                catalog.rows[run_id] = row
    return catalog


def covers(row: dict[str, Any] | None, commit: str) -> bool:
    """Whether `row` describes exactly run version `commit` (and fully)."""
    return row is not None and row.get("commit") == commit and row.get("partial") is not True


def write_catalog(git_dir: Path, base: Catalog, rows: dict[str, dict[str, Any]],
                  ref: str | None = None) -> str:
    """A new catalog version: `base`'s rows with `rows` put in (the union by run id,
    these rows winning), on `base` as parent, kept by `ref`. Only the shards holding
    `rows` (and any that could not be read) are written again; the others keep their
    blobs."""
    touched: dict[str, dict[str, Any]] = {path: {} for path in base.bad_shards}
    for run_id in rows:
        touched.setdefault(shard_of(run_id), {})
    for source in (base.rows, rows):  # theirs first, then ours over them
        for run_id, row in source.items():
            shard = touched.get(shard_of(run_id))
            if shard is not None:
                shard[run_id] = row
    files: dict[str, bytes | str] = {"format": _FORMAT}
    files.update({path: sha for path, sha in base.shards.items() if path not in touched})
    for path, shard in touched.items():
        if shard:
            files[path] = json.dumps(shard, sort_keys=True, separators=(",", ":")).encode()
    return import_tree_commit(git_dir, files, [base.commit] if base.commit else [],
                              "flowillower run catalog\n", ref)


def _resolve(git_dir: Path, names: list[str]) -> list[tuple[str, str] | None]:
    """(object id, type) of each name, in order; None for a name that names nothing."""
    proc = store_git(git_dir, ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
                     input="".join(f"{name}\n" for name in names).encode())
    lines = proc.stdout.decode().splitlines()
    return [(fields[0], fields[1]) if len(fields) == 2 and fields[1] != "missing" else None
            for fields in (line.split() for line in lines)]


def fetch_catalog(git_dir: Path, url: str, commit: str,
                  env: Mapping[str, str] | None = None) -> str:
    """Make the remote's catalog `commit` present here, under our ref for that remote
    (fetched only when this store lacks it); the commit now present (a newer one when
    the remote moved meanwhile). `env`: extra variables for the fetch (credentials)."""
    have, ours = _resolve(git_dir, [commit, seen_ref(url)])
    if have is None or have[1] != "commit":
        proc = store_git(git_dir, ["fetch", "--quiet", "--no-tags", "--no-prune",
                                   "--no-recurse-submodules", url,
                                   f"+{CATALOG_REF}:{seen_ref(url)}"],
                         transport=True, check=False, env=env)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise GitError(redact(f"fetching the run catalog of {url} failed: {err}"))
        have, ours = _resolve(git_dir, [commit, seen_ref(url)])
        if have is None:  # the remote moved on meanwhile: take what came
            return ours[0] if ours else ""
    if ours is None or ours[0] != commit:  # keeps it from gc, and names what we saw
        store_git(git_dir, ["update-ref", seen_ref(url), commit])
    return commit
