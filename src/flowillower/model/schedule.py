"""Which steps a `Watcher` watches, and on which of them it measures the weights.

The one job: the schedule. A step is watched when ``should_record(step)`` is true, by
default ``step % every == 0``. Weight norms and update ratios change slowly and cost a
few ops per parameter (a norm is a full pass over the weights, as costly as all gradient
norms), so a watched step records them at most once every ``param_every`` steps.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Schedule"]


class Schedule:
    """`every` / `should_record` for watched steps, `param_every` for the weights.

    ``every`` and ``should_record`` may be changed between steps (a benchmark or a user
    switching rates); `watched` reads them each time.
    """

    def __init__(self, every: int = 1, should_record: Callable[[int], bool] | None = None,
                 param_every: int = 10) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.every = int(every)
        self.should_record = should_record
        self.param_every = max(1, int(param_every))
        self.last_param_step: int | None = None

    def watched(self, step: int) -> bool:
        """Whether `step` is watched."""
        if self.should_record is not None:
            return bool(self.should_record(step))
        return step % self.every == 0

    def params_due(self, step: int) -> bool:
        """Whether watched step `step` records weight statistics; if so, remembers it.

        Due on the first watched step, then once `param_every` steps have passed, and
        again whenever the step count goes backwards (a restarted loop).
        """
        last = self.last_param_step
        if last is None or step - last >= self.param_every or step < last:
            self.last_param_step = step
            return True
        return False
