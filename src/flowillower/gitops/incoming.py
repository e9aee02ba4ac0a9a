"""What a pulled run may contain: a teammate's run is data, never code.

A run commit fetched from a remote was written by whoever can push there. Before a byte
of it reaches the store, every tree entry is checked against the shapes a run folder
really has, and every file's content against its format:

* `run.json` (a JSON object whose `id` is the run's id: otherwise the whole run is
  refused), `summary.json` / `summary.rank<N>.json`, `heartbeat.json`, `notes/*.json`,
  `inputs/*.json` (lineage records), `model/**.json`: JSON that parses;
* `data.fwl` / `data.rank<N>.fwl`, `replays/*.fwl`: record files made of intact frames;
* `media/**`, `artifacts/**` (up to `LARGE_ARTIFACT` bytes each): opaque data, served and
  downloaded but never executed;
* nothing else: not `checkpoints/` (a pickle runs code when loaded), not symbolic links or
  submodules, not a path leaving the run, not a file such as `hook.py` or `.git/config`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..store.format import valid_length
from .paths import safe_rel

__all__ = ["LARGE_ARTIFACT", "valid_run_id", "entry_refusal", "content_refusal",
           "read_run_json"]

LARGE_ARTIFACT = 50 * 2**20  # GitHub warns at 50 MB and refuses files over 100 MB
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TOP_FILES = re.compile(
    r"^(run\.json|summary(\.rank\d+)?(\.seg\d+)?\.json|heartbeat\.json"
    r"|data(\.rank\d+)?(\.seg\d+)?\.fwl)$")
_REPLAY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.fwl$")
_NOTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.json$")
_FILE_MODES = ("100644", "100755")


def valid_run_id(run_id: str) -> bool:
    """Whether `run_id` can name a run folder (no separators, no dot-names, not too long)."""
    return bool(_RUN_ID.match(run_id)) and ".." not in run_id


def entry_refusal(rel: bytes, mode: str, kind: str, size: int) -> str | None:
    """Why a tree entry of a pulled run is refused, or None when it may be written."""
    if kind == "commit" or mode == "160000":
        return "a submodule entry"
    if mode == "120000":
        return "a symbolic link"
    if kind != "blob" or mode not in _FILE_MODES:
        return f"not a plain file (mode {mode})"
    if not safe_rel(rel):
        return "a path leaving the run folder"
    try:
        parts = rel.decode("utf-8").split("/")
    except UnicodeDecodeError:
        return "a file name that is not UTF-8"
    top, depth = parts[0], len(parts)
    if top == "checkpoints":
        return "checkpoints never travel (loading one can run code)"
    if depth == 1:
        return None if _TOP_FILES.match(top) else "not a file a run holds"
    if top == "replays":
        return None if depth == 2 and _REPLAY.match(parts[1]) else "not a replay record file"
    if top == "notes":
        return None if depth == 2 and _NOTE.match(parts[1]) else "not a note (notes/*.json)"
    if top == "inputs":
        return (None if depth == 2 and _NOTE.match(parts[1])
                else "not a lineage record (inputs/*.json)")
    if top == "model":
        return None if parts[-1].endswith(".json") else "not a model graph (model/**.json)"
    if top == "media":
        return None
    if top == "artifacts":
        if size > LARGE_ARTIFACT:
            return f"an artifact over the size cap ({size} > {LARGE_ARTIFACT} bytes)"
        return None
    return "not a folder a run holds"


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def content_refusal(rel: bytes, data: bytes) -> str | None:
    """Why a file's content is refused (it does not match its format), or None."""
    name = rel.rsplit(b"/", 1)[-1]
    if name.endswith(b".fwl"):
        good = valid_length(data)
        if good != len(data):
            return (f"not an intact record file ({len(data) - good} of {len(data)} bytes "
                    "after the last intact frame)")
        return None
    if name.endswith(b".json") and not rel.startswith((b"media/", b"artifacts/")):
        if rel.startswith(b"model/"):
            try:
                json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                return "not valid JSON"
            return None
        return None if _json_object(data) is not None else "not a JSON object"
    return None


def read_run_json(data: bytes | None, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(run.json as a dict, None) when it is a run's, else (None, why the run is refused)."""
    if data is None:
        return None, "no run.json"
    meta = _json_object(data)
    if meta is None:
        return None, "run.json is not a JSON object"
    if meta.get("id") != run_id:
        return None, f"run.json names another run ({str(meta.get('id'))[:80]!r})"
    return meta, None
