"""What this machine knows about its runs and never shares.

`<store>/local/` sits beside `runs/`, so `push` (which sends run folders only) never sends
it. It records which runs arrived through `pull` and from where: a pulled run is data
written by someone else, and commands that would *execute* something of a run (replay)
treat it as untrusted unless the user says otherwise.

Pull records live in `local/pulled/`. A pull writes ONE file for all the runs it brings
(`pull+<time>+<pid>.jsonl`, one `<run id>\\t<json>` line per run), written aside and
renamed in, so a half-written file cannot exist and a fresh pull of 10,000 runs costs one
file, not 10,000. `mark_pulled` (one run) keeps the older layout, one `<run id>.json` per
run. Forgetting a run removes its own file and, when batch files exist, adds a small
batch file of its own saying so (`forget+...`): earlier lines about the run no longer
count, a later pull's do. Readers merge everything: the first pull's fields win and
`last_pull` is the latest. A line that cannot be parsed still names its run, which then
counts as pulled (failing closed). Batch files are merged into one now and then
(`compact_pulled`, run by pull), so a reader opens a handful of files; they are read once
and cached while the folder is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

LOCAL_DIRNAME = "local"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# '+' is never part of a run id: no batch file name can be taken for a run's records.
_BATCH = re.compile(r"^(pull|forget)\+\d+\+\d+(\+\d+)?\.jsonl$")
_LATEST = ("media_left",)  # fields the latest pull sets, not the first
_COMPACT_OVER = 16
_MEDIA_LEFT = re.compile(r'"media_left": [1-9]')  # batch files a pull tolerates before it merges them into one
_cache: dict[str, tuple[tuple, dict[str, dict[str, Any]]]] = {}
_origins_cache: dict[str, tuple[tuple, dict[str, str]]] = {}
_cache_lock = threading.Lock()


def local_dir(store_root: Path) -> Path:
    """The store-local folder: records about this machine, never pushed."""
    return Path(store_root) / LOCAL_DIRNAME


def _check_id(run_id: str) -> None:
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"not a run id: {run_id!r}")


def _pulled_dir(store_root: Path) -> Path:
    return local_dir(store_root) / "pulled"


def _pulled_path(store_root: Path, run_id: str) -> Path:
    _check_id(run_id)
    return _pulled_dir(store_root) / f"{run_id}.json"


def mark_pulled(store_root: Path, run_id: str, remote: str, **fields: Any) -> None:
    """Remember that `run_id` came from `remote` (a redacted URL or remote name).

    Extra `fields` (e.g. `author`, `host` from the pulled run.json) are kept as given.
    The first pull's record is kept: later pulls of the same run only add `last_pull`.
    """
    path = _pulled_path(store_root, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = pulled_info(store_root, run_id)
    now = time.time()
    if record is None:
        record = {"run": run_id, "remote": remote, "first_pull": now, **fields}
    record["last_pull"] = now
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
    os.replace(tmp, path)


def mark_pulled_many(store_root: Path, records: list[dict[str, Any]],
                     kind: str = "pull") -> Path | None:
    """Remember many pulled runs in one file; each record names its `run` and `remote`
    (plus any fields, e.g. `author`, `host`, `commit`). Returns the file, None if empty.

    Written aside and renamed in: readers see all of these records or none.
    """
    now = time.time()
    stamped = [{"first_pull": now, **record, "last_pull": now} if kind == "pull"
               else {"run": record.get("run"), "forgotten": now} for record in records]
    return _write_batch(store_root, stamped, kind)


def _write_batch(store_root: Path, records: list[dict[str, Any]], kind: str) -> Path | None:
    lines = []
    for record in records:
        run_id = str(record.get("run", ""))
        _check_id(run_id)
        lines.append(f"{run_id}\t{json.dumps(record, default=str)}\n")
    if not lines:
        return None
    folder = _pulled_dir(store_root)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{kind}+{time.time_ns()}+{os.getpid()}+{threading.get_ident() % 10**6}.jsonl"
    tmp = folder / f".{name}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())  # the record must outlive the run it describes
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return folder / name


def _batch_files(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if _BATCH.match(e.name)
                           and e.is_file(follow_symlinks=False)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _merge(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One run's record from its lines: a forget hides every line before it; the first
    pull's fields win, `last_pull` is the latest."""
    forgotten = max((e.get("forgotten", 0) for e in events if "forgotten" in e), default=None)
    pulls = [e for e in events if "forgotten" not in e
             and (forgotten is None or _time(e, "last_pull") > forgotten)]
    if not pulls:
        return None
    pulls.sort(key=lambda e: _time(e, "first_pull"))
    record = dict(pulls[0])
    record["last_pull"] = max(_time(e, "last_pull") for e in pulls)
    for key in _LATEST:  # what the run still lacks: the latest pull knows
        known = [e for e in pulls if key in e]
        if known:
            record[key] = max(known, key=lambda e: _time(e, "last_pull"))[key]
    if any("error" in e for e in pulls):  # one unreadable line keeps the run untrusted
        record.setdefault("error", "unreadable pull record")
    return record


def _time(event: dict[str, Any], key: str) -> float:
    value = event.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _read_batch(path: Path, into: dict[str, list[dict[str, Any]]]) -> None:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return  # vanished (merged by a pull meanwhile): its lines are in the merged file
    for line in text.splitlines():
        run_id, tab, body = line.partition("\t")
        if not tab or not _RUN_ID.match(run_id):
            continue
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            event = {"run": run_id, "remote": "?", "error": "unreadable pull record"}
        event["run"] = run_id
        into.setdefault(run_id, []).append(event)


