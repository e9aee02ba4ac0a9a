"""Watch a model during training: collect its statistics on the watched steps.

The one job: a `Watcher` ties the schedule (`schedule.py`: which steps), the hooks
(`hooks.py`: on for a watched step, off after, through torch's public handles) and the
statistics maths (`stats.py`) together, and emits each watched step's statistics to its
sink. Unwatched steps run with no hook of ours; on a watched step the outputs that
nothing modifies in place are reduced back to back at the end of the forward pass (warm
caches, `_reduce_deferred`), the gradient norms once backward ends (`_backward_done`).
Costs: docs/model.md and benchmarks/bench_model.py.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

import torch

from .hooks import ForwardHooks, after_backward, hook_output_grads, select_modules
from .keys import ACT_STATS, act_prefix
from .schedule import Schedule
from .stats import (
    WeightSamples,
    activation_stats,
    first_float,
    stats_of,
    tensor_norms,
    to_floats,
    version_of,
)

__all__ = ["Watcher", "unwatch", "watcher_of", "activation_stats", "WHAT"]

WHAT = ("activations", "gradients", "parameters")
Sink = Callable[[dict[str, Any], int], None]

_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DEFER_MAX = 1 << 22  # elements: larger outputs are reduced in their hook (memory)
_act_values = itemgetter(*ACT_STATS)


class Watcher:
    """Collect statistics of `model` every `every` steps and pass them to `sink`.

    The caller drives the step: call ``on_step(step)`` (aliases ``step``, ``set_step``)
    before each training iteration -- ``fw.watch`` registers it with ``run.on_step`` so
    ``fw.loop`` does it. A step is watched when ``should_record(step)`` is true, by default
    ``step % every == 0``. The statistics of a watched step are emitted by the next
    ``on_step`` (after that step's backward and optimizer step), by ``flush()`` or by
    ``close()``, as ``sink(stats, step)`` with keys ``act/<module path>/<stat>``
    (``#<k>`` after the path for the k-th further call in the step),
    ``grad/<param>/norm``, ``param/<param>/update_ratio`` and ``param/<param>/norm``.
    Without a sink, ``(step, stats)`` pairs are appended to ``self.records``.

    ``update_ratio`` is the measured |w_after - w_before| / |w_before| of the watched step
    itself (weights snapshotted at its ``on_step``, compared at the next one, i.e. after
    the optimizer step), computed on a fixed sample of <= ``sample`` entries per
    parameter (exact for smaller parameters). ``param/<param>/norm`` is the exact norm
    when the gradient arrives (before the update). Both describe the weights, which
    change slowly, and cost a few ops per parameter: recorded at most once every
    ``param_every`` steps (`schedule.py`).

    ``modules``: ``"leaves"`` (default), ``"all"``, an iterable of module paths or a
    ``callable(path, module) -> bool``. ``auto_step=True`` counts forward passes of
    ``model`` as steps (for use without a driving loop). Only the first forward pass of
    ``model`` in a watched step is recorded (later passes, e.g. gradient-accumulation
    micro-batches, are not), and at most ``max_calls`` calls of each module in it.
    A model has at most one Watcher: creating another closes the previous one.
    """

    def __init__(self, model: Any, every: int = 1, what: Iterable[str] = WHAT,
                 sink: Sink | None = None, *, modules: Any = "leaves",
                 should_record: Callable[[int], bool] | None = None,
                 sample: int = 4096, bins: int = 32, max_calls: int = 8,
                 param_every: int = 10, auto_step: bool = False) -> None:
        what = (what,) if isinstance(what, str) else tuple(what)
        unknown = set(what) - set(WHAT)
        if unknown:
            raise ValueError(f"unknown watch target(s) {sorted(unknown)}; choose from {WHAT}")
        # Weak: the registry maps model -> watcher, so a strong reference back would keep
        # a model that was dropped without `unwatch` alive forever.
        self._model = weakref.ref(model)
        self.schedule = Schedule(every, should_record, param_every)
        self.what = what
        self.sink = sink
        self.sample, self.bins, self.max_calls = int(sample), int(bins), int(max_calls)
        self._want_pnorm = False
        self.records: list[tuple[int, dict[str, Any]]] = []
        self.errors: list[str] = []  # statistics that failed (first 20), never raised
        self.closed = False
        # (path, module) pairs; the root is looked up through the weak reference.
        targets = [(p, None if m is model else m)
                   for p, m in (select_modules(model, modules) if "activations" in what else [])]
        self._params = [(n, p) for n, p in model.named_parameters()]
        self._grad_keys = [(n, f"grad/{n}/norm") for n, _ in self._params]
        self._hooks = ForwardHooks(self._model, targets, self._act_hook, self._end_pass)
        self._active: int | None = None  # the watched step being collected
        self._acts: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, int] = {}
        self._pass_done = False
        self._grads: dict[str, Any] = {}
        self._samples: WeightSamples | None = None
        self._pnorm: dict[str, Any] = {}
        self._want_grads = "gradients" in what or "parameters" in what
        # Outputs whose statistics wait for the end of the pass (key, tensor, version),
        # and what the first watched pass learns: which outputs are modified in place.
        self._deferred: list[tuple[str, Any, int]] = []
        self._probes: list[tuple[str, Any, int]] = []
        self._eager: set[str] = set()
        self._learned = False
        self._queued = False  # a backward-end callback is queued
        self._scratch: dict[Any, Any] = {}  # reused work buffers of activation_stats
        self._on_close: list[Callable[[], None]] = []
        self._key_cache: dict[str, list[str]] = {}
        self._auto: Any = None
        self._auto_count = 0
        previous = _REGISTRY.get(model)
        if previous is not None:
            previous.close()  # watching twice must not double the hooks
        _REGISTRY[model] = self
        if auto_step:
            self._auto = model.register_forward_pre_hook(self._auto_tick)

    @property
    def model(self) -> Any:
        """The watched model (None once it has been garbage-collected)."""
        return self._model()

    @property
    def every(self) -> int:
        """Watch every `every`-th step (without `should_record`); may be changed any time."""
        return self.schedule.every

    @every.setter
    def every(self, value: int) -> None:
        self.schedule.every = int(value)

    @property
    def should_record(self) -> Callable[[int], bool] | None:
        """The user's step predicate, if any (it overrides `every`)."""
        return self.schedule.should_record

    @property
    def param_every(self) -> int:
        """Weight statistics at most once per this many steps."""
        return self.schedule.param_every

    # -- driving ---------------------------------------------------------------------
    def on_step(self, step: int) -> None:
        """Start step `step`: emit the previous watched step, attach hooks if watched."""
        self._finish()
        if self.closed:
            return
        step = int(step)
        if self.schedule.watched(step):
            self._begin(step)
        elif self._hooks.attached:
            self._hooks.detach()

    step = on_step
    set_step = on_step

    def flush(self) -> None:
        """Emit the statistics collected for the current watched step now."""
        self._finish()

    def pause(self) -> None:
        """Flush and remove the hooks until the next watched ``on_step`` (e.g. for eval)."""
        self._finish()
        self._hooks.detach()

    def close(self) -> None:
        """Flush, remove every hook and forget the model (what `unwatch` does)."""
        if self.closed:
            return
        try:
            self._finish()
        finally:
            self.closed = True
            self._hooks.detach()
            if self._auto is not None:
                self._auto.remove()
                self._auto = None
            model = self.model
            if model is not None and _REGISTRY.get(model) is self:
                del _REGISTRY[model]
            for cb in self._on_close:
                cb()
            self._on_close.clear()

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once when the watcher closes (e.g. remove a step hook)."""
        self._on_close.append(callback)

    def _auto_tick(self, module: Any, args: Any) -> None:
        if self._active is None or self._pass_done:  # a new pass = a new step
            self.on_step(self._auto_count)
            self._auto_count += 1

    # -- hooks -----------------------------------------------------------------------------
    def _end_pass(self, module: Any, args: Any, output: Any) -> None:
        self._pass_done = True
        self._reduce_deferred()
        # Gradient (and weight) norms are taken once backward has finished, over all
        # parameters at once: a gradient hook on the model's output queues that on the
        # autograd engine (one hook per parameter would cost one call each). Every pass
        # hooks its output, so with gradient accumulation the last backward wins: the
        # accumulated gradient the optimizer sees.
        if self._want_grads and torch.is_grad_enabled():
            hook_output_grads(output, self._output_grad)

    def _output_grad(self, grad: Any) -> None:
        if self._queued or self._active is None:
            return
        try:
            after_backward(self._backward_done)
            self._queued = True
        except Exception as exc:  # a torch without the engine callback: no grad norms
            self._note_error("gradient norms", exc)

    def _backward_done(self) -> None:
        """At the end of backward: the norms of all gradients (and weights) at once."""
        self._queued = False
        if self._active is None:
            return
        try:
            names, grads, params = [], [], []
            for n, p in self._params:
                g = p.grad
                if g is not None and not g.is_sparse:
                    names.append(n)
                    grads.append(g.detach() if g.requires_grad else g)  # (create_graph)
                    params.append(p)
            if "gradients" in self.what:
                self._grads = dict(zip(names, tensor_norms(grads)))
            if self._want_pnorm:
                self._pnorm = dict(zip(names, tensor_norms([p.detach() for p in params])))
        except Exception as exc:  # an exotic tensor subclass: skip, don't break training
            self._note_error("gradient norms", exc)

    def _act_hook(self, path: str) -> Callable[..., None]:
        calls = self._calls
        first_key = act_prefix(path, 0)
        plain = torch.Tensor

        def hook(module: Any, args: Any, output: Any) -> None:
            if self._pass_done or self._active is None:
                return
            k = calls.get(path, 0)
            calls[path] = k + 1
            if k >= self.max_calls:
                return
            key = first_key if k == 0 else act_prefix(path, k)
            try:
                # The usual output is one float tensor: skip the search through containers.
                t = (output if type(output) is plain and output.is_floating_point()
                     else first_float(output))
                if t is None:
                    return
                version = version_of(t) if t.numel() <= _DEFER_MAX else None
                if self._learned and version is not None and key not in self._eager:
                    # Reduced with the pass's other outputs at its end (see _reduce_deferred)
                    self._deferred.append((key, t, version))
                    return
                stats = activation_stats(t, self.sample, self.bins, self._scratch)
                if not self._learned and version is not None:
                    self._probes.append((key, t, version))
            except Exception as exc:  # statistics must never break the user's training
                self._note_error(path, exc)
                return
            if stats is not None:
                self._acts[key] = stats
        return hook

    def _reduce_deferred(self) -> None:
        """Statistics of the outputs deferred during the pass, computed back to back.

        Why defer: between two module calls the forward pass evicts the caches the
        statistics ops run from, so each module's first op is slow (~45 us more per module
        on the demo's MLP); run together, only the first pays. The numbers are the same:
        an output is only deferred once a first watched pass has shown that nothing
        modifies it in place (its version counter unchanged at the pass's end); one that
        is found modified later loses that step's statistics and is computed in its hook
        from then on.
        """
        if not self._learned:
            for key, t, version in self._probes:
                if t._version != version:
                    self._eager.add(key)  # e.g. a Linear followed by ReLU(inplace=True)
            self._probes = []
            self._learned = True
        deferred, self._deferred = self._deferred, []
        if not deferred:
            return
        try:
            live = []
            for key, t, version in deferred:
                if t._version != version:
                    self._eager.add(key)
                    self._note_error(key, RuntimeError("output modified in place after the "
                                                       "module; computed in its hook from now"))
                else:
                    live.append((key, t))
            for (key, _), stats in zip(live, stats_of([t for _, t in live], self.sample,
                                                       self.bins, self._scratch)):
                if stats is not None:
                    self._acts[key] = stats
        except Exception as exc:  # statistics must never break the user's training
            self._note_error("activations", exc)

    def _note_error(self, where: str, exc: BaseException) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{where or '(root)'}: {type(exc).__name__}: {exc}")

    # -- steps ---------------------------------------------------------------------------
    def _begin(self, step: int) -> None:
        self._active = step
        self._acts = {}
        self._calls.clear()
        self._deferred = []
        self._probes = []
        self._pass_done = False
        self._grads = {}
        self._pnorm = {}
        self._queued = False
        self._want_pnorm = "parameters" in self.what and self.schedule.params_due(step)
        if self._want_pnorm:
            # A sample (<= `sample` entries) is enough for |dw|/|w| and avoids copying the
            # whole model every watched step.
            if self._samples is None or not self._samples.valid():
                self._samples = WeightSamples(self._params, self.sample)
            self._samples.snapshot()
        self._hooks.attach()

    def _finish(self) -> None:
        step = self._active
        if step is None:
            return
        self._reduce_deferred()  # a pass that did not reach the root's end (an exception)
        self._active = None
        stats: dict[str, Any] = {}
        keys = self._key_cache
        for prefix, st in self._acts.items():
            names_ = keys.get(prefix)
            if names_ is None:
                names_ = keys[prefix] = [f"{prefix}/{stat}" for stat in ACT_STATS]
            stats.update(zip(names_, _act_values(st)))
        names: list[str] = []
        tensors: list[Any] = []
        if "gradients" in self.what:
            grads = self._grads
            for name, key in self._grad_keys:
                g = grads.get(name)
                if g is not None:
                    names.append(key)
                    tensors.append(g)
        samples, ratio_keys = self._samples, []
        if "parameters" in self.what and self._want_pnorm:
            for name, p in self._params:
                pnorm = self._pnorm.get(name)
                if pnorm is None:  # no gradient this step (frozen, or no backward)
                    pnorm = torch.linalg.vector_norm(p.detach())
                names.append(f"param/{name}/norm")
                tensors.append(pnorm)
        if "parameters" in self.what and samples is not None and samples.snap is not None:
            norms = samples.norms()
            samples.snapped = False  # a snapshot serves one step
            if norms is not None:
                ratio_keys = samples.ratio_keys
                tensors += norms[0] + norms[1]
        if tensors:
            values = to_floats(tensors)
            stats.update(zip(names, values))
            if ratio_keys:
                k = len(ratio_keys)
                nums, dens = values[len(names):len(names) + k], values[len(names) + k:]
                for key, num, den in zip(ratio_keys, nums, dens):
                    stats[key] = num / den if den else (0.0 if num == 0 else math.inf)
        self._acts, self._grads, self._pnorm = {}, {}, {}
        if stats and self.sink is None:
            self.records.append((step, stats))
        elif stats:
            self.sink(stats, step)


def watcher_of(model: Any) -> Watcher | None:
    """The Watcher currently attached to `model`, if any."""
    return _REGISTRY.get(model)


def unwatch(model: Any) -> bool:
    """Flush and remove every hook the Watcher put on `model`; False if none was watching."""
    w = _REGISTRY.get(model)
    if w is None:
        return False
    w.close()
    return True
