"""Code snapshots in a static export: each snapshot's file list and each file's text.

Layout under the site's ``data/code/``::

    trees/<snapshot>.json        {"snapshot", "tree": [{"path", "size", "blob"}], "left_out"}
    blobs/<id[:2]>/<id>.json     one file's text, as /api/runs/<id>/code/file answers it

Files are stored by git blob id, so a file shared by many runs (runs of one repository
share most of theirs) is written once, and so is a snapshot shared by several runs. A
file is cut at `FILE_CAP` bytes (the page says so); a binary file keeps only its size.
The page computes a diff of two runs itself from their trees and the changed files
(`static/js/linediff.js`), so any two exported runs can be compared without writing a
diff per pair.

Only files of a snapshot commit (one kept by a `refs/flowillower/code/<sha>` ref, never
another commit of the store, such as a pushed run's folder) are read, so nothing the
snapshot left out (secrets, `.flowillowerignore`, size caps) can reach the site; a file named like a secret that a
snapshot holds anyway (a `!pattern` override) is left out of the site too (`left_out`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import GitError
from .code_view import (
    FILE_CAP,
    exportable,
    file_doc,
    read_blobs,
    snapshot_refs,
    snapshot_sha,
    snapshot_tree,
)

__all__ = ["CodeExport"]

Dump = Callable[[Path, Any], int]


class CodeExport:
    """Writes the code of the exported runs' snapshots, each tree and file once.

    `dump(path, obj)` writes one JSON document (and its file:// twin) and returns its
    size in characters.
    """

    def __init__(self, git_dir: Path, out: Path, dump: Dump, cap: int = FILE_CAP) -> None:
        self.git_dir, self.base, self.dump, self.cap = Path(git_dir), Path(out) / "data" / "code", dump, cap
        self.trees: dict[str, bool] = {}  # snapshot -> written (False: not in this store)
        self.known: set[str] | None = None  # the store's snapshot refs, read on first use
        self.blobs: set[str] = set()
        self.stats = {"snapshots": 0, "files": 0, "blobs": 0, "bytes": 0, "source_bytes": 0}

    def add(self, meta: dict[str, Any]) -> str | None:
        """Export the snapshot of the run with this run.json; its id, or None if none."""
        sha = snapshot_sha(meta)
        if sha is None or not self.git_dir.is_dir():
            return None
        if self.known is None:
            try:
                self.known = snapshot_refs(self.git_dir)
            except (GitError, OSError):
                self.known = set()
        if sha not in self.known:  # not a snapshot of this store (maybe a run's commit)
            return None
        if sha not in self.trees:
            self.trees[sha] = self._write(sha)
        return sha if self.trees[sha] else None

    def _write(self, sha: str) -> bool:
        try:
            entries = snapshot_tree(self.git_dir, sha)
        except (GitError, OSError):
            return False  # never pulled into this store: the page says there is none
        kept = [e for e in entries if exportable(e)]
        left_out = [e["path"] for e in entries if not e.get("submodule") and not exportable(e)]
        todo = list(dict.fromkeys(e["blob"] for e in kept if e["blob"] not in self.blobs))
        missing = set()
        for blob, data in read_blobs(self.git_dir, todo):
            if data is None:
                missing.add(blob)
                continue
            doc = file_doc(data, self.cap)
            self.stats["bytes"] += self.dump(self.base / "blobs" / blob[:2] / f"{blob}.json", doc)
            self.stats["blobs"] += 1
            self.blobs.add(blob)
        tree = [{k: e[k] for k in ("path", "size", "blob")} for e in kept if e["blob"] not in missing]
        self.stats["bytes"] += self.dump(self.base / "trees" / f"{sha}.json",
                                         {"snapshot": sha, "tree": tree, "left_out": left_out})
        self.stats["snapshots"] += 1
        self.stats["files"] += len(tree)
        self.stats["source_bytes"] += sum(e["size"] for e in tree)
        return True
