"""The store boundary: from a user's run reference to a run folder inside `runs/`.

Every command and API that takes a run reference goes through here (via
`Store.resolve` / `Store.run_dir`), so a reference can never name anything but a run:
not `..`, not an absolute path, not a symlink that leads out of `runs/`, not the trash,
not a folder that holds no run. A path is only ever built from a reference after
`check_ref` accepted it as a plain name, and is only handed out after `run_path` saw a
real run folder directly inside `runs/`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import InvalidRunRefError, RunNotFoundError

MAX_REF_LENGTH = 200
# Files that make a folder a run (a run being created has neither for a moment).
RUN_MARKERS = ("run.json", "data.fwl")


def check_ref(ref: object) -> str:
    """`ref` itself when it can name a run (id, prefix, suffix or name), else
    InvalidRunRefError saying why. Nothing touches the file system here."""
    if not isinstance(ref, str):
        raise InvalidRunRefError(f"a run reference must be a string, not {type(ref).__name__}")
    shown = repr(ref[:60])
    if not ref.strip():
        raise InvalidRunRefError("empty run reference; give a run id, id prefix or name "
                                 "(`flowillower ls` lists them)")
    if "\x00" in ref:
        raise InvalidRunRefError(f"{shown} contains a NUL byte; it is not a run reference")
    if "/" in ref or "\\" in ref or (os.altsep and os.altsep in ref):
        raise InvalidRunRefError(f"{shown} is a path, not a run: give a run id, id prefix "
                                 "or name (`flowillower ls` lists them)")
    if ref.startswith("."):  # `.`, `..`, and hidden entries such as the trash
        raise InvalidRunRefError(f"{shown} is not a run: give a run id, id prefix or name")
    if len(ref) > MAX_REF_LENGTH:
        raise InvalidRunRefError(f"{shown}... is longer than {MAX_REF_LENGTH} characters; "
                                 "not a run reference")
    return ref


def run_path(runs: Path, run_id: str) -> Path:
    """`runs/<run_id>`, checked: `run_id` a plain name, the folder a real run directly
    inside `runs` (after resolving every link), not a symlink. RunNotFoundError /
    InvalidRunRefError otherwise."""
    check_ref(run_id)
    path = runs / run_id
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        raise InvalidRunRefError(f"runs/{run_id} is a symbolic link; flowillower never "
                                 "follows links out of its runs folder (remove it yourself)")
    if not stat.S_ISDIR(mode):
        raise RunNotFoundError(f"no run {run_id!r}; `flowillower ls` lists the runs")
    # Given a plain name and no link this always holds; checked anyway, as the last word.
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(runs):
        raise InvalidRunRefError(f"runs/{run_id} leads outside the runs folder")
    if not any(os.path.isfile(os.path.join(path, marker)) for marker in RUN_MARKERS):
        raise RunNotFoundError(f"runs/{run_id} is not a run (no {' or '.join(RUN_MARKERS)})")
    return path


def run_file(run_dir: Path, *parts: str) -> Path:
    """`run_dir/parts...`, refused (InvalidRunRefError) when a link on the way leads
    outside the run folder: a run's own files never reach elsewhere on disk."""
    path = run_dir.joinpath(*parts)
    base = os.path.realpath(run_dir)
    if not os.path.realpath(path).startswith(base + os.sep):
        raise InvalidRunRefError(f"{'/'.join(parts)} of run {run_dir.name} leads outside "
                                 "the run folder")
    return path


def ambiguous(ref: str, candidates: list[tuple[str, str]]) -> RunNotFoundError:
    """The error for a reference matching several runs, listing (id, name) of each."""
    shown = ", ".join(f"{run_id} ({name})" if name and name != run_id else run_id
                      for run_id, name in candidates[:10])
    more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
    return RunNotFoundError(f"{ref!r} matches {len(candidates)} runs: {shown}{more}; give "
                            "more of the id")


__all__ = ["InvalidRunRefError", "check_ref", "run_path", "run_file", "ambiguous",
           "RUN_MARKERS"]
