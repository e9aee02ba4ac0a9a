"""One rule for the paths of files that come out of a git tree.

Snapshot checkouts and pulled runs both turn tree entries into files on disk; a path that
could land outside the destination, or inside a git directory, is refused by both alike.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["safe_rel", "decode_path", "is_inside", "GITLINK"]

GITLINK = "160000"  # the mode of a submodule entry in a tree


def safe_rel(rel: bytes) -> bool:
    """Whether `rel` (a "/"-separated tree path) stays inside the folder it is written to.

    Refused: absolute paths, empty, `.` and `..` components, backslashes (a separator on
    Windows), and any component named `.git` in any case (a checkout there would plant
    hooks or config into a repository).
    """
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
