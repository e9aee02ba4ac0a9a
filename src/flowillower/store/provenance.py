"""What this machine knows about its runs and never shares.

`<store>/local/` sits beside `runs/`, so `push` (which sends run folders only) never sends
it. It records which runs arrived through `pull` and from where: a pulled run is data
written by someone else, and commands that would *execute* something of a run (replay)
treat it as untrusted unless the user says otherwise.

One small JSON file per pulled run (`local/pulled/<run id>.json`), written atomically:
two pulls never contend for one file, and a half-written record cannot exist.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

LOCAL_DIRNAME = "local"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def local_dir(store_root: Path) -> Path:
    """The store-local folder: records about this machine, never pushed."""
    return Path(store_root) / LOCAL_DIRNAME


def _pulled_path(store_root: Path, run_id: str) -> Path:
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"not a run id: {run_id!r}")
    return local_dir(store_root) / "pulled" / f"{run_id}.json"


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


def pulled_info(store_root: Path, run_id: str) -> dict[str, Any] | None:
    """The pull record of `run_id`, or None when the run was made on this machine.

    An unreadable record still counts as pulled: failing closed is the safe side.
    """
    try:
        path = _pulled_path(store_root, run_id)
    except ValueError:
        return {"run": run_id, "remote": "?", "error": "invalid run id"}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"run": run_id, "remote": "?", "error": repr(exc)}
    try:
        record = json.loads(text)
    except ValueError:
        return {"run": run_id, "remote": "?", "error": "unreadable pull record"}
    return record if isinstance(record, dict) else {"run": run_id, "remote": "?"}


def is_pulled(store_root: Path, run_id: str) -> bool:
    """Whether `run_id` arrived through `pull` (see `pulled_info`)."""
    return pulled_info(store_root, run_id) is not None


def forget_run(store_root: Path, run_id: str) -> int:
    """Remove every local record about `run_id` (`local/<kind>/<run id>.*`), e.g. after
    the run was deleted: a run pulled again later starts with a clean slate. Returns the
    number of files removed; links are removed as links, never followed."""
    try:
        _pulled_path(store_root, run_id)  # the run id check
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
    return removed
