"""What a run records about itself in run.json: who it is, where it ran, its code.

The environment and the code snapshot are captured by a thread started with the run
(`Setup`), so a training script never waits for git; run.json is rewritten when they
are ready. Written atomically: a reader never sees half a document.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .sizes import parse_size
from .store.layout import process_start_ticks


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str, allow_nan=True), encoding="utf-8")
    os.replace(tmp, path)


def default_name(run_id: str) -> str:
    """`<script>-<4 hex>`: readable in tables, unique enough next to the start time."""
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else ""
    return f"{script or 'run'}-{run_id[-4:]}"


def max_buffer_bytes(value: int | str | None) -> int | None:
    """`fw.init(max_buffer=)`: bytes, or a size such as "300MB" / "1GiB" read as the
    writer reads $FLOWILLOWER_MAX_BUFFER; None leaves the writer's default."""
    if value is None or isinstance(value, str):
        return None if value is None else parse_size(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"max_buffer must be a number of bytes or a size like '300MB', "
                     f"not {value!r}")


class Setup:
    """The environment and code snapshot of a run, captured off the training thread.

    `extra` holds them once `done` is set; `on_done` is then called from that thread.
    """

    def __init__(self, store_root: Path, capture: bool, on_done: Callable[[], None]) -> None:
        self.extra: dict[str, Any] = {}
        self.done = threading.Event()
        self._store_root, self._on_done = store_root, on_done
        if capture:
            threading.Thread(target=self._capture, name="flowillower-setup",
                             daemon=True).start()
        else:
            self.extra = {"git": None}
            self.done.set()

    def _capture(self) -> None:
        from .system import environment

        extra: dict[str, Any] = {}
        try:
            extra.update(environment())
        except Exception as exc:  # never let bookkeeping kill training
            extra["environment_error"] = repr(exc)
        try:
            from .gitops.snapshot import take_snapshot

            extra["git"] = take_snapshot(Path.cwd(), self._store_root / "git")
        except Exception as exc:
            extra["git"] = {"snapshot": None, "error": f"{type(exc).__name__}: {exc}"}
        self.extra = extra
        self.done.set()
        self._on_done()


def meta_document(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """run.json: the run's own `fields` (id, name, ...), what `Setup` captured, and this
    process (pid and its start time, so readers can tell a killed run; host)."""
    import socket

    meta = {**fields, "pid": os.getpid()}
    meta.update(extra)
    meta["pid"] = os.getpid()
    meta["pid_start"] = process_start_ticks(os.getpid())
    meta.setdefault("host", socket.gethostname())
    if not isinstance(meta.get("user"), str):  # snapshot=False captures no environment
        import getpass

        try:  # who made the run: `author` in ls and the table
            meta["user"] = getpass.getuser()
        except Exception:  # no login name (some containers): the run has no author
            pass
    return meta
