"""How a run ends: its summary.json and webhook, and the hooks that end it when the script
doesn't say (exit, uncaught exception, SIGTERM/SIGINT).

Hooks are installed once, when the first run touches the disk, and they chain to whatever
handler was there before, so the user's own handlers keep working. Runs are reached only
through their public methods (`finish`, `fail`) and fields: this module sits below
`run.py` and does not import it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from . import args as _args
from .notify import post_error, webhook_body
from .runinfo import atomic_write_json


class Run(Protocol):
    """What this module needs of a `flowillower.run.Run` (which imports this module)."""

    id: str
    name: str
    created: float
    rank: int
    dir: Any
    args: dict[str, Any]

    def finish(self, status: str = "success", notify: str | None = None, *,
               error: str | None = None) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


_open_runs: list[Run] = []
# Work a finished run waits for, at most its own deadline (alerts still being posted):
# registered by modules above run.py, so neither imports the other.
_finish_waits: list[Callable[[], object]] = []
_installed = False
_lock = threading.Lock()


def install(run: Run) -> None:
    """Track `run` so it is finished properly however the interpreter stops."""
    global _installed
    with _lock:
        if run not in _open_runs:
            _open_runs.append(run)
        if _installed:
            return
        _installed = True
    atexit.register(_at_exit)
    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        for open_run in list(_open_runs):
            try:
                open_run.fail(exc)
            except Exception:
                pass
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    if threading.current_thread() is threading.main_thread():
        _chain_signal(signal.SIGTERM)


def _chain_signal(signum: int) -> None:
    previous = signal.getsignal(signum)

    def handler(num, frame):
        for open_run in list(_open_runs):
            try:
                open_run.finish("killed", error=f"received {signal.Signals(num).name}")
            except Exception:
                pass
        if callable(previous):
            previous(num, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # default action: die by this signal, as the caller expects
            signal.signal(num, signal.SIG_DFL)
            os.kill(os.getpid(), num)

    try:
        signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread or an embedded interpreter
        pass


def _at_exit() -> None:
    for open_run in list(_open_runs):
        try:
            open_run.finish("success")
        except Exception as exc:  # pragma: no cover - reported, never raised at exit
            print(f"flowillower: could not finish run {open_run.id}: {exc}", file=sys.stderr)


def wait_at_finish(wait: Callable[[], object]) -> None:
    """Have every `Run.finish` call `wait()` once its summary is written."""
    if wait not in _finish_waits:
        _finish_waits.append(wait)


def finish_waits() -> None:
    """Run the registered waits (each bounds its own time)."""
    for wait in list(_finish_waits):
        wait()


def forget(run: Run) -> None:
    """Stop tracking a finished run."""
    with _lock:
        if run in _open_runs:
            _open_runs.remove(run)


def write_summary(run: Run, writer: Any, status: str, end: float, error: str | None,
                  names: dict[int, str], roles: dict[int, str]) -> dict[str, Any]:
    """Write the run's summary.json (status, timing, last metric values, args) and return
    it; warns when the writer hit an error. `names` / `roles`: key id -> name / role."""
    summary = {
        "id": run.id, "status": status, "created": run.created, "ended": end,
        "duration": end - run.created, "error": error,
        "last": {names[k]: v for k, v in writer.last.items()
                 if k in names and roles.get(k) == "metric"},
        "args": dict(run.args),
        "unused_kwargs": sorted(set(_args.cli_kwargs) - set(run.args)),
    }
    dropped = getattr(writer, "dropped", 0)
    if dropped:  # values past the writer's memory bound (max_buffer)
        summary["dropped_values"] = dropped
    name = "summary.json" if run.rank == 0 else f"summary.rank{run.rank}.json"
    atomic_write_json(run.dir / name, summary)
    if writer.error is not None:
        warnings.warn(f"flowillower: the writer hit an error: {writer.error!r}", stacklevel=3)
    return summary


def record_index_row(run: Run, finished: bool, meta: dict[str, Any] | None = None, *,
                     writer: Any = None, summary: dict[str, Any] | None = None) -> bool:
    """Record the run's index row (`<run>/index-row.json`) at start (`meta`: run.json's
    fields) or at finish (from the closed `writer`'s statistics and the `summary` just
    written: no records are read back, numpy is not imported), so readers know it
    without decoding its records. Never raises and never warns: without a row, readers
    scan the run as they always did."""
    try:
        from .store import index_journal

        if finished:
            written = getattr(writer, "written", None)  # a stand-in writer may lack it
            return index_journal.record_written(
                run.dir, written() if callable(written) else None, dict(summary or {}))
        return index_journal.record_start(run.dir, dict(meta or {}), dict(run.args))
    except Exception:
        return False


def webhook_payload(url: str, run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """A JSON body that Slack, Discord and Feishu/Lark incoming webhooks all accept."""
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in list(summary.get("last", {}).items())[:10])
    text = (f"flowillower run {run.name} ({run.id}) finished: {summary['status']} "
            f"after {summary['duration']:.1f}s" + (f"; {metrics}" if metrics else ""))
    return webhook_body(url, text, {"run": {
        "id": run.id, "name": run.name, "status": summary["status"],
        "duration": summary["duration"], "last": summary["last"]}})


def post_webhook(url: str, run: Run, summary: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST the run summary; a failure warns (the address redacted: a webhook's path is
    its secret) and returns False, it never raises."""
    problem = post_error(url, webhook_payload(url, run, summary), timeout)
    if problem is not None:
        warnings.warn(f"flowillower: {problem}", stacklevel=3)
    return problem is None
