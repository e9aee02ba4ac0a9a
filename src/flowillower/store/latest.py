"""The last value of every key by logging time: what a run's summary.json calls `last`.

The writer feeds it each batch it wrote. Values of one batch may come from several threads
(their buffers one after another) and of several kinds (floats, ints, JSON), so "last" is
decided by the time each value was logged, never by where it sits in the batch.

A remembered list, tuple or dict is a copy (`owned`): the summary shows what was logged,
even if something later changes the object it was handed. Only containers are copied,
once per key and batch (the value that wins); scalars, and floats above all, are kept as
they are.
"""

from __future__ import annotations

import operator
from array import array
from itertools import islice
from typing import Any

__all__ = ["LatestValues", "owned"]

_NEVER = float("-inf")
_LE = operator.le


def owned(value: Any) -> Any:
    """`value` with every list, tuple and dict in it copied (scalars are immutable and
    kept as they are), so a later change to the logged object does not show."""
    kind = type(value)
    if kind is list:
        return [owned(item) for item in value]
    if kind is tuple:
        return tuple(owned(item) for item in value)
    if isinstance(value, dict):
        copy = {key: owned(item) for key, item in value.items()}
        return copy if kind is dict else kind(copy)
    return value


class LatestValues:
    """Key id -> the value logged last (ties: the one written later wins)."""

    def __init__(self) -> None:
        self.values: dict[int, Any] = {}
        self._times: dict[int, float] = {}

    def remember(self, batch: dict[str, Any]) -> None:
        """The last value of every key by logging time (the run summary's `last`): a
        value replaces the remembered one when it was logged at the same time or later."""
        when, last = self._times, self.values
        for key, _ctx, _step, t, value in batch["ints"]:
            if t >= when.get(key, _NEVER):
                last[key], when[key] = value, t
        won = set()
        for key, _ctx, _step, t, value in batch["objects"]:
            if t >= when.get(key, _NEVER):
                last[key], when[key] = value, t
                won.add(key)
        for key in won:  # copied once, the winner only: a batch may log a key 1,000 times
            last[key] = owned(last[key])
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
