"""The background writer: the only code that appends to a run's record file.

Each logging thread appends to its own in-memory arrays (a `RecordBuffer` in the run's
`BufferSet`, see store/buffer.py); this thread takes what is queued every `interval`
seconds (sooner past `EARLY_FLUSH_CALLS` queued calls, and on flush/close), encodes it as one frame
and writes it at the end of the last good frame. No per-call file open, fsync or commit.

A failed write (full disk, I/O error, read-only file system) loses nothing: the drained
batches stay pending and are retried at every flush, the file is cut back to its last
good frame, and stderr says so once when it starts and once when writing resumes. Only
past `max_pending_bytes` are the oldest values dropped, counted exactly in `dropped`;
key and context definitions and events are never dropped (later frames need them).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from ..sizes import size_from_env
from .format import columns, encode_frame, last_frame_end, warm_up
from .latest import LatestValues
from .written import WrittenStats

DEFAULT_MAX_PENDING = 256 * 2**20
EARLY_FLUSH_CALLS = 50_000  # queued log calls that make the writer flush before its interval


class Source(Protocol):
    """What the writer persists: a `RecordBuffer` (or a set of them) that drains."""

    def drain(self) -> dict[str, Any] | None: ...


def _say(line: str) -> None:
    """One line on stderr; never raises (this runs on the writer thread and at exit)."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no stderr, or closed
        pass


