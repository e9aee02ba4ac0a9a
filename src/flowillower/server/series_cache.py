"""Decoded series of runs, kept per run and extended incrementally as runs grow.

A running run's frame files only grow (frames are appended; see store/format.py), so a
live poll must not decode a file again from its start. `SeriesCache` keeps, per run, the
decoded columns of the keys asked for so far and, per frame file, its inode and the
offset decoded up to. Each request stats the run's files and decodes only the bytes past
those offsets (whole intact frames; a torn tail is left for the next poll). New values
are merged into each key's columns in logging order (time): the common case, values
newer than the last one, is an append into spare capacity; an older value (another
thread's or rank's frame) copies the columns once, so arrays handed out earlier never
change under a reader (requests are served from several threads).

A whole run is decoded again when a file shrank or was replaced (another inode), a file
disappeared, a replay file came or went, or a key not decoded yet is asked for. Live
cursors are counts of values; when values land before a cursor a client may hold (an
out-of-order value, or a rebuild that changed the order), `needs_reset` says so and the
client is sent the whole series again. An LRU over runs bounds the columns' bytes, all
runs together: `FLOWILLOWER_SERIES_CACHE_MB` (default 512).
"""

from __future__ import annotations

import os
import threading
import time as _time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..store.format import last_frame_end
from ..store.reader import Block, ContextTable, RunReader, decode_values
from ..store.segments import segment_count, segment_files
from .series import Loaded
from .series_columns import DTYPES, Column

DEFAULT_MAX_BYTES = 512 * 2**20
_MAX_CHANGES = 32  # remembered out-of-order insertions per key (for live cursors)


def _max_bytes_from_env() -> int:
    raw = os.environ.get("FLOWILLOWER_SERIES_CACHE_MB", "").strip()
    return int(float(raw) * 2**20) if raw.replace(".", "", 1).isdigit() else DEFAULT_MAX_BYTES


class _FileState:
    """How far one frame file was decoded, and its own key and context ids."""

    def __init__(self, inode: int, replayed: bool) -> None:
        self.inode = inode
        self.replayed = replayed
        self.offset = 0
        self.keys: dict[int, tuple[str, str]] = {}
        self.ctx_map: dict[int, int] = {}  # file's context id -> run-wide id
        self.pending: list[Block] = []  # values whose key is defined in a later frame
        self._lut: tuple[np.ndarray, np.ndarray] | None = None

    def lut(self) -> tuple[np.ndarray, np.ndarray]:
        """`ctx_map` as sorted (file ids, run-wide ids): looked up by binary search, so
        a hostile file's huge context id costs no huge table."""
        if self._lut is None:
            local = np.array(sorted(self.ctx_map), np.int64)
            self._lut = (local, np.array([self.ctx_map[i] for i in local.tolist()], np.int64))
        return self._lut


class NeedsRebuild(Exception):  # the files changed in a way appending cannot follow
    pass


