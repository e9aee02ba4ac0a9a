"""Recent chart answers, reused while none of their series changed.

Downsampling 100 runs x 100,000 values to one chart costs a pass over 10M values; the
answer is ~1,000 points a run. Reopening the charts page (a reload, going back) asks for
exactly the same answers, so they are kept, keyed by the request and by each series'
`Loaded.version` (which changes whenever the series does: a live run's answers are
simply not found again once it grew). Bounded by a count of answers, LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_ANSWERS = 64


class AnswerCache:
    """A thread-safe LRU of computed answers by key."""

    def __init__(self, max_answers: int = MAX_ANSWERS) -> None:
        self.max_answers = max_answers
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: Hashable | None, compute: Callable[[], Any]) -> Any:
        """The answer stored under `key`, else `compute()` stored; a None key (a series
        of unknown version) is never stored."""
        if key is not None:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return self._items[key]
        value = compute()
        if key is not None:
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.max_answers:
                    self._items.popitem(last=False)
        return value


__all__ = ["AnswerCache", "MAX_ANSWERS"]
