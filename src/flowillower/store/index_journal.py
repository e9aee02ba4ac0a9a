"""`<run>/index-row.json`: the index row a run records for itself, at start and finish.

Each run writes only its own file (a temporary file, then a rename), so writers never
wait for each other or for readers, on one machine or on a shared (NFS) store. A row
that cannot be written (full disk, read-only store, frame files the writer did not write
itself: other ranks', replays) only means readers scan that run as they did before rows
existed: it never fails the run. At finish the row comes from the writer's own per-key
statistics (`store.written`): finish neither reads the records back nor imports numpy.

Readers trust a row only while it matches the run's files: the same frame files with
the same sizes, and a status, timing, args and last values that agree with
summary.json. A row that is missing, damaged, stale or contradicted by the summary is
ignored and the run is scanned, so the summary always wins.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .documents import GIT_FIELDS, META_FIELDS, checked, read_meta, read_summary
from .index_rows import RunParts, scan_run, to_json

if TYPE_CHECKING:
    from .written import WrittenStats

ROW_FILE = "index-row.json"
# 2: an arg and a metric of one name are two entries (1 merged them); 3: `meta_stamp`,
# run.json's stamp (older rows' run.json is read again: the row's copy may be stale).
ROW_VERSION = 3
_STATUSES = ("running", "success", "failed", "killed")
_DATA_FILE = re.compile(r"data(\.rank\d+)?(\.seg\d+)?\.fwl\Z")


def frame_files(run_dir: str, names: list[str] | None = None) -> dict[str, int]:
    """{relative path: size} of the run's frame files (ranks and replays)."""
    base = os.fspath(run_dir)
    found: dict[str, int] = {}
    for name in os.listdir(base) if names is None else names:
        if name[:4] == "data" and _DATA_FILE.match(name):
            found[name] = os.stat(base + "/" + name).st_size
        elif name == "replays":
            try:
                for entry in os.scandir(base + "/replays"):
                    if entry.name.endswith(".fwl") and entry.is_file(follow_symlinks=False):
                        found["replays/" + entry.name] = entry.stat().st_size
            except NotADirectoryError:
                pass
    return found


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # ctime and inode: no copy (tar, rsync -a, a git checkout) can carry them over, so a
    # row that came with its run from elsewhere is always checked against the file.
    return [st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size]


def _summary_stamp(run_dir: str) -> list[int] | None:
    return _stamp(run_dir + "/summary.json")


def _meta_stamp(run_dir: str) -> list[int] | None:
    """run.json's stamp: taken before its fields are read (or right after the writer
    wrote them), so a later rewrite makes the row's copy stale, never the stamp."""
    return _stamp(run_dir + "/run.json")


def _write(run_dir: Path, document: dict[str, Any]) -> bool:
    path = run_dir / ROW_FILE
    tmp = run_dir / f".{ROW_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(document, allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)
        return True
    except Exception:  # full disk, read-only store, odd values: readers scan instead
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def record_start(run_dir: Path, meta: dict[str, Any], args: dict[str, Any]) -> bool:
    """The row of a run that has just started: who it is, its args, no values yet."""
    try:
        document = {"version": ROW_VERSION, "id": run_dir.name, "status": "running",
                    "meta": meta, "created": meta.get("created"), "ended": None,
                    "error": None, "loops": [],
                    "args": [[name, to_json(value)] for name, value in args.items()],
                    "metrics": [], "files": frame_files(os.fspath(run_dir)),
                    "summary": None, "meta_stamp": _meta_stamp(os.fspath(run_dir))}
    except Exception:
        return False
    return _write(run_dir, document)


def _record_or_remove(run_dir: Path, document: dict[str, Any] | None) -> bool:
    if document is not None and _write(run_dir, document):
        return True
    try:  # never leave the start row claiming a finished run is still running
        os.remove(os.fspath(run_dir) + "/" + ROW_FILE)
    except OSError:
        pass
    return False


