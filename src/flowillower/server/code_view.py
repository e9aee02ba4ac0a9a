"""Code snapshots for the UI: a snapshot's files (path, size, blob id), one file's text
capped at `FILE_CAP`, a search of the contents, and the diff of two snapshots.

Read-only queries against the store's own bare repository (never the user's). Shared by
the JSON API (`api.py`) and the static export (`export_code.py`), so both serve the same
documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..gitops.leaveout import secret_pattern
from ..gitops.paths import GITLINK, decode_path, safe_rel
from ..gitops.repo import abandon, batch_read, finish, store_git, store_popen

__all__ = ["FILE_CAP", "SEARCH_LIMIT", "snapshot_sha", "snapshot_refs", "snapshot_tree",
           "exportable", "file_doc", "read_blobs", "search_contents", "code_diff"]

FILE_CAP = 1_000_000  # bytes of one file shown; the rest is cut with a note
DIFF_CAP = 5_000_000  # characters of one diff sent to the page
SEARCH_LIMIT = 1_000  # paths a content search returns at most
_SHA = re.compile(r"[0-9a-f]{7,64}")


def snapshot_sha(meta: dict[str, Any]) -> str | None:
    """The run's code snapshot commit from its run.json, or None (none, or not an id)."""
    sha = (meta.get("git") or {}).get("snapshot")
    return str(sha) if sha and _SHA.fullmatch(str(sha)) else None


def snapshot_refs(git_dir: Path) -> set[str]:
    """The commits the store keeps as code snapshots (`refs/flowillower/code/<sha>`).

    The store's repository also holds each pushed run's folder as a commit; a run.json
    naming one of those as its "snapshot" (a teammate's hostile push) must not get that
    run's files published as code.
    """
    from ..gitops.snapshot import SNAPSHOT_REF_PREFIX

    raw = store_git(git_dir, ["for-each-ref", "--format=%(objectname) %(refname)",
                              SNAPSHOT_REF_PREFIX]).stdout.decode("utf-8", "replace")
    pairs = (line.split(" ", 1) for line in raw.splitlines() if " " in line)
    return {sha for sha, ref in pairs if ref == SNAPSHOT_REF_PREFIX + sha}


def snapshot_tree(git_dir: Path, sha: str) -> list[dict[str, Any]]:
    """Every file of a snapshot: ``{"path", "size", "blob"}`` sorted by path.

    A submodule is listed with ``"submodule": True`` (no content); a path that could
    escape a folder (`..`, absolute) is never listed.
    """
    if not _SHA.fullmatch(sha):
        raise GitError(f"not a snapshot id: {sha!r}")
    raw = store_git(git_dir, ["ls-tree", "-r", "-z", "-l", "--full-tree", sha]).stdout
    out = []
    for record in raw.split(b"\0"):
        if not record:
            continue
        head, _, rel = record.partition(b"\t")
        mode, _kind, obj, size = head.decode().split()
        if not safe_rel(rel):
            continue
        entry: dict[str, Any] = {"path": decode_path(rel), "blob": obj,
                                 "size": int(size) if size.isdigit() else 0}
        if mode == GITLINK:
            entry.update(blob=None, submodule=True)
        elif mode == "120000":
            entry["link"] = True
        out.append(entry)
    out.sort(key=lambda e: e["path"])
    return out


def exportable(entry: dict[str, Any]) -> bool:
    """Whether a snapshot file may go into a static export: not a secret by its name.

    Snapshots leave secrets out when they are taken, but a `!pattern` in the user's
    `.flowillowerignore` (or a teammate's older client) can let one in; a published site
    is a wider audience than the team's store, so such files stay out of it regardless.
    """
    return not entry.get("submodule") and secret_pattern(entry["path"].encode()) is None


def file_doc(data: bytes, cap: int = FILE_CAP) -> dict[str, Any]:
    """What the page shows of one file: size, binary flag, text cut at `cap` bytes."""
    binary = b"\x00" in data[:8000]
    text = None
    if not binary:
        text = data[:cap].decode("utf-8", "replace")
        if len(data) > cap and text.endswith("\ufffd"):
            text = text.rstrip("\ufffd")  # a character cut in half by the cap
    return {"size": len(data), "binary": binary, "truncated": not binary and len(data) > cap,
            "text": text}


def read_blobs(git_dir: Path, shas: Sequence[str]) -> Iterator[tuple[str, bytes | None]]:
    """(blob id, content or None when missing) for each id, through one `cat-file`."""
    if not shas:
        return
    reader = store_popen(git_dir, ["cat-file", "--batch"])
    try:
        yield from batch_read(reader, list(shas))
    except BaseException:
        abandon(reader)
        raise
    finish(reader)


def search_contents(git_dir: Path, sha: str, text: str) -> list[str]:
    """Paths of the snapshot's text files containing `text` (case-insensitive, literal)."""
    if not _SHA.fullmatch(sha):
        raise GitError(f"not a snapshot id: {sha!r}")
    proc = store_git(git_dir, ["grep", "-I", "-l", "-i", "-F", "-z", "--no-color",
                               "-e", text, sha, "--"], check=False)
    if proc.returncode not in (0, 1):  # 1: no match
        raise GitError(proc.stderr.decode("utf-8", "replace").strip())
    prefix = sha.encode() + b":"
    paths = [decode_path(p[len(prefix):] if p.startswith(prefix) else p)
             for p in proc.stdout.split(b"\0") if p]
    return paths[:SEARCH_LIMIT]


def code_diff(git_dir: Path, sha_a: str, sha_b: str) -> tuple[str, bool]:
    """(unified diff from snapshot `sha_a` to `sha_b`, whether it was cut at DIFF_CAP)."""
    from ..gitops.snapshot import diff_snapshots

    text = diff_snapshots(git_dir, sha_a, sha_b)
    return text[:DIFF_CAP], len(text) > DIFF_CAP