class _RunState:
    """One run's decoded keys and files (guarded by the cache's per-run lock)."""

    serials = iter(range(1, 1 << 62))  # tells states apart in `Loaded.version`

    def __init__(self, wanted: set[str]) -> None:
        self.serial = next(self.serials)
        self.wanted = set(wanted)
        self.files: dict[str, _FileState] = {}
        self.columns: dict[str, Column] = {}
        self.contexts = ContextTable()
        self.decoded_bytes = 0

    def size(self) -> int:
        return sum(c.nbytes() for c in self.columns.values()) + 4096

    @property
    def loop_names(self) -> list[str]:
        return self.contexts.loop_names

    def ctx_coords(self) -> np.ndarray:
        return self.contexts.table()

    def update(self, run_dir: Path) -> dict[str, tuple[int, int, int]]:
        """Decode what was appended since the last call; for keys whose older values
        moved: {key: (count before, first moved position, count after)}."""
        files = [(p, False) for p in sorted(run_dir.glob("data*.fwl"))]
        files += [(p, True) for p in sorted(run_dir.glob("replays/*.fwl"))]
        seen = set()
        stats = []
        for path, replayed in files:
            name = ("replays/" if replayed else "") + path.name
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between the glob and the stat
            seen.add(name)
            old = self.files.get(name)
            if old is not None and (old.inode != st.st_ino or st.st_size < old.offset):
                raise NeedsRebuild(f"{name} was replaced or truncated")
            if old is None and self.files and replayed:
                raise NeedsRebuild(f"a replay was added: {name}")
            stats.append((name, path, replayed, st))
        if set(self.files) - seen:
            raise NeedsRebuild("a frame file disappeared")
        parts: dict[str, list] = {}
        for name, path, replayed, st in stats:
            state = self.files.get(name)
            if state is None:
                state = self.files[name] = _FileState(st.st_ino, replayed)
            if st.st_size > state.offset:
                self._read(path, state, parts)
        moved = {}
        for key, plist in parts.items():
            col = self.columns.get(key)
            before = col.n if col is not None else 0
            pos = self._merge(key, plist)
            if pos is not None:
                moved[key] = (before, pos, self.columns[key].n)
        return moved

    def _read(self, path: Path, state: _FileState, parts: dict[str, list]) -> None:
        try:
            with open(path, "rb") as fh:
                fh.seek(state.offset)
                chunk = fh.read()
        except OSError:
            return
        end = last_frame_end(chunk)  # whole intact frames only: a torn tail waits
        if end == 0:
            return
        self.decoded_bytes += end
        state.offset += end
        decoded = decode_values(chunk[:end])
        state.keys.update(decoded.keys)
        for local in sorted(decoded.contexts):
            state.ctx_map[local] = self.contexts.id_of(decoded.contexts[local])
            state._lut = None
        blocks = state.pending + [b for _ev, bl in decoded.frames for b in bl]
        state.pending = []
        for block in blocks:
            self._take(block, state, parts)

    def _take(self, block: Block, state: _FileState, parts: dict[str, list]) -> None:
        kids, first = np.unique(block.key, return_index=True)
        if block.kind == "object":  # keys in order of first appearance
            kids = kids[np.argsort(first)]
        for kid in kids.tolist():
            # One key in the block (common): every row, no selection copies.
            sel = slice(None) if len(kids) == 1 else block.key == kid
            if kid not in state.keys:  # defined in a later frame (or lost with a torn one)
                state.pending.append(Block(block.kind, *(c[sel] for c in (
                    block.key, block.ctx, block.step, block.time, block.values))))
                continue
            name, role = state.keys[kid]
            if name not in self.wanted:
                continue
            ctx_local = block.ctx[sel].astype(np.int64)
            ids, gids = state.lut()
            pos = np.minimum(np.searchsorted(ids, ctx_local), max(len(ids) - 1, 0))
            ctx = np.where(ids[pos] == ctx_local, gids[pos], 0) if len(ids) else ctx_local * 0
            parts.setdefault(name, []).append(
                (role, block.kind, [ctx, block.step[sel], block.time[sel],
                                    block.values[sel], np.full(len(ctx),
                                                               state.replayed)]))

    def _merge(self, key: str, plist: list) -> int | None:
        kinds = {p[1] for p in plist}
        kind = "object" if "object" in kinds else ("float" if "float" in kinds else "int")
        col = self.columns.get(key)
        if col is None:
            col = self.columns[key] = Column(key, plist[0][0], kind)
        dtype = DTYPES["object" if "object" in (kind, col.kind) else kind]
        cols = [np.concatenate([p[2][i].astype(dtype, copy=False) if i == 3 else p[2][i]
                                for p in plist]) if len(plist) > 1 else plist[0][2][i]
                for i in range(5)]  # owned arrays (copies): the column may adopt them
        cols[3] = cols[3].astype(dtype, copy=False)
        if len(cols[2]) > 1 and not bool((cols[2][1:] >= cols[2][:-1]).all()):
            order = np.argsort(cols[2], kind="stable")  # several threads' frames
            cols = [c[order] for c in cols]
        return col.add(kind, cols)

    def loaded(self, name: str) -> Loaded:
        col = self.columns.get(name)
        coords = self.ctx_coords()
        if col is None or col.n == 0:
            return Loaded(None, list(self.loop_names), coords, version=(self.serial, 0))
        return Loaded(col.series(), list(self.loop_names), coords, col.vmin, col.vmax,
                      (self.serial, col.n))


def _resumed(run_dir: Path, names: list[str]) -> dict[str, Loaded]:
    """A resumed run's series through the reader, whose rewind rule leaves out values a
    later segment superseded (rare: decoded whole each time, not incrementally)."""
    data = RunReader(run_dir).load(list(names))
    stamp = tuple((p.name, p.stat().st_size) for p, _seg in segment_files(run_dir))
    replays = run_dir / "replays"
    if replays.is_dir():
        stamp += tuple((p.name, p.stat().st_size) for p in sorted(replays.glob("*.fwl")))
    return {n: Loaded(data.series.get(n), list(data.loop_names), data.ctx_coords,
                      version=("segments", stamp)) for n in names}


