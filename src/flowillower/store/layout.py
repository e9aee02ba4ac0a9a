"""Where things live on disk: store discovery, run directories and run ids."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

# Re-exported: the store's readers ask liveness here; `/proc` is parsed in procfs alone.
from ..procfs import pid_alive, process_start_ticks

STORE_DIRNAME = ".flowillower"
RUNS_DIRNAME = "runs"


def _git_toplevel(start: Path) -> Path | None:
    """The git work-tree root containing `start`, found by walking up (no subprocess)."""
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def find_store_root(dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the store directory.

    Order: explicit `dir`, `$FLOWILLOWER_DIR`, `<git toplevel>/.flowillower`,
    `<cwd>/.flowillower`. An explicit directory that does not end in `.flowillower` is
    taken as the project directory and the store goes inside it, unless it already is a
    store (has a `runs/` folder).
    """
    if dir is None:
        dir = os.environ.get("FLOWILLOWER_DIR") or None
    if dir is not None:
        path = Path(dir).expanduser().resolve()
        if path.name == STORE_DIRNAME or (path / RUNS_DIRNAME).is_dir():
            return path
        return path / STORE_DIRNAME
    cwd = Path.cwd().resolve()
    top = _git_toplevel(cwd)
    return (top or cwd) / STORE_DIRNAME


def ensure_store(root: Path) -> Path:
    """Create the store directory (idempotent) and hide it from the user's git."""
    (root / RUNS_DIRNAME).mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        # `*` inside the store: `git status` of the user's repo never shows it, and we
        # never have to edit the user's own .gitignore.
        ignore.write_text("# flowillower store: hidden from git\n*\n")
    return root


def runs_dir(root: Path) -> Path:
    """The folder holding one directory per run."""
    return root / RUNS_DIRNAME


def new_run_id(now: float | None = None) -> str:
    """A sortable, globally unique run id: UTC time plus 32 random bits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(4)}"


def git_toplevel(start: Path) -> Path | None:
    """Public wrapper kept for callers that need the project root."""
    return _git_toplevel(start.resolve())


__all__ = [
    "STORE_DIRNAME",
    "find_store_root",
    "ensure_store",
    "runs_dir",
    "new_run_id",
    "git_toplevel",
    "pid_alive",
    "process_start_ticks",
]
