"""Heartbeats: how a reader on another host tells a live run from one that died silently.

A run that is on disk and not finished rewrites `<run>/heartbeat.json` every `interval`
seconds, from one interval after its start (until then run.json's `created` stands in),
with one small atomic file replace: a reader never sees half a file. On the host
that wrote the run, a dead writer is found by its pid (`procfs`); a run written on
another machine (pulled, or a shared file system) cannot be asked, so a heartbeat older
than a few intervals reads as `lost`.

One daemon thread serves every run of the process: a heartbeat costs a `stat` of the
run folder per second and one file write per interval, off the training thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Protocol

__all__ = ["HEARTBEAT_FILE", "DEFAULT_INTERVAL", "interval_setting", "attach", "liveness",
           "read_heartbeat", "write_heartbeat"]

HEARTBEAT_FILE = "heartbeat.json"
DEFAULT_INTERVAL = 30.0
ENV = "FLOWILLOWER_HEARTBEAT"  # seconds between beats; 0 turns heartbeats off
# Beyond the missed beats themselves: clocks of two hosts disagree, and a push or a pull
# of the run lags behind its writer.
STALE_GRACE = 60.0
MISSED_BEATS = 3


class Run(Protocol):
    """What heartbeats need of a `flowillower.run.Run`: its folder and whether it ended."""

    id: str
    dir: Path
    status: str | None


def interval_setting() -> float:
    """Seconds between beats from $FLOWILLOWER_HEARTBEAT (default 30; 0: off)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else 0.0


def write_heartbeat(run_dir: Path, interval: float, now: float | None = None) -> None:
    """Replace `<run_dir>/heartbeat.json` atomically with the time of this beat."""
    import socket  # here, not at import: `import flowillower` stays cheap

    beat = {"time": time.time() if now is None else now, "interval": interval,
            "host": socket.gethostname(), "pid": os.getpid()}
    path = Path(run_dir) / HEARTBEAT_FILE
    tmp = path.with_name(f".{HEARTBEAT_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(beat), encoding="utf-8")
    os.replace(tmp, path)


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    """The run's last heartbeat ({time, interval, host, pid}), or None when it has none or
    the file is not a heartbeat (a hostile or damaged file is ignored, never trusted)."""
    try:
        with open(Path(run_dir) / HEARTBEAT_FILE, "rb") as fh:
            data = fh.read(4096)
        beat = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(beat, dict):
        return None
    t, interval = beat.get("time"), beat.get("interval")
    if type(t) not in (int, float) or type(interval) not in (int, float) or interval <= 0:
        return None
    return beat


def liveness(run_dir: str | os.PathLike[str], status: str, *, now: float | None = None,
             stale_after: float | None = None) -> str:
    """`status` as a reader should show it: a `running` run written on another host whose
    heartbeat is stale reads `lost`; every other status is returned unchanged.

    Stale means older than `stale_after` seconds (default: three of the run's intervals
    plus a minute for clock skew). A run from another host without any heartbeat is
    judged by its start time (run.json `created`) the same way. A run of this host is
    left alone: its writer's pid tells the truth (`killed`), a slow beat does not.
    """
    if status != "running":
        return status
    import socket

    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    if meta.get("host") == socket.gethostname():
        return status
    beat = read_heartbeat(run_dir)
    if beat is not None:
        last, interval = float(beat["time"]), float(beat["interval"])
    else:
        created = meta.get("created")
        if type(created) not in (int, float):
            return status  # nothing to judge by: keep what the reader said
        last, interval = float(created), DEFAULT_INTERVAL
    limit = stale_after if stale_after is not None else MISSED_BEATS * interval + STALE_GRACE
    current = time.time() if now is None else now
    return "lost" if current - last > limit else status


def _read_meta(run_dir: Path) -> dict[str, Any]:
    try:
        with open(run_dir / "run.json", "rb") as fh:
            meta = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


class _Beater:
    """The one heartbeat thread of the process and the runs it serves."""

    def __init__(self) -> None:
        self.runs: weakref.WeakSet = weakref.WeakSet()
        self.due: dict[str, float] = {}  # run id -> time of its next beat
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def add(self, run: Run, interval: float) -> None:
        with self.lock:
            self.runs.add(run)
            # The first beat one interval after the start: until then run.json's
            # `created` is the run's sign of life (a short run leaves no heartbeat file).
            self.due[run.id] = time.time() + interval
            run_intervals[run.id] = interval
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="flowillower-heartbeat",
                                               daemon=True)
                self.thread.start()

    def _loop(self) -> None:
        while True:
            with self.lock:
                runs = list(self.runs)
                if not runs:
                    self.thread = None  # the next run starts a new thread
                    return
            tick = min([run_intervals.get(r.id, DEFAULT_INTERVAL) for r in runs] + [1.0])
            for run in runs:
                self._serve(run)
            self.wake.wait(tick)

    def _serve(self, run: Run) -> None:
        if run.status is not None:  # finished: its summary says so from now on
            with self.lock:
                self.runs.discard(run)
                self.due.pop(run.id, None)
                run_intervals.pop(run.id, None)
            return
        now = time.time()
        if now < self.due.get(run.id, 0.0):
            return
        run_dir = run.dir
        if not (run_dir / "run.json").is_file():
            return  # not on disk yet: nothing to keep alive (and nothing to leave behind)
        interval = run_intervals.get(run.id, DEFAULT_INTERVAL)
        try:
            write_heartbeat(run_dir, interval, now)
        except OSError:
            pass  # a full disk must not stop training; the run just looks stale
        self.due[run.id] = now + interval


run_intervals: dict[str, float] = {}
_beater = _Beater()


def attach(run: Run, interval: float | None = None) -> bool:
    """Keep `run` beating every `interval` seconds (default: `interval_setting()`) while it
    is on disk and open, the first one an interval after it starts. A creation hook:
    `on_run_created(attach)`. Returns whether heartbeats are on."""
    every = interval_setting() if interval is None else float(interval)
    if every <= 0:
        return False
    _beater.add(run, every)
    return True


def beating_thread() -> threading.Thread | None:
    """The heartbeat thread while one runs (tests check it ends with the last run)."""
    return _beater.thread
