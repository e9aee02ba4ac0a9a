"""One rule for relative paths handed to us: tree entries, and file paths in UI requests.

Snapshot checkouts and pulled runs both turn tree entries into files on disk, and the UI
serves a run's files and a snapshot's files by a path from the URL; a path that could land
outside its folder, or inside a git directory, is refused by all of them alike.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["safe_rel", "decode_path", "is_inside", "GITLINK"]

GITLINK = "160000"  # the mode of a submodule entry in a tree


def safe_rel(rel: bytes | str) -> bool:
    """Whether `rel` (a "/"-separated relative path) stays inside the folder it names.

    Refused: absolute paths, empty, `.` and `..` components, backslashes (a separator on
    Windows), and any component named `.git` in any case (a checkout there would plant
    hooks or config into a repository).
    """
    if isinstance(rel, str):
        try:
            rel = os.fsencode(rel)  # surrogate-escaped bytes come back as they were
        except UnicodeEncodeError:  # a lone surrogate names no file
            return False
    if not rel or rel.startswith(b"/") or b"\0" in rel:
        return False
    return all(part not in (b"", b".", b"..") and part.lower() != b".git"
               and b"\\" not in part
               for part in rel.split(b"/"))


def decode_path(path: bytes) -> str:
    """A tree path as text (undecodable bytes kept as surrogates, as the OS does)."""
    return os.fsdecode(path) if os.name != "nt" else path.decode("utf-8", "surrogateescape")


def is_inside(path: Path, parent: Path) -> bool:
    """Whether `path` is `parent` or below it (lexically)."""
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False
