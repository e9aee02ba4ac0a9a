"""The last value of every key by logging time: what a run's summary.json calls `last`.

The writer feeds it each batch it wrote. Values of one batch may come from several threads
(their buffers one after another) and of several kinds (floats, ints, JSON), so "last" is
decided by the time each value was logged, never by where it sits in the batch.
"""

from __future__ import annotations

import operator
from array import array
from itertools import islice
from typing import Any

_NEVER = float("-inf")
_LE = operator.le


class LatestValues:
    """Key id -> the value logged last (ties: the one written later wins)."""

    def __init__(self) -> None:
        self.values: dict[int, Any] = {}
        self._times: dict[int, float] = {}

    def remember(self, batch: dict[str, Any]) -> None:
        """The last value of every key by logging time (the run summary's `last`): a
        value replaces the remembered one when it was logged at the same time or later."""
        when = self._times
        for rows in (batch["ints"], batch["objects"]):
            for key, _ctx, _step, t, value in rows:
                if t >= when.get(key, _NEVER):
                    self.values[key], when[key] = value, t
        self._floats(batch["call_cols"], *batch["float_cols"])

    def _floats(self, calls: list[array], keys: array, values: array) -> None:
        times, counts = calls[2], calls[3]
        last, when = self.values, self._times
        end = len(keys)
        if all(map(_LE, times, islice(times, 1, None))):
            # One thread's calls (times in order): walk back from the end until every
            # key is seen, a handful of rows instead of 60k Python objects.
            remaining = set(keys)
            for j in range(len(counts) - 1, -1, -1):
                if not remaining:
                    return
                t, start = times[j], end - counts[j]
                for i in range(start, end):
                    key = keys[i]
                    if key in remaining:
                        remaining.discard(key)
                        if t >= when.get(key, _NEVER):
                            last[key], when[key] = values[i], t
                end = start
            return
        # Several threads' calls, one after the other: every row, by time.
        start = 0
        for t, count in zip(times, counts):
            for i in range(start, start + count):
                key = keys[i]
                if t >= when.get(key, _NEVER):
                    last[key], when[key] = values[i], t
            start += count