def record_written(run_dir: Path, written: WrittenStats | None,
                   summary: dict[str, Any]) -> bool:
    """At finish: record the row from the writer's statistics (`written`, None when it
    has none) and the summary it has just written, reading no records; False when it
    could not (the run is then scanned by readers, as before)."""
    base = os.fspath(run_dir)
    document = None
    try:
        files = frame_files(base)
        if written is not None and files == {written.name: written.size}:
            meta_stamp = _meta_stamp(base)
            meta = read_meta(run_dir) or {"id": run_dir.name}
            loops, args, metrics = written.row_parts()
            document = {"version": ROW_VERSION, "id": run_dir.name,
                        "status": summary["status"], "meta": meta,
                        "created": meta.get("created") or summary.get("created"),
                        "ended": summary.get("ended"), "error": summary.get("error"),
                        "loops": loops, "args": [list(a) for a in args],
                        "metrics": [list(m) for m in metrics], "files": files,
                        "summary": _summary_stamp(base), "meta_stamp": meta_stamp}
    except Exception:  # a row is optional: without it readers scan, as before
        document = None
    return _record_or_remove(run_dir, document)


def record_finish(run_dir: Path) -> bool:
    """Read a finished run back (as a reader would) and record its row, e.g. for a run
    that arrived without one (rows never travel); False when it could not."""
    base = os.fspath(run_dir)
    try:
        files, meta_stamp = frame_files(base), _meta_stamp(base)
        parts = scan_run(run_dir)  # the readers' own decoder: the row says what they would
        document = {"version": ROW_VERSION, "id": parts.run_id, "status": parts.status,
                    "meta": parts.meta, "created": parts.created, "ended": parts.ended,
                    "error": parts.error, "loops": parts.loops,
                    "args": [list(a) for a in parts.args],
                    "metrics": [list(m) for m in parts.metrics],
                    "files": files, "summary": _summary_stamp(base),
                    "meta_stamp": meta_stamp}
    except Exception:
        document = None
    return _record_or_remove(run_dir, document)


# -- reading ---------------------------------------------------------------------------
def _number_or_none(value: Any) -> bool:
    kind = type(value)
    return value is None or kind is int or (kind is float and math.isfinite(value))


_ARG_TYPES = (str, str)  # name, value as JSON text
_NUMBER_TYPES = (int, float, type(None))
# The types of a metric's fields as the writer records them (min, max: a number or null).
_METRIC_TYPES = {(str, str, str, int, str, lo, hi, step, bool) for lo in _NUMBER_TYPES
                 for hi in _NUMBER_TYPES for step in (int, type(None))}
_ROLES = frozenset(("metric", "watch"))
_KINDS = frozenset(("float", "int", "object"))
_isfinite = math.isfinite


def _metric_ok(m: Any) -> bool:
    # Exact types first (no bool passes for an int); then only floats need a finite check.
    return (type(m) is list and tuple(map(type, m)) in _METRIC_TYPES
            and m[1] in _ROLES and m[2] in _KINDS and m[3] >= 0
            and (type(m[5]) is not float or _isfinite(m[5]))
            and (type(m[6]) is not float or _isfinite(m[6])))


# The exact JSON type of run.json's fields whose check is a type: the common fields are
# checked without a call each (10,000 rows are read at a cold `ls`).
_META_TYPES: dict[str, type] = {
    "id": str, "project": str, "name": str, "notes": str, "host": str, "user": str,
    "cwd": str, "python": str, "platform": str, "rank": int, "pid": int, "pid_start": int,
    "segments": int, "packages": dict, "fork_of": dict, "segments_git": list}


def _checked_meta(meta: Any) -> dict[str, Any] | None:
    """`documents.checked(meta, META_FIELDS)`, returning `meta` itself when every known
    field already has its type (the usual case: the run wrote it)."""
    if type(meta) is not dict:
        return None
    for key, value in meta.items():
        kind = _META_TYPES.get(key)
        if kind is not None:
            if type(value) is not kind:
                return checked(meta, META_FIELDS)
        elif key in META_FIELDS and not META_FIELDS[key](value):
            return checked(meta, META_FIELDS)
    return meta


