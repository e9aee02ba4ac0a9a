"""Entry points for parallel replay: `fw.checkpointing(min_entry_points=N)`.

A replay worker can only start a segment at an outer iteration whose start state was
captured (an *entry point*), so a replay splits into at most as many segments as the run
kept entry points. Adaptive captures follow the time budget (`max_overhead`) and `every=`
follows the user; neither knows how many workers a later replay will have. With
`min_entry_points=N` (or `$FLOWILLOWER_REPLAY_PARALLELISM`, the lab's default; an explicit
argument wins, 0 turns it off) the recorder also captures the start of every `stride`-th
outer iteration so that at least N evenly spread entry points are kept:

* outer loop of known length T (anything with `len()`): stride = T // N, chosen at the
  first iteration, so T // stride >= N starts are captured and none is ever wasted;
* unknown length (a generator): stride 1, doubled whenever 2N entry points are kept, the
  odd ones being deleted (*thinned*); between N and 2N stay, evenly spread.

Who wins when they conflict:

* `every=` and adaptive captures still happen; entry points are added where they leave
  gaps. A start the policy wants is the policy's own (it may thin it later) unless
  `every=` asked for it; `every=` captures are never thinned;
* `max_overhead`: entry points are taken whatever they cost (the user asked for them);
  if the loop's capture time passes `max_overhead` because of them, a warning says so once;
* back-pressure: an entry capture waits for the writer (`when_behind` does not skip it);
* other captures leave room on the disk for the entry points still to come and the final
  state; past that they are skipped (a manifest line says so) and recording goes on;
* the disk budget wins over everything: with a known length, the first entry capture
  after iteration 0 waits once for the writer, measures the files written, and the
  stride grows so that the entry points that fit in `max_disk` (and above the free-space
  floor, the final state kept room for) stay evenly spread over the whole loop; with an
  unknown length, an entry capture (or the final state) that would pass the budget first
  thins the kept entry points. Either way one warning says how many of the N asked for
  fit. A file a kept capture still points into (de-duplicated tensors) is never deleted
  (it stays whole, and so stays an entry point). Thinning only ever touches the run being
  recorded, and replays skip running runs, so no replay can need a thinned capture.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

from ..loops import StartAt
from .capture_budget import disk_room
from .ckpt_files import WriteJob

ENV = "FLOWILLOWER_REPLAY_PARALLELISM"
SIZE_MARGIN = 1.02  # a file is a little larger than its tensors: pickle framing


def resolve_target(min_entry_points: int | None) -> int | None:
    """The number of entry points to keep: the argument, else `$FLOWILLOWER_REPLAY_
    PARALLELISM`; None (or 0) when neither asks for any."""
    if min_entry_points is None:
        raw = os.environ.get(ENV, "").strip()
        if not raw:
            return None
        try:
            min_entry_points = int(raw)
        except ValueError:
            raise ValueError(f"${ENV} must be a whole number, not {raw!r}") from None
    if isinstance(min_entry_points, bool) or not isinstance(min_entry_points, int):
        raise ValueError("min_entry_points must be a whole number of entry points")
    if min_entry_points < 0:
        raise ValueError("min_entry_points must not be negative")
    return min_entry_points or None


class EntryPolicy:
    """Which outer iterations get an entry capture, and which ones to thin."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.total: int | None = None  # the outer loop's length, when it has one
        self.stride = 1
        self.owned: dict[int, int] = {}  # iteration -> seq of the policy's own captures
        self.planned = False  # stride fitted to the disk budget (known length)
        self.fit: int | None = None  # entry points the disk budget holds, when fewer
        # The loop's first index: a resumed segment's loop (`fw.loop(..., start=K)`)
        # spreads its own entry points from K, so the policy holds per segment.
        self.origin = 0

    def set_total(self, total: int | None, origin: int = 0) -> None:
        """The outer loop's length (None: unknown) and first index: fixes the stride
        for a known length."""
        self.total, self.origin = total, origin
        if total:
            self.stride = max(1, total // self.target)

    def wanted(self, index: int) -> bool:
        """Whether iteration `index` must be an entry point."""
        return (index - self.origin) % self.stride == 0

    def taken(self, index: int, seq: int) -> None:
        """The policy captured the start of iteration `index` as file `seq`."""
        self.owned[index] = seq

    def fit_budget(self, room: int, size: int) -> bool:
        """Known length: stretch the stride so the remaining entry points fit in `room`
        bytes at `size` bytes each (one capture already taken, at iteration 0). Returns
        whether the target had to be lowered."""
        self.planned = True
        if not self.total or size <= 0:
            return False
        more = max(0, int(room // (size * SIZE_MARGIN)))
        points = math.ceil(self.total / self.stride)
        if more >= points - 1:
            return False
        self.fit = more + 1
        self.stride = math.ceil(self.total / self.fit)
        return True

    def due_thinning(self) -> bool:
        """Unknown length: 2N of the policy's entry points are kept, time to halve."""
        return self.total is None and len(self.owned) >= 2 * self.target

    def thin(self) -> list[tuple[int, int]]:
        """Double the stride and give up the policy's captures off it: (iteration, seq)."""
        self.stride *= 2
        victims = sorted(i for i in self.owned if (i - self.origin) % self.stride)
        return [(i, self.owned.pop(i)) for i in victims]

    def victims_available(self) -> bool:
        """Whether doubling the stride would free any of the policy's captures."""
        return any((i - self.origin) % (self.stride * 2) for i in self.owned)


class EntryPoints:
    """The `Recorder`'s side of the policy, plus what it does when a capture is dropped or
    recording stops. A base class of `Recorder` (checkpoint.py), whose state it shares."""

    entries: EntryPolicy | None

    def loop_control(self, name: str, depth: int, iterable: Any) -> Any:
        """`Run.set_loop_control` while recording: every item, in order; notes the outer
        loop's length (when it has one) for the entry policy."""
        if (self.entries is not None and self.outer is None
                and depth - self.base_depth == 1):
            # `fw.loop(..., start=K)` (a resumed segment's loop) numbers its items from K
            origin = iterable.start if isinstance(iterable, StartAt) else 0
            try:
                self.entries.set_total(len(iterable), origin)
            except TypeError:
                self.entries.set_total(None, origin)  # a generator: thinned as it goes
        return enumerate(iterable)

    def _entry_wanted(self, index: int) -> bool:
        writer = self._writer
        return (self.entries is not None and self.entries.wanted(index) and writer is not None
                and writer.error is None and self.stopped is None)

    def _plan_entries(self, index: int, size: int) -> bool:
        """At the first entry capture after iteration 0: stretch the stride to what the
        disk budget holds (the final state kept room for); whether iteration `index` is
        still an entry point. Waits once for the writer, so that the sizes are those of
        real files (a file holds less than its capture's estimate, or more)."""
        writer = self._writer
        writer.wait_until(lambda: writer.pending() == 0)
        written, done, _held = writer.accounted()
        room = disk_room(written, max(0, self._sizes - done), self.max_disk, self._free)
        each = writer.last_bytes or size
        if room is not None and self.entries.fit_budget(room - each, each):
            self._warn_once("fit", f"the disk budget holds only {self.entries.fit} of the "
                            f"{self.entries.target} entry points asked for (min_entry_points"
                            f"): kept {self.entries.fit}, every {self.entries.stride} "
                            "iterations")
        return self.entries.wanted(index)

    def _thin(self, why: str | None) -> bool:
        """Delete the policy's entry captures off a doubled stride (`why`: the disk
        budget, which then warns; None: the unknown-length policy's own halving).
        Whether anything was given up."""
        if self.entries is None or not self.entries.victims_available():
            return False
        victims = self.entries.thin()
        gone = {i for i, _ in victims}
        self.starts = [i for i in self.starts if i not in gone]
        self._writer.submit(WriteJob(-1, {"type": "thin", "seqs": [s for _, s in victims]},
                                     None, 0.0))
        if why is not None:
            self._writer.wait_until(lambda: self._writer.pending() == 0)
            self._warn_once("fit", f"{why}: kept entry points thinned to every "
                            f"{self.entries.stride} iterations (min_entry_points="
                            f"{self.entries.target} asked for more)")
        return True

    def _entry_reserve(self, kind: str, index: int, forced: bool, size: int) -> int:
        """Bytes another capture must leave free for the entry points still to come and
        the final state (a loop of known length): they win the disk over other captures."""
        policy = self.entries
        if policy is None or forced or kind == "final" or not policy.total:
            return 0
        later = (policy.total - 1) // policy.stride - (index - policy.origin) // policy.stride
        return (max(0, later) + 1) * max(size, self._writer.last_bytes)

    def _entry_room(self, reason: str, kind: str, index: int, forced: bool, size: int
                    ) -> tuple[bool, str | None]:
        """A `size`-byte capture would pass the disk budget (`reason`) under the entry
        policy: (skipped, what still refuses it). Entry captures and the final state make
        room by thinning the policy's older entry points (when nothing is left to thin,
        recording stops as without the policy); other captures are skipped, with a
        manifest line, so that recording and the entry points to come go on."""
        if forced or kind == "final":
            while reason is not None and self._thin(f"the disk budget ({reason})"):
                reason = self._disk_refusal(size)
            return False, reason
        self._drop(kind, index)
        self._note({"type": "skipped", "i": index, "kind": kind, "reason": reason})
        return True, reason

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"flowillower: checkpoints of loop {self.outer!r}: {text}",
                          stacklevel=4)

    def _drop(self, kind: str, index: int) -> None:
        """A `kind` capture of the current iteration was not taken: without its start it
        is no entry point, without an inner-loop end it is not skippable."""
        if kind == "start" and self.starts and self.starts[-1] == index:
            self.starts.pop()
        if kind == "inner" and self._iter == index:
            self._ckpt_iter = False  # its manifest line says so; a replay re-executes it
            if self.checkpointed and self.checkpointed[-1] == index:
                self.checkpointed.pop()

    def _stop(self, reason: str, kind: str, index: int) -> None:
        """Stop recording for good: the current iteration no longer counts as captured."""
        self.stopped = reason
        self._drop(kind, index)
        if kind == "start":
            self._drop("inner", index)
        self._writer.submit(WriteJob(-1, {"type": "stopped", "i": index, "kind": kind,
                                      "reason": reason}, None, 0.0))
        warnings.warn(f"flowillower: checkpoints stopped at iteration {index} of loop "
                      f"{self.outer!r}: {reason}. Replays re-execute the iterations after "
                      "it.", stacklevel=2)

