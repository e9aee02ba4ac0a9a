"""The background writer: the only code that appends to a run's record file.

The training thread appends to in-memory arrays (no lock, see `RecordBuffer`); this
thread takes what is queued every `interval` seconds (and on flush/close), encodes it as
one frame and appends it with a single write. No per-call file open, fsync or commit.
"""

from __future__ import annotations

import os
import threading
from array import array
from pathlib import Path
from typing import Any

from .buffer import RecordBuffer
from .format import columns, encode_frame, valid_length


class FrameWriter:
    """Owns one `.fwl` file; persists a `RecordBuffer` from a daemon thread."""

    def __init__(self, path: Path, buffer: RecordBuffer, interval: float = 0.5) -> None:
        self.path = path
        self.buffer = buffer
        self.interval = interval
        self._wake = threading.Event()
        self._stop = False
        self._io_lock = threading.RLock()  # flush() from a signal handler vs. the loop
        self._file = self._open(path)
        self.error: BaseException | None = None
        self.last: dict[int, Any] = {}  # key id -> last value written
        # Daemon: interpreter shutdown must reach our atexit hook, which flushes.
        self._thread = threading.Thread(target=self._loop, name="flowillower-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _open(path: Path):
        # Appending to a file a killed process left behind: cut a torn last frame first
        # so the frames we add stay readable.
        if path.exists():
            data = path.read_bytes()
            good = valid_length(data)
            if good != len(data):
                with open(path, "r+b") as fh:
                    fh.truncate(good)
        return open(path, "ab", buffering=0)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush(sync=False)
            except BaseException as exc:  # keep training alive; report at close
                self.error = exc

    def flush(self, sync: bool = True) -> None:
        """Write everything queued; with `sync`, also fsync (used on finish)."""
        with self._io_lock:
            if self._file is None:
                return
            batch = self.buffer.drain()
            if batch is not None:
                self._file.write(self._encode(batch))
            if sync:
                os.fsync(self._file.fileno())

    def _encode(self, batch: dict[str, Any]) -> bytes:
        int_cols = columns(batch["ints"], "q") if batch["ints"] else None
        float_cols = batch["float_cols"]
        # The last value of every key, kept at C speed for the run summary. (Order across
        # kinds within one batch is approximate; floats are by far the common case.)
        if int_cols:
            self.last.update(zip(int_cols[0], int_cols[4]))
        for row in batch["objects"]:
            self.last[row[0]] = row[4]
        self._update_last(*float_cols)
        return encode_frame(keys=batch["keys"], contexts=batch["contexts"],
                            events=batch["events"], call_cols=batch["call_cols"],
                            float_cols=float_cols, int_cols=int_cols, objects=batch["objects"])

    def _update_last(self, keys: array, values: array) -> None:
        # Walk back from the end until every key of the batch is seen: keys interleave,
        # so this touches a handful of rows instead of building 60k Python objects.
        remaining = set(keys)
        i = len(keys) - 1
        while remaining and i >= 0:
            key = keys[i]
            if key in remaining:
                self.last[key] = values[i]
                remaining.discard(key)
            i -= 1

    def close(self) -> None:
        """Flush, fsync and stop the thread."""
        self._stop = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self.flush(sync=True)
        with self._io_lock:
            if self._file is not None:
                self._file.close()
                self._file = None
