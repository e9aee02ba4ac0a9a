"""Run-creation hooks, kept apart from `run` so that registering one (as the package does
at import) loads nothing of the logging core: `flowillower.store.*`, the CLI and the UI
import the package without paying for `api`, `run` and the writer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .loops import StepHook

# Called with each new Run before its set-up starts (see `on_run_created`).
creation_hooks: list[Callable[[Any], None]] = []


def on_run_created(hook: Callable[[Any], None]) -> StepHook:
    """Call `hook(run)` for every `Run` created from now on in this process, before the
    run starts capturing its set-up: the hook may still `redirect_output` or set
    `capture_code`. This is how layers above plug in (a hindsight replay worker sends its
    run to a scratch store). Registering the same hook twice has no effect; `.remove()`
    on the returned handle unregisters it."""
    if hook not in creation_hooks:
        creation_hooks.append(hook)
    return StepHook(creation_hooks, hook)