def _write_at(fd: int, data: memoryview, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - no pwrite on Windows
    return os.write(fd, data)


def _rough_size(value: Any, depth: int = 0) -> int:
    """Approximate memory of a logged object: sizes of its first 64 items, extrapolated."""
    size = sys.getsizeof(value, 64)
    if depth < 3 and isinstance(value, (list, tuple, dict)) and value:
        items = list(value.items() if isinstance(value, dict) else value)
        sample = items[:64]
        sub = sum(_rough_size(v, depth + 1) for v in sample)
        size += sub * len(items) // len(sample)
    return size


class _Pending:
    """One drained batch waiting for the disk, with its encoded frame once made."""

    __slots__ = ("batch", "frame", "size")

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self.frame: bytes | None = None
        self.size: int | None = None  # measured only when the disk fails (hot path free)

    @property
    def values(self) -> int:
        batch = self.batch
        return len(batch["float_cols"][0]) + len(batch["ints"]) + len(batch["objects"])

    def measure(self) -> int:
        batch = self.batch
        size = sum(len(col) * col.itemsize for col in (*batch["call_cols"], *batch["float_cols"]))
        size += 150 * len(batch["ints"])  # list slot, 5-tuple, boxed numbers
        size += sum(150 + _rough_size(row[4]) for row in batch["objects"])
        size += 200 * (len(batch["keys"]) + len(batch["contexts"]) + len(batch["events"]))
        self.size = size + (len(self.frame) if self.frame is not None else 0)
        return self.size

    def strip(self, what: tuple[str, ...] = ("floats", "ints", "objects")) -> int:
        """Remove value columns (never definitions); return how many values went."""
        batch, before = self.batch, self.values
        if "floats" in what:
            batch["call_cols"] = [array("I"), array("q"), array("d"), array("I")]
            batch["float_cols"] = [array("I"), array("d")]
        batch.update({name: [] for name in ("ints", "objects") if name in what})
        self.frame = None
        return before - self.values

    def merge_into(self, later: _Pending) -> None:
        """Hand this (value-less) batch's definitions and events to the next batch."""
        batch, nxt = self.batch, later.batch
        nxt["keys"] = {**batch["keys"], **nxt["keys"]}
        nxt["contexts"] = {**batch["contexts"], **nxt["contexts"]}
        nxt["events"] = batch["events"] + nxt["events"]
        later.frame = None
        later.size = None


class FrameWriter:
    """Owns one `.fwl` file; persists a `RecordBuffer`'s batches from a daemon thread.

    `error` is the exception behind values that were lost (None when nothing was);
    `failure` is the I/O error of an outage still in progress; `dropped` counts the
    values lost (past `max_pending_bytes`, unencodable, or unwritable at close).
    """

    def __init__(self, path: Path, buffer: Source, interval: float = 0.5,
                 max_pending_bytes: int | None = None) -> None:
        self.path = path
        self.buffer = buffer
        self.interval = interval
        if max_pending_bytes is None:
            max_pending_bytes = size_from_env("FLOWILLOWER_MAX_BUFFER", DEFAULT_MAX_PENDING, _say)
        self.max_pending_bytes = max_pending_bytes
        self._wake = threading.Event()
        self._stop = False
        self._io_lock = threading.RLock()  # flush() from a signal handler vs. the loop
        self._writing: int | None = None  # thread id while a flush changes the file
        self._close_requested = False
        self._fd: int | None = None
        self._fd, self._end = self._open(path)  # _end: offset after the last good frame
        self._torn = False  # bytes past _end may be left from a failed write
        self._pending: deque[_Pending] = deque()
        self.error: BaseException | None = None
        self.failure: OSError | None = None
        self.dropped = 0
        self._told: set[str] = set()  # kinds of loss already reported on stderr
        self._caught_up = [0, 0]  # frames, values written since the outage began
        self._latest = LatestValues()
        self.last = self._latest.values  # key id -> last value written (by logging time)
        # Per-key statistics of what this writer wrote (the run's index row), kept only
        # for a file it starts empty: of an older file's frames it knows nothing.
        self._written: WrittenStats | None = WrittenStats(path.name) if self._end == 0 else None
        # Daemon: interpreter shutdown must reach our atexit hook, which flushes.
        self._thread = threading.Thread(target=self._loop, name="flowillower-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _open(path: Path) -> tuple[int, int]:
        # No O_APPEND: every frame is written at the end of the last good one, so bytes
        # left by a failed write are overwritten even if cutting them off failed.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        size = os.fstat(fd).st_size
        # A file a killed process left behind: cut its torn last frame so the frames we
        # add stay readable (damage before intact frames is kept: readers skip it).
        good = last_frame_end(path.read_bytes()) if size else 0
        if good != size:
            os.ftruncate(fd, good)
        return fd, good

    def _loop(self) -> None:
        warm_up()  # import the compressor off the training thread, and not at finish
        # A fast logger fills the buffer long before `interval` is up: look every tick
        # and write early past EARLY_FLUSH_CALLS, so memory and the work left for
        # close() (hence finish latency) stay bounded by a count, not by the rate.
        tick = min(self.interval, 0.05)
        pending_calls = getattr(self.buffer, "pending_calls", None)
        clock = time.monotonic
        due = clock() + self.interval
        while True:
            woken = self._wake.wait(tick)
            self._wake.clear()
            if self._stop:  # close() does the final flush itself: exit without waiting
                return
            now = clock()
            if not woken and now < due and (
                    pending_calls is None or pending_calls() < EARLY_FLUSH_CALLS):
                continue
            due = now + self.interval
            try:
                self.flush(sync=False)
            except BaseException as exc:  # keep training alive, but say it now
                self._lost_to(exc, 0, "the writer thread failed")

    def flush(self, sync: bool = True) -> None:
        """Write everything queued; with `sync`, also fsync. A failing disk does not
        raise: the values stay pending for the next flush (see the class docstring)."""
        with self._io_lock:
            if self._fd is None or self._writing is not None:
                return  # closed, or re-entered by a signal handler: the outer call writes
            self._writing = threading.get_ident()
            try:
                batch = self.buffer.drain()
                if batch is not None:
                    self._pending.append(_Pending(batch))
                written = self._write_pending()
                if self._pending:
                    self._bound()
            finally:
                self._writing = None
            # From here a signal handler's close() may run in full: nothing below
            # depends on the file's state.
            if written and sync:
                self._sync()
        if self._close_requested:
            self.close()

    def _write_pending(self) -> bool:
        """Write pending frames oldest first; True when none is left."""
        while self._pending:
            item = self._pending[0]
            if item.frame is None:
                item.frame = self._encode_or_salvage(item)
                if item.frame is None:
                    self._pending.popleft()
                    continue
            try:
                self._append(item.frame)
            except OSError as exc:
                self._failed(exc)
                return False
            self._pending.popleft()
            self._latest.remember(item.batch)
            if self._written is not None:
                self._count_written(item.batch)
            self._caught_up[0] += 1
            self._caught_up[1] += item.values
        if self.failure is not None:
            frames, values = self._caught_up
            _say(f"flowillower: writing {self.path} resumed: caught up {frames} frame(s), "
                 f"{values} value(s)" + (f"; {self.dropped} value(s) were dropped"
                                         if self.dropped else ""))
            self.failure = None
        return True

    def _count_written(self, batch: dict[str, Any]) -> None:
        written = self._written
        assert written is not None
        try:
            written.add(batch)
            written.size = self._end
        except BaseException as exc:  # half counted (even by a signal): give the row up,
            self._written = None  # never a value (readers scan the run instead)
            if not isinstance(exc, Exception):
                raise

    def written(self) -> WrittenStats | None:
        """Statistics of every value this writer wrote (see `store.written`), once it is
        closed; None while open, or when they cannot describe the file (it held frames
        before, or counting failed): the run's row is then left to readers."""
        if self._fd is not None or self._written is None:
            return None
        return self._written if self._written.size == self._end else None

    def _append(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        if self._torn:  # bytes of a failed write lie past _end: cut them. Should that
            # fail too, this frame still goes at _end, over them: what is left of them
            # stays after the last good frame, never before one.
            try:
                os.ftruncate(fd, self._end)
                self._torn = False
            except OSError:
                pass
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                n = _write_at(fd, view[done:], self._end + done)
                if n <= 0:
                    raise OSError(f"short write of {self.path} ({done} of {len(data)} bytes)")
                done += n
        except BaseException:
            self._torn = True
            try:
                os.ftruncate(fd, self._end)
                self._torn = False
            except OSError:
                pass  # retried before the next write (and at close)
            raise
        self._end += done

    def _sync(self) -> None:
        fd = self._fd
        try:
            if fd is not None:
                os.fsync(fd)
        except OSError as exc:  # written, but maybe not durable: nothing left to retry
            if self._fd is not None:  # (not: closed by a signal handler meanwhile)
                self._lost_to(exc, 0, "fsync failed")

    def _failed(self, exc: OSError) -> None:
        if self.failure is None:  # first failure of this outage: say it now, once
            self._caught_up = [0, 0]
            waiting = sum(item.values for item in self._pending)
            _say(f"flowillower: cannot write {self.path}: {exc}; keeping {waiting} value(s) "
                 f"in memory and retrying at every flush (limit {self.max_pending_bytes} "
                 "bytes, FLOWILLOWER_MAX_BUFFER)")
        self.failure = exc

    def _bound(self) -> None:
        """Past `max_pending_bytes`, drop the oldest values, keeping their definitions."""
        total = sum(item.size if item.size is not None else item.measure()
                    for item in self._pending)
        dropped = 0
        while total > self.max_pending_bytes:
            idx = next((i for i, item in enumerate(self._pending) if item.values), None)
            if idx is None:
                break
            item = self._pending[idx]
            total -= item.size or 0
            dropped += item.strip()
            if idx + 1 < len(self._pending):
                later = self._pending[idx + 1]
                total -= later.size or 0
                item.merge_into(later)
                del self._pending[idx]
                total += later.measure()
            else:
                total += item.measure()
        if dropped:
            self._lost_to(self.failure or MemoryError("pending data over its bound"), dropped,
                          f"pending data over {self.max_pending_bytes} bytes")

    def _lost_to(self, exc: BaseException, count: int, why: str) -> None:
        """Record `count` lost values (or a failure that may lose some); say it the
        first time this `why` happens, the exact total is said at close."""
        self.dropped += count
        if self.error is None:
            self.error = exc
        if why not in self._told:
            self._told.add(why)
            what = f"{count} value(s) dropped" if count else "values may be lost"
            _say(f"flowillower: {self.path}: {why} ({exc!r}); {what}; "
                 "the exact total is reported at finish")

    def _encode_or_salvage(self, item: _Pending) -> bytes | None:
        """The batch's frame; if encoding fails, the frame without what failed: first
        JSON values, then events, then every value (definitions always stay)."""
        try:
            return self._encode(item.batch)
        except Exception as exc:  # e.g. a value json cannot encode: say it now
            error = exc
        for columns_, events in ((("objects",), False), (("objects",), True),
                                 (("floats", "ints", "objects"), True)):
            lost = item.strip(columns_)
            if events:
                item.batch["events"] = []
            self._lost_to(error, lost, "could not encode a frame")
            try:
                return self._encode(item.batch)
            except Exception as exc:
                error = exc
        return None

    @staticmethod
    def _encode(batch: dict[str, Any]) -> bytes:
        int_cols = columns(batch["ints"], "q") if batch["ints"] else None
        return encode_frame(keys=batch["keys"], contexts=batch["contexts"],
                            events=batch["events"], call_cols=batch["call_cols"],
                            float_cols=batch["float_cols"], int_cols=int_cols,
                            objects=batch["objects"])

    def close(self) -> None:
        """Final flush and fsync, done here; the thread is woken and exits at once (it
        is not waited for: a flush it may be doing holds the lock we take)."""
        self._stop = True
        self._wake.set()
        if self._writing == threading.get_ident():
            # A signal handler (SIGTERM -> finish) interrupted this thread mid-write:
            # the interrupted flush closes when its write is done.
            self._close_requested = True
            return
        with self._io_lock:
            self._close_requested = False
            if self._fd is None:
                return
            self.flush(sync=True)
            if self._pending:  # the disk still fails: these values die with the process
                lost = sum(item.values for item in self._pending)
                self._pending.clear()
                self.dropped += lost
                self.error = self.error or self.failure
            if self._torn:
                try:
                    os.ftruncate(self._fd, self._end)
                except OSError:
                    pass  # left after the last good frame: readers stop there quietly
            if self.dropped:
                _say(f"flowillower: {self.path}: {self.dropped} value(s) could not be "
                     f"recorded ({self.error!r})")
            fd, self._fd = self._fd, None
            os.close(fd)