def _parse(doc: Any, run_id: str) -> RunParts | None:
    """The row's parts when every field has the type the writer gives it."""
    if not (type(doc) is dict and doc.get("version") in (1, 2, ROW_VERSION)
            and doc.get("id") == run_id and doc.get("status") in _STATUSES):
        return None
    meta = _checked_meta(doc.get("meta"))
    if meta is None or meta.get("id", run_id) != run_id:
        return None
    if "git" in meta:
        meta["git"] = checked(meta["git"], GIT_FIELDS)
    loops, args, metrics = doc.get("loops"), doc.get("args"), doc.get("metrics")
    created, ended, error = doc.get("created"), doc.get("ended"), doc.get("error")
    if not (_number_or_none(created) and _number_or_none(ended)
            and (error is None or type(error) is str)
            and type(loops) is list and all(type(x) is str for x in loops)
            and type(args) is list and type(metrics) is list):
        return None
    if not all(type(a) is list and tuple(map(type, a)) == _ARG_TYPES for a in args):
        return None
    if not all(map(_metric_ok, metrics)):
        return None
    return RunParts(run_id, meta, doc["status"], created, ended, error, loops,
                    list(map(tuple, args)), list(map(tuple, metrics)))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _agrees(parts: RunParts, summary: dict[str, Any]) -> bool:
    """Whether the row says what summary.json says (status, timing, args, last values)."""
    if parts.status != summary.get("status") or parts.error != summary.get("error"):
        return False
    for key, value in (("created", parts.created), ("ended", parts.ended)):
        if key in summary and not _same(summary[key], value):
            return False
    args = dict(parts.args)
    for name, value in (summary.get("args") or {}).items():
        if name not in args or not _same(json.loads(args[name]), value):
            return False
    last = summary.get("last") or {}
    shown = {m[0]: m[4] for m in parts.metrics if m[1] == "metric"}
    if set(shown) != set(last):
        return False
    return all(_same(json.loads(shown[name]), value) for name, value in last.items())


def _read_bytes(path: str) -> bytes:
    """The file's bytes with two system calls fewer than `open()` (a cold index reads
    10,000 rows). A short read ends it: a row cut short is no JSON, so never trusted."""
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks = [os.read(fd, 8192)]
        while len(chunks[-1]) == 8192:
            chunks.append(os.read(fd, 8192))
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_decoder = json.JSONDecoder()


def _loads(text: str) -> Any:
    """`json.loads(text)` for a row as the writer wrote it (no surrounding blanks) in two
    thirds of the time; anything else goes through `json.loads` itself."""
    try:
        doc, end = _decoder.raw_decode(text)
    except ValueError:
        return json.loads(text)  # raises as json.loads would (leading blanks: parsed)
    return doc if end == len(text) else json.loads(text)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _with_current_meta(parts: RunParts, doc: dict[str, Any], base: str) -> RunParts | None:
    """`parts` with run.json's fields as they are now: the row's copy while run.json is
    the file it was taken from (its stamp), else run.json read again (rewritten since:
    a set-up that completed it, a resume, an edit; or a row older than the stamp)."""
    stamp = doc.get("meta_stamp")
    if stamp is not None and stamp == _meta_stamp(base):
        return parts
    meta = read_meta(Path(base)) or {"id": parts.run_id}  # what a reader would see
    if meta.get("id", parts.run_id) != parts.run_id:
        return None
    parts.meta = meta
    return parts


def read_row(run_dir: str | Path, names: list[str] | None = None) -> RunParts | None:
    """The run's recorded row when it is intact and still true of the run's files;
    None means: scan the run. `names`: the folder's listing when the caller has just
    taken one (taken before the row is read, so a change after it makes the row stale,
    never the listing). run.json's fields are the file's own even when it changed after
    the row was written (`_with_current_meta`)."""
    base = os.fspath(run_dir)
    try:
        if names is not None and ROW_FILE not in names:
            return None
        doc = _loads(_read_bytes(base + "/" + ROW_FILE).decode())  # the writer's UTF-8
        if names is None:
            names = os.listdir(base)
        parts = _parse(doc, os.path.basename(base))
        if parts is None or frame_files(base, names) != doc.get("files"):
            return None
        if "summary.json" not in names:
            return _with_current_meta(parts, doc, base) if parts.status == "running" else None
        if parts.status == "running":
            return None  # finished since: the row is from the start
        stamp = doc.get("summary")
        # Rows since version 2 keep an arg and a metric of one name apart (1 merged them).
        if stamp is not None and stamp == _summary_stamp(base) and doc["version"] >= 2:
            return _with_current_meta(parts, doc, base)  # written right after this summary
        summary = read_summary(Path(base))
        if summary is None or not _agrees(parts, summary):
            return None
        return _with_current_meta(parts, doc, base)
    except (OSError, ValueError, TypeError, RecursionError):
        return None