def _batched(store_root: Path) -> dict[str, list[dict[str, Any]]]:
    """{run id: [lines about it]} from every batch file, cached while they are unchanged."""
    folder = _pulled_dir(store_root)
    files = _batch_files(folder)
    key = tuple((e.name, e.stat(follow_symlinks=False).st_size) for e in files)
    with _cache_lock:
        hit = _cache.get(str(folder))
        if hit is not None and hit[0] == key:
            return hit[1]
    events: dict[str, list[dict[str, Any]]] = {}
    for entry in files:
        _read_batch(Path(entry.path), events)
    with _cache_lock:
        _cache[str(folder)] = (key, events)
    return events


def pulled_runs(store_root: Path) -> dict[str, dict[str, Any]]:
    """{run id: pull record} of every run recorded in batch files (see `pulled_info`)."""
    merged = {run_id: _merge(events) for run_id, events in _batched(store_root).items()}
    return {run_id: record for run_id, record in merged.items() if record is not None}


def runs_missing_media(store_root: Path) -> set[str]:
    """Ids of pulled runs whose media `pull --no-media` left on the remote. Cheap when
    there are none (a text search of the record files, no JSON parsed)."""
    for entry in _batch_files(_pulled_dir(store_root)):
        try:
            text = Path(entry.path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _MEDIA_LEFT.search(text):
            break
    else:
        return set()
    return {run_id for run_id, record in pulled_runs(store_root).items()
            if record.get("media_left")}


def pulled_info(store_root: Path, run_id: str) -> dict[str, Any] | None:
    """The pull record of `run_id`, or None when the run was made on this machine.

    An unreadable record still counts as pulled: failing closed is the safe side.
    """
    try:
        path = _pulled_path(store_root, run_id)
    except ValueError:
        return {"run": run_id, "remote": "?", "error": "invalid run id"}
    events = list(_batched(store_root).get(run_id, ()))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        return {"run": run_id, "remote": "?", "error": repr(exc)}
    if text is not None:
        try:
            record = json.loads(text)
        except ValueError:
            return {"run": run_id, "remote": "?", "error": "unreadable pull record"}
        if not isinstance(record, dict):
            return {"run": run_id, "remote": "?"}
        if not events:
            return record
        events.append(record)
    return _merge(events) if events else None


def _origin_of(record: dict[str, Any]) -> str:
    remote = record.get("remote")
    return remote if isinstance(remote, str) and remote else "?"


def pulled_origins(store_root: Path) -> dict[str, str]:
    """{run id: the remote it was first pulled from} for every run this machine pulled
    (both record layouts); runs made here are absent, an unreadable record reads "?".

    What listings show as a run's `origin`. One scandir when nothing was pulled; the
    answer is kept while the record files are unchanged, so the index can ask at every
    sync."""
    folder = _pulled_dir(store_root)
    try:
        with os.scandir(folder) as entries:
            files = sorted((e for e in entries if not e.name.startswith(".")
                            and e.is_file(follow_symlinks=False)), key=lambda e: e.name)
            key = tuple((e.name, e.stat(follow_symlinks=False).st_size,
                         e.stat(follow_symlinks=False).st_mtime_ns) for e in files)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    with _cache_lock:
        hit = _origins_cache.get(str(folder))
        if hit is not None and hit[0] == key:
            return hit[1]
    found = {run_id: _origin_of(record)
             for run_id, record in pulled_runs(store_root).items()}
    for name, _size, _mtime in key:  # the one-file-per-run layout (`mark_pulled`)
        run_id = name[:-5] if name.endswith(".json") else ""
        if _RUN_ID.match(run_id) and ".." not in run_id:
            record = pulled_info(store_root, run_id)
            if record is not None:
                found[run_id] = _origin_of(record)
    with _cache_lock:
        _origins_cache[str(folder)] = (key, found)
    return found


def is_pulled(store_root: Path, run_id: str) -> bool:
    """Whether `run_id` arrived through `pull` (see `pulled_info`)."""
    return pulled_info(store_root, run_id) is not None


def compact_pulled(store_root: Path) -> bool:
    """Merge the batch files into one when there are many; True when merged.

    Run by pull under the store lock. Safe against a reader (it sees the old files or the
    merged one, each complete) and against a forget written meanwhile (its own file is not
    among those merged, and merging twice gives the same records).
    """
    files = _batch_files(_pulled_dir(store_root))
    if len(files) <= _COMPACT_OVER:
        return False
    events: dict[str, list[dict[str, Any]]] = {}
    for entry in files:
        _read_batch(Path(entry.path), events)
    keep = [record for record in map(_merge, events.values()) if record is not None]
    written = _write_batch(store_root, keep, "pull")  # times kept as they were
    for entry in files:
        if written is None or entry.path != str(written):
            Path(entry.path).unlink(missing_ok=True)
    return True


def forget_run(store_root: Path, run_id: str) -> int:
    """Remove every local record about `run_id` (`local/<kind>/<run id>.*`), e.g. after
    the run was deleted: a run pulled again later starts with a clean slate. Returns the
    number of files removed; links are removed as links, never followed."""
    try:
        _check_id(run_id)
    except ValueError:
        return 0
    removed = 0
    base = local_dir(store_root)
    if not base.is_dir() or base.is_symlink():
        return 0
    for kind in base.iterdir():
        if kind.is_symlink() or not kind.is_dir():
            continue
        for path in kind.glob(f"{run_id}.*"):
            if path.name.split(".", 1)[0] == run_id and (path.is_symlink() or path.is_file()):
                path.unlink(missing_ok=True)
                removed += 1
    folder = _pulled_dir(store_root)
    if not folder.is_symlink() and run_id in _batched(store_root):
        mark_pulled_many(store_root, [{"run": run_id}], kind="forget")
        removed += 1
    return removed
