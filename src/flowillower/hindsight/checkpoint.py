"""The `Recorder`: what `fw.checkpointing` captures while training, and when.

While the outermost `fw.loop` entered inside the block runs, the registered objects, every
RNG state and the loop position are captured at the points a replay restores:

* `start` of outer iteration i (what code before the inner loops sees),
* `inner` after each inner loop of iteration i (what code after that inner loop sees),
* `final` when the outer loop has run out (what code after the loops sees).

A replay restores `start(i)`, runs the outer body with the inner loops skipped and
restores `inner(i, m)` where inner loop m would have ended, so the code between the
loops runs exactly once on exactly the state it saw originally (FlorDB 3.x restored an
end-of-epoch state and then trained the epoch again: one optimizer step too many).

An iteration is skippable when the ends of all its inner loops were captured; the start
of the next iteration is then reached by running the code after the inner loops, so
start states are only needed where a replay worker enters (iteration 0, and more when
the budget allows). Which iterations are captured is decided at each iteration start so
that capturing stays under `max_overhead` (2%) of the loop's wall time. Copies are made
on the training thread (a consistent snapshot; device state straight into host memory,
see `state.py`); pickling, de-duplication of unchanged tensors and file writes happen in
a background thread (`ckpt_files.py`), which records each file's digest for replay
(`ledger.py`). Copies waiting for it are bounded in count and bytes, for `every=` and
adaptive captures alike (`capture_budget.py`). Files live in `<run>/checkpoints/` (local
only; a resumed segment's in `checkpoints/seg<N>/` once an earlier one recorded). Disk use is bounded too: by `max_disk` when given, and always by a floor of free
space (`free_floor`: 2% of the disk, at least 1 GiB, at most 10 GiB); once a capture
would cross either, recording stops with a warning and replays re-execute the
iterations after it. `min_entry_points` keeps enough evenly spread iteration starts for
parallel replay (`entry_points.py`: the policy, and what wins when settings conflict).
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..procfs import process_start_time
from ..sizes import parse_size
from . import ledger
from .capture_budget import CaptureBudget, free_floor
from .ckpt_files import (
    CKPT_DIRNAME,
    FORMAT_VERSION,
    MANIFEST,
    BackgroundWriter,
    BlobRef,
    CheckpointError,
    WriteJob,
    bit_equal,
    segment_subdir,
    torch_module,
)
from .ckpt_store import CheckpointStore
from .entry_points import EntryPoints, EntryPolicy, resolve_target
from .state import (
    capture_object,
    capture_rng,
    copies_landed,
    copy_tree,
    has_device_tensor,
    object_kind,
    restore_object,
    restore_rng,
    restore_state,
    tree_stats,
)

if TYPE_CHECKING:
    from ..run import Run

# Where these lived before the files were split: callers import them from here.
__all__ = ["CKPT_DIRNAME", "MANIFEST", "BlobRef", "CheckpointError", "CheckpointStore",
           "Recorder", "capture_object", "capture_rng", "copy_tree",
           "free_floor", "object_kind", "parse_size", "restore_object", "restore_rng",
           "restore_state"]

_now = time.perf_counter
_torch = torch_module
_bit_equal, _has_device_tensor = bit_equal, has_device_tensor  # old names, for callers


def _free_bytes(path: Path) -> tuple[int, int]:
    """(free, total) bytes of the file system holding `path`."""
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


# -- the recorder ---------------------------------------------------------------------------


class Recorder(EntryPoints):
    """Captures registered state around the outermost loop entered inside `checkpointing`."""

    def __init__(self, run: Run, objects: dict[str, Any], every: int | None = None,
                 max_overhead: float = 0.02, max_disk: int | str | None = None,
                 max_memory: int | str | None = None, when_behind: str | None = None,
                 base_depth: int = 0, min_entry_points: int | None = None) -> None:
        if every is not None and every < 1:
            raise ValueError("every must be a positive number of iterations")
        # Checkpoints the user asked for (`every=`) are waited for by default; adaptive
        # ones are only worth taking when they cost nothing, so they are skipped.
        self.budget = CaptureBudget(None if max_memory is None else parse_size(max_memory),
                                    when_behind or ("wait" if every else "skip"))
        self.run = run
        self.objects = objects
        self.kinds = {name: object_kind(obj) for name, obj in objects.items()}
        self.every = every
        self.max_overhead = max_overhead
        self.max_disk = None if max_disk is None else parse_size(max_disk)
        self.stopped: str | None = None  # why recording stopped early (disk), if it did
        self._sizes = 0  # `tree_stats` bytes of every capture submitted
        self.base_depth = base_depth  # the run's loop depth at the block: outer loop is +1
        self.outer: str | None = None
        self.done = False
        self.seq = 0
        self.captures = 0
        self.checkpointed: list[int] = []  # iterations whose inner-loop ends were captured
        self.starts: list[int] = []  # iterations whose start was captured
        self.spent = 0.0  # training-thread seconds spent capturing
        self._capture_cost = 0.0  # last capture's copy time
        self._cpu_state = False  # every captured tensor on the CPU (set at the first capture)
        self._writer: BackgroundWriter | None = None
        self._loop_t0 = 0.0
        self._iter: int | None = None
        self._iter_t0 = 0.0
        self._ckpt_iter = False
        self._inner_t0 = 0.0
        self._inner_time = 0.0
        self._n_inner = 0
        self._last_n_inner = 1
        self._completed = 0
        target = resolve_target(min_entry_points)
        self.entries = EntryPolicy(target) if target else None
        self._forced = False  # the capture being taken is the entry policy's
        self._warned: set[str] = set()
        self.subdir = ""  # `seg<N>`: a resumed segment's own folder (see _outer_start)

    @property
    def directory(self) -> Path:
        return self.run.dir / CKPT_DIRNAME / self.subdir  # "" adds nothing

    # Called by the run at loop start / iteration start / loop end (see Run.on_loop).
    def hook(self, event: str, name: str, depth: int, index: int) -> None:
        if self.done:
            return
        rel = depth - self.base_depth
        if rel == 1:
            if self.outer is None:
                if event != "loop_start":
                    return
                self._outer_start(name)
                return
            if name != self.outer:
                return
            if event == "iteration":
                self._iteration(index)
            elif event in ("loop_end", "loop_break"):
                self._outer_end(event == "loop_end")
        elif rel == 2 and self._iter is not None:
            if event == "loop_start":
                self._inner_t0 = _now()
            elif event in ("loop_end", "loop_break"):
                self._inner_time += _now() - self._inner_t0
                if self._ckpt_iter:
                    self._capture("inner", self._iter, self._n_inner)
                self._n_inner += 1

    def _outer_start(self, name: str) -> None:
        self.outer = name
        self.run.ensure_on_disk()  # checkpoints live in the run directory
        segment = getattr(self.run, "segment", 1)
        if (self.directory / MANIFEST).exists() and isinstance(segment, int) and segment > 1:
            # A resumed segment: its own folder, so a replay enters it at its own captures
            # and never touches the earlier segments' files (stretches.py).
            self.subdir = segment_subdir(segment)
        if (self.directory / MANIFEST).exists():
            # A second checkpointed loop in the same run (or segment): replays follow the
            # first one, and its files must not be overwritten by this one's.
            self.done = True
            return
        try:
            digests = ledger.ledger_path(self.run.store_root, self.run.id)
        except ValueError:
            digests = None  # not a run id: nothing recorded, so replay never loads them
        self._writer = BackgroundWriter(self.directory, digests,
                                        f"{self.subdir}/" if self.subdir else "")
        started = process_start_time()
        torch = _torch()
        self._writer.submit(WriteJob(-1, {
            "type": "meta", "version": FORMAT_VERSION, "outer": name,
            "objects": self.kinds, "time": time.time(),
            "setup_s": None if started is None else round(time.time() - started, 4),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "every": self.every, "max_overhead": self.max_overhead, "max_disk": self.max_disk,
            "max_memory": self.budget.max_memory, "when_behind": self.budget.when_behind,
            "min_entry_points": self.entries.target if self.entries else None,
            "outer_len": self.entries.total if self.entries else None,
        }, None, 0.0))
        self._loop_t0 = _now()

    def _finish_iteration(self, now: float) -> None:
        if self._iter is None:
            return
        self._writer.submit(WriteJob(-1, {
            "type": "iter", "i": self._iter, "t": round(now - self._iter_t0, 6),
            "inner": round(self._inner_time, 6), "n_inner": self._n_inner,
            "ckpt": self._ckpt_iter}, None, 0.0))
        self._completed += 1
        self._last_n_inner = max(self._n_inner, 0)
        self.budget.max_inner = max(self.budget.max_inner, self._n_inner)
        self._iter = None

    def _decide(self, index: int, now: float) -> tuple[bool, bool]:
        """(capture this iteration's inner-loop ends, capture its start) within budget.

        Inner-loop ends make an iteration skippable; a replay reaches the next iteration's
        start by running the code after the inner loop, so start states are only needed
        as entry points for parallel workers: taken when the budget has room left.
        """
        writer = self._writer
        if writer is None or writer.error is not None or self.stopped is not None:
            return False, False
        if self.every is not None:
            take = index % self.every == 0
            return take, take
        if self._completed == 0:
            return True, True  # every replay's way in
        elapsed = now - self._loop_t0
        per_iter = elapsed / self._completed
        # Background writing competes for the CPU too: charge the writer thread's CPU
        # time, for the next capture and for every write so far (the copies alone
        # undercount the cost). All of it: a core that looks free may run another
        # training process (`demo quickstart` runs two), and when torch's threads use
        # every core the writer preempts a worker of each parallel region. Twice on CPU
        # training: its serialisation also evicts the training's caches, which slowed the
        # training thread after it by up to as much again (docs/hindsight.md). Its waits
        # on the disk cost the loop nothing and are not charged.
        written = writer.write_cpu_s * (2.0 if self._cpu_state else 1.0)
        write_one = written / max(1, self.captures)
        one = self._capture_cost + write_one
        left = self.max_overhead * (elapsed + per_iter) - self.spent - written
        take_inner = self._last_n_inner * one <= left
        if take_inner:
            left -= self._last_n_inner * one
        return take_inner, take_inner and one <= left

    def _iteration(self, index: int) -> None:
        now = _now()
        self._finish_iteration(now)
        self._iter, self._iter_t0 = index, now
        self._inner_time, self._n_inner = 0.0, 0
        self._ckpt_iter, take_start = self._decide(index, now)
        # A start the entry policy wants is its own (kept on disk before other captures,
        # thinned by it), unless `every=` asked for it.
        forced = self._entry_wanted(index) and not (self.every and index % self.every == 0)
        take_start = take_start or forced
        if (self._ckpt_iter or take_start) and not self._room(index, "iteration",
                                                              wait=forced):
            # The writer is behind (same rule for every= and adaptive captures): never
            # pile up copies. Not checkpointed: a replay re-executes this iteration.
            self._ckpt_iter = take_start = False
        if self._ckpt_iter:
            self.checkpointed.append(index)
        if take_start:
            self.starts.append(index)
            self._forced = forced
            try:
                self._capture("start", index, 0)
            finally:
                self._forced = False

    def _outer_end(self, completed: bool) -> None:
        now = _now()
        if completed:
            self._finish_iteration(now)
            # The final state is never skipped: `close` waits for the writer anyway.
            if self._room(self._completed, "final", wait=True):
                self._capture("final", self._completed, 0)
            self._writer.submit(WriteJob(-1, {"type": "end", "n": self._completed}, None, 0.0))
        else:
            self._iter = None  # the iteration did not finish: no timing, no checkpoint
            self._writer.submit(WriteJob(-1, {"type": "abort", "n": self._completed}, None, 0.0))
        self.done = True
        loop_s = now - self._loop_t0
        if self.entries and self.entries.owned and self.spent > self.max_overhead * loop_s:
            self._warn_once("overhead", f"min_entry_points={self.entries.target} took "
                            f"{self.spent / max(loop_s, 1e-9):.1%} of the loop's time, past "
                            f"max_overhead={self.max_overhead:.0%} (entry points win)")

    def _note(self, entry: dict[str, Any]) -> None:
        self._writer.submit(WriteJob(-1, entry, None, 0.0))

    def _room(self, index: int, kind: str, wait: bool = False) -> bool:
        """Whether a capture may be taken now (see `capture_budget`); waiting counts as
        time spent on the training thread."""
        ok, waited = self.budget.make_room(self._writer, self._note, index=index, kind=kind,
                                           inner=self._last_n_inner, wait=wait)
        self.spent += waited
        return ok

    def _capture(self, kind: str, index: int, m: int) -> None:
        if self.stopped is not None:
            return
        forced = self._forced and kind == "start"
        if kind != "final" and not self._room(index, kind, wait=forced):
            self._drop(kind, index)  # its manifest line says so; a replay re-executes
            return
        t0 = _now()
        position = self.run.loop_position()
        host: list[Any] = []  # device tensors copied to host memory (in flight)
        tree = {
            "objects": {name: capture_object(self.kinds[name], obj, host)
                        for name, obj in self.objects.items()},
            "rng": capture_rng(),
            "pos": {"loop_totals": [[list(p), n] for p, n in position.loop_totals.items()],
                    "step": position.step},
        }
        ready = copies_landed(host) if host else None
        size = tree_stats(tree)[0]
        took = _now() - t0
        self.spent += took
        if (forced and index and not self.entries.planned
                and not self._plan_entries(index, size)):
            self._drop(kind, index)  # off the stride the disk budget allows
            return
        reason = self._disk_refusal(size + self._entry_reserve(kind, index, forced, size))
        if reason is not None and self.entries is not None:
            skipped, reason = self._entry_room(reason, kind, index, forced, size)
            if skipped:
                return
        if reason is not None:
            self._stop(reason, kind, index)
            return
        if self.captures == 0:
            self._cpu_state = not host
        self._capture_cost = took
        self.captures += 1
        self._sizes += size
        seq, self.seq = self.seq, self.seq + 1
        self._writer.submit(WriteJob(seq, {"type": "ckpt", "seq": seq, "kind": kind, "i": index,
                                           "m": m}, tree, took, size, ready))
        self.budget.taken(self._writer, size)
        if forced:
            self.entries.taken(index, seq)
            if self.entries.due_thinning():
                self._thin(None)

    def _free(self) -> tuple[int, int]:
        return _free_bytes(self.run.dir)

    def _disk_refusal(self, size: int) -> str | None:
        """Why a capture of `size` bytes must not be written (None: it may be).

        Counted at most: what is on disk plus the full size of the captures still
        queued (de-duplication only ever writes less).
        """
        written, done, _held = self._writer.accounted()
        queued = max(0, self._sizes - done)
        if self.max_disk is not None and written + queued + size > self.max_disk:
            return (f"its checkpoints would pass max_disk={self.max_disk:,} bytes "
                    f"({written + queued:,} written or queued, the next one up to "
                    f"{size:,})")
        try:
            free, total = _free_bytes(self.run.dir)
        except OSError:
            return None  # cannot tell: the writer's own errors still stop it cleanly
        floor = free_floor(total)
        if free - queued - size < floor:
            return (f"the disk would have less than {floor:,} bytes free "
                    f"({free:,} free, the next checkpoint up to {size:,})")
        return None

    def close(self) -> None:
        """Wait for pending writes; warn (never raise) if checkpoints could not be saved."""
        if self._writer is None:
            return
        self._writer.close()
        if self._writer.error is not None:
            warnings.warn(f"flowillower: checkpoints could not be written "
                          f"({self._writer.error!r}); hindsight replay will re-execute",
                          stacklevel=3)

    def stats(self) -> dict[str, Any]:
        """Overhead figures: captures, seconds on the training thread, bytes written."""
        writer = self._writer
        return {"captures": self.captures, "checkpointed_iterations": list(self.checkpointed),
                "start_iterations": list(self.starts),
                "entry_stride": self.entries.stride if self.entries else None,
                "train_thread_s": self.spent,
                "write_s": writer.write_s if writer else 0.0,
                "write_cpu_s": writer.write_cpu_s if writer else 0.0,
                "bytes": writer.bytes if writer else 0, "stopped": self.stopped,
                "skipped": self.budget.skipped, "waited": self.budget.waited,
                "waited_s": self.budget.waited_s, "peak_held": self.budget.peak_held,
                "peak_held_bytes": self.budget.peak_held_bytes,
                "held_bound": self.budget.bound()}
