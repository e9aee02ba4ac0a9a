"""Back-pressure for checkpoint captures: copies never pile up behind a slow writer.

A capture is a full copy of the registered state in host memory, held until the
background writer has saved it. One rule applies to every capture, adaptive or `every=`:

* at an iteration's start, the writer may still hold at most one iteration's worth of
  earlier captures (as many as the previous iteration had inner loops);
* before each capture, the captures held plus this one (estimated by the previous
  capture's size) must fit in `max_memory`, unless nothing is held at all (one capture
  always fits, or a large model could never be checkpointed).

When the writer is behind, the `when_behind` policy decides: "skip" (the iteration is not
checkpointed and a replay re-executes it; the default for adaptive captures, which are
only worth taking when they cost nothing) or "wait" (the training thread blocks until the
writer catches up, so every requested checkpoint is taken; the default with `every=`).
The final state is always waited for (closing waits for the writer anyway). Either way a
manifest line (`skipped` / `waited`) says what happened. So at most
`2 * inner loops + 2` captures are ever held (earlier iteration, this iteration's start
and inner-loop ends, the final state), and their bytes stay within `max_memory` plus the
estimate's error. (The writer also keeps the tensors of the last capture it wrote, to
recognise unchanged ones: one more capture's worth, not counted here.)

Disk has a bound too: `free_floor` is the free space a capture must leave on its disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

POLICIES = ("skip", "wait")
# Checkpoints never fill the disk: a capture is only taken while at least `free_floor`
# stays free after it: 2% of the disk, at least 1 GiB and at most 10 GiB (on a large,
# nearly full disk a share alone would refuse tens of GB of free space).
FREE_FLOOR_MIN = 1 << 30
FREE_FLOOR_SHARE = 0.02
FREE_FLOOR_MAX = 10 << 30


def free_floor(total: int) -> int:
    """Bytes that must stay free on a disk of `total` bytes after a capture."""
    return min(max(FREE_FLOOR_MIN, int(FREE_FLOOR_SHARE * total)), FREE_FLOOR_MAX)


def disk_room(written: int, queued: int, max_disk: int | None,
              free: Callable[[], tuple[int, int]]) -> int | None:
    """Bytes a run's checkpoints may still add: the least of `max_disk` less what is
    `written` or `queued` (full sizes of captures not written yet: de-duplication only
    ever writes less) and the free space above `free_floor` (`free()`: free and total
    bytes of the disk). None when neither can be told."""
    rooms: list[int] = []
    if max_disk is not None:
        rooms.append(max_disk - written - queued)
    try:
        available, total = free()
    except OSError:
        pass  # cannot tell: the writer's own errors still stop it cleanly
    else:
        rooms.append(available - queued - free_floor(total))
    return min(rooms) if rooms else None


MEMORY_SHARE = 0.2  # default budget: a fifth of the machine's memory...
MEMORY_MIN = 1 << 30  # ...at least 1 GiB


def default_max_memory() -> int:
    """A fifth of physical memory, at least 1 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return MEMORY_MIN
    return max(MEMORY_MIN, int(MEMORY_SHARE * total))


class CaptureBudget:
    """Decides whether a capture may be taken now, and waits when told to."""

    def __init__(self, max_memory: int | None = None, when_behind: str = "skip") -> None:
        if when_behind not in POLICIES:
            raise ValueError(f"when_behind must be one of {POLICIES}, not {when_behind!r}")
        self.max_memory = default_max_memory() if max_memory is None else int(max_memory)
        self.when_behind = when_behind
        self.last_size = 0  # bytes of the latest capture: the next one's estimate
        self.skipped = 0
        self.waited = 0
        self.waited_s = 0.0
        self.peak_held = 0
        self.peak_held_bytes = 0
        self.max_inner = 0  # most inner loops seen in one iteration

    def bound(self) -> int:
        """The most captures this policy lets the writer hold at once."""
        return 2 * max(1, self.max_inner) + 2

    def behind(self, writer: Any, *, at_start: bool, inner: int) -> str | None:
        """Why a capture must not be taken now (None: it may). `inner`: inner loops the
        previous iteration had (at an iteration's start)."""
        held = writer.held()
        if at_start and held > inner:
            return f"the checkpoint writer still holds {held} earlier captures"
        held_bytes = writer.held_bytes
        if held and held_bytes + self.last_size > self.max_memory:
            return (f"captures waiting for the writer hold {held_bytes:,} bytes; the next "
                    f"(~{self.last_size:,}) would pass max_memory={self.max_memory:,}")
        return None

    def make_room(self, writer: Any, note: Callable[[dict[str, Any]], None], *,
                  index: int, kind: str, inner: int, wait: bool = False) -> tuple[bool, float]:
        """(may capture, seconds waited). `kind` "iteration" checks an iteration's start
        (count and memory), "start"/"inner"/"final" one capture (memory). When behind,
        skip or wait by the policy (or wait anyway when `wait`); `note` gets the manifest
        line saying which."""
        at_start = kind == "iteration"
        reason = self.behind(writer, at_start=at_start, inner=inner)
        if reason is None:
            return True, 0.0
        if not (wait or self.when_behind == "wait"):
            self.skipped += 1
            note({"type": "skipped", "i": index, "kind": kind, "reason": reason})
            return False, 0.0
        import time

        t0 = time.perf_counter()
        writer.wait_until(lambda: self.behind(writer, at_start=at_start, inner=inner) is None)
        waited = time.perf_counter() - t0
        self.waited += 1
        self.waited_s += waited
        note({"type": "waited", "i": index, "kind": kind, "s": round(waited, 6),
              "reason": reason})
        return writer.error is None, waited

    def taken(self, writer: Any, size: int) -> None:
        """A capture of `size` bytes was handed to the writer."""
        self.last_size = size
        self.peak_held = max(self.peak_held, writer.held())
        self.peak_held_bytes = max(self.peak_held_bytes, writer.held_bytes)
