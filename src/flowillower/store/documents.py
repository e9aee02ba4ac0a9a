"""A run's JSON documents (run.json, summary.json, notes/*.json) as readers may use them.

A run folder may come from a teammate's push or be damaged on disk. Readers (the index,
the CLI, the UI) do arithmetic and comparisons on these fields, so a field is kept only
when it has the type the store itself writes; a document that is not a JSON object reads
as missing. A hostile or broken file can thus hide its own run's details, and never
break a listing of every run. Fields we don't know pass through unchanged: readers treat
them as opaque JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _number_or_none(value: Any) -> bool:
    return value is None or _number(value)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _flag_or_none(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _listing(value: Any) -> bool:
    return isinstance(value, list)


GIT_FIELDS: dict[str, Check] = {
    "head": _text_or_none, "branch": _text_or_none, "snapshot": _text_or_none,
    "dirty": _flag_or_none, "root": _text_or_none, "error": _text_or_none,
    "skipped": _listing, "left_out": _listing,
}
META_FIELDS: dict[str, Check] = {
    "id": _text, "project": _text, "name": _text, "tags": _texts, "notes": _text,
    "created": _number, "rank": _integer, "pid": _integer, "pid_start": _integer,
    "host": _text, "user": _text, "argv": _texts, "cwd": _text, "python": _text,
    "platform": _text, "packages": _mapping,
    "segments": _integer, "fork_of": _mapping, "segments_git": _listing, "segments_env": _listing,
}
SUMMARY_FIELDS: dict[str, Check] = {
    "id": _text, "status": _text, "created": _number_or_none, "ended": _number_or_none,
    "duration": _number_or_none, "error": _text_or_none, "last": _mapping, "args": _mapping,
    "unused_kwargs": _texts, "dropped_values": _integer,
}
ANNOTATION_FIELDS: dict[str, Check] = {"notes": _text, "hidden": _flag, "tags": _texts}


def checked(document: Any, fields: dict[str, Check]) -> dict[str, Any] | None:
    """`document` without the known fields whose type is wrong; None unless an object."""
    if not isinstance(document, dict):
        return None
    return {key: value for key, value in document.items()
            if key not in fields or fields[key](value)}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, half written, not JSON
        return None


def read_meta(run_dir: Path) -> dict[str, Any] | None:
    """run.json with well-typed known fields (and a checked `git` block), or None."""
    meta = checked(_load(Path(run_dir) / "run.json"), META_FIELDS)
    if meta is not None and "git" in meta:
        meta["git"] = checked(meta["git"], GIT_FIELDS)
    return meta


def read_summary(run_dir: Path, name: str = "summary.json") -> dict[str, Any] | None:
    """summary.json with well-typed known fields, or None."""
    return checked(_load(Path(run_dir) / name), SUMMARY_FIELDS)


def read_annotation(path: Path) -> dict[str, Any]:
    """One user edit (`notes/*.json`): only notes / hidden / tags of the right type."""
    edit = checked(_load(path), ANNOTATION_FIELDS) or {}
    return {key: value for key, value in edit.items() if key in ANNOTATION_FIELDS}
