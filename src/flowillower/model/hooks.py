"""The watcher's hooks on a model: put on for a watched step, taken off after it.

The one job: hook management, through torch's public hook API only --
`Module.register_forward_hook` and the `RemovableHandle` it returns, `Tensor.register_hook`
for the output's gradient. A watched step registers the hooks and keeps the handles; the
next unwatched step removes them through those handles. An unwatched step therefore runs
with no hook of ours at all: a module with no hooks takes PyTorch's fast call path.

Why not register once and skip unwatched steps with a flag: every hooked module then
takes torch's slow call path on every forward pass, which costs more per 10-step cycle
than registering on the watched step (benchmarks/bench_model.py, "hook designs").
Why not put the hooks back into the modules' private hook dicts by handle id (what this
package did before, a few µs cheaper per watched step): it depends on torch internals
(`_forward_hooks`, `hooks_dict_ref`) that may change in any release.

The end of backward is the one place left where no public API exists: `after_backward`
queues a callback on the autograd engine (guarded: without it, no gradient norms).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from .nested import flat_tensors

__all__ = ["ForwardHooks", "after_backward", "hook_output_grads", "select_modules"]

ForwardHook = Callable[[Any, Any, Any], None]


def select_modules(model: Any, modules: Any) -> list[tuple[str, Any]]:
    """(path, module) pairs to watch: ``"leaves"``, ``"all"``, an iterable of paths or a
    ``callable(path, module) -> bool``."""
    named = list(model.named_modules())
    if modules == "leaves":
        return [(p, m) for p, m in named if not any(True for _ in m.children())]
    if modules == "all":
        return named
    if callable(modules):
        return [(p, m) for p, m in named if modules(p, m)]
    wanted = set(modules)
    return [(p, m) for p, m in named if p in wanted]


class ForwardHooks:
    """A forward hook per target module plus one on the root, on while `attached`.

    `make_hook(path)` builds a target's hook (once per path; later watched steps register
    the same function again). `end_pass` is registered last on the root, so that the
    root's own statistics come first and `end_pass` sees the end of the forward pass.
    The model is held weakly (`model_ref`); a target of None stands for the root.
    """

    def __init__(self, model_ref: weakref.ref, targets: list[tuple[str, Any]],
                 make_hook: Callable[[str], ForwardHook], end_pass: ForwardHook) -> None:
        self.model_ref = model_ref
        self.targets = targets
        self.make_hook = make_hook
        self.end_pass = end_pass
        self.attached = False
        self.handles: list[Any] = []  # torch RemovableHandles of the registered hooks
        self.made: dict[str, ForwardHook] = {}

    def attach(self) -> None:
        """Register the hooks (no-op when attached or when the model is gone)."""
        if self.attached:
            return
        model = self.model_ref()
        if model is None:
            return
        add = self.handles.append
        made = self.made
        for path, module in self.targets:
            hook = made.get(path)
            if hook is None:  # made once: every watched step registers the same ones
                hook = made[path] = self.make_hook(path)
            add((module or model).register_forward_hook(hook))
        add(model.register_forward_hook(self.end_pass))
        self.attached = True

    def detach(self) -> None:
        """Remove every hook registered by `attach` through its handle."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.attached = False


def hook_output_grads(output: Any, on_grad: Callable[[Any], None]) -> None:
    """Call `on_grad(grad)` when a gradient reaches any tensor in `output` that has one.

    How the watcher learns that a backward pass through this forward pass has started.
    """
    found: list[Any] = []
    flat_tensors(output, found)
    for t in found:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.register_hook(on_grad)


def after_backward(callback: Callable[[], None]) -> None:
    """Run `callback()` once the backward pass in progress has finished.

    Call it from inside a gradient hook. Uses the autograd engine's callback queue, which
    torch exposes only privately; raises (AttributeError, RuntimeError) where it is
    missing, and the caller records that and goes without gradient norms.
    """
    torch.autograd.Variable._execution_engine.queue_callback(callback)