class SeriesCache:
    """Per-run incrementally decoded series, LRU-bounded by bytes (thread-safe)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = _max_bytes_from_env() if max_bytes is None else max_bytes
        self._entries: OrderedDict[str, _RunState] = OrderedDict()
        self._lock = threading.Lock()
        self._run_locks: dict[str, threading.Lock] = {}
        # run id -> key -> [(count before, first moved position, count after)].
        self._changes: OrderedDict[str, dict[str, list[tuple[int, int]]]] = OrderedDict()
        self.decodes = 0  # whole-run decodes (first view, new keys, rewritten files)
        self.decoded_bytes = 0  # frame bytes decoded, all runs (tests, benchmarks)
        self.cpu_seconds = 0.0  # thread CPU time spent in `get` (tests, benchmarks)

    def _run_lock(self, run_id: str) -> threading.Lock:
        with self._lock:
            return self._run_locks.setdefault(run_id, threading.Lock())

    def get(self, run_dir: Path, names: list[str], prefetch: list[str] = ()
            ) -> dict[str, Loaded]:
        """Series `names` of a run, decoded up to the files' current ends (a missing key
        gives `Loaded(series=None)`); `prefetch` keys are decoded in the same pass."""
        if segment_count(run_dir) > 1:
            return _resumed(run_dir, names)
        cpu0 = _time.thread_time()
        run_id = run_dir.name
        with self._run_lock(run_id):
            with self._lock:
                state = self._entries.get(run_id)
                if state is not None:
                    self._entries.move_to_end(run_id)
            if state is None or not set(names) <= state.wanted:
                wanted = set(names) | set(prefetch) | (state.wanted if state else set())
                state = self._rebuild(run_dir, wanted, None)
                decoded = state.decoded_bytes
            else:
                before = state.decoded_bytes
                try:
                    self._note_moves(run_id, state.update(run_dir))
                    decoded = state.decoded_bytes - before
                except NeedsRebuild:
                    state = self._rebuild(run_dir, state.wanted, state)
                    decoded = state.decoded_bytes
            out = {n: state.loaded(n) for n in names}
            with self._lock:
                self._entries[run_id] = state
                self._entries.move_to_end(run_id)
                self.decoded_bytes += decoded
                self._evict()
        cpu = _time.thread_time() - cpu0
        with self._lock:
            self.cpu_seconds += cpu
        return out

    def _rebuild(self, run_dir: Path, wanted: set[str], old: _RunState | None) -> _RunState:
        state = _RunState(wanted)
        state.update(run_dir)  # a fresh state knows no file: nothing to find changed
        self.decodes += 1
        if old is not None:  # values a client holds may now sit elsewhere
            moved = {}
            for name, col in old.columns.items():
                new = state.columns.get(name)
                m = min(col.n, new.n if new else 0)
                same = (col.step[:m] == new.step[:m]) & (col.time[:m] == new.time[:m]) \
                    if new is not None else np.zeros(0, bool)
                diff = m if same.all() else int(np.argmin(same))
                if diff < col.n:
                    moved[name] = (col.n, diff, new.n if new is not None else 0)
            self._note_moves(run_dir.name, moved)
        return state

    def _note_moves(self, run_id: str, moved: dict[str, tuple[int, int, int]]) -> None:
        if not moved:
            return
        with self._lock:
            per = self._changes.setdefault(run_id, {})
            self._changes.move_to_end(run_id)
            for key, change in moved.items():
                hist = per.setdefault(key, [])
                hist.append(change)
                del hist[:-_MAX_CHANGES]
            while len(self._changes) > 10_000:
                self._changes.popitem(last=False)

    def needs_reset(self, run_id: str, key: str, cursor: int) -> bool:
        """Whether a client's live cursor (a count of values it has) may be stale: values
        were put before it since it was handed out, so it must take the series anew."""
        with self._lock:
            hist = self._changes.get(run_id, {}).get(key, [])
        # A cursor handed out after a change is at least the count after it (counts
        # grow), so only cursors below both counts can predate it.
        return any(pos < cursor <= before and cursor < after for before, pos, after in hist)

    def nbytes(self) -> int:
        """Bytes held by the decoded runs (the quantity `max_bytes` bounds)."""
        with self._lock:
            return sum(e.size() for e in self._entries.values())

    def _evict(self) -> None:
        total = sum(e.size() for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            total -= old.size()


__all__ = ["SeriesCache", "DEFAULT_MAX_BYTES"]
