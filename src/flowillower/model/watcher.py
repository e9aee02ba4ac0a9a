"""Per-module activation and per-parameter gradient / weight statistics during training.

Cost model (see docs/model.md and benchmarks/bench_model.py):

* Hooks are attached only for watched steps and removed otherwise: a module with no hooks
  takes PyTorch's fast call path, so unwatched steps cost nothing.
* Per module output, five reductions (sum, sum of squares, min, max, non-zeros); NaN /
  inf counts only when the sum is non-finite (a finite sum rules them out). After the
  first watched pass, outputs that nothing modifies in place are reduced back to back at
  the end of the forward pass (warm caches). CPU float outputs are reduced in numpy on a
  zero-copy view (a numpy call costs a fraction of a torch op) and give Python floats;
  outputs on other devices are reduced there and cross in one `.tolist()`. Histograms
  are binned in numpy on the CPU.
* Gradient norms (and weight norms every `param_every` steps) are taken when backward
  ends (queued on the autograd engine): a numpy dot per CPU parameter, one
  `_foreach_norm` elsewhere, whose results stay on the device until the step is flushed,
  like the update ratios, and cross in one `.tolist()`.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

import numpy as np
import torch

from ..values import Checked
from .nested import flat_tensors as _flat
from .keys import ACT_STATS, act_prefix

__all__ = ["Watcher", "unwatch", "watcher_of", "activation_stats", "WHAT"]

WHAT = ("activations", "gradients", "parameters")
Sink = Callable[[dict[str, Any], int], None]

_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAST = (torch.float32, torch.float64)
_DEFER_MAX = 1 << 22  # elements: larger outputs are reduced in their hook (memory, and the
# fixed cost that deferring saves is small next to theirs)
_SCRATCH_MAX = 1 << 22  # elements; larger activations use a temporary instead
_CHECKED_BINS = 1024  # histograms up to this many bins are logged without re-validation
_act_values = itemgetter(*ACT_STATS)


def _version_of(tensor: Any) -> int | None:
    """The tensor's in-place version counter; None where it has none (inference mode)."""
    try:
        return tensor._version
    except (RuntimeError, AttributeError):
        return None


def _first_float(output: Any) -> Any:
    """The tensor whose statistics describe a module's output (first floating tensor)."""
    if isinstance(output, torch.Tensor):
        found = [output]
    else:
        found = []
        _flat(output, found)
    for t in found:
        if t.is_floating_point():
            return t
    for t in found:
        if not t.is_complex():
            return t  # an integer / bool output: statistics over its values
    return None


def activation_stats(tensor: Any, sample: int = 4096, bins: int = 32,
                     scratch: dict | None = None) -> dict[str, Any] | None:
    """Statistics of one tensor: mean, std, min, max, norm, zeros, nan, inf, hist.

    ``std`` is the unbiased standard deviation (``torch.std``'s default; 0 for a single
    element), ``norm`` the L2 norm, ``zeros`` the fraction of exact zeros, ``nan`` /
    ``inf`` counts. ``hist`` is ``{"min", "max", "counts"}``: a ``bins``-bin histogram of
    a strided sample of at most ``sample`` elements over the range [min, max] of the whole
    tensor (of its finite values; a constant v gives [v - 1, v + 1]); non-finite sample
    values are not counted. Returns None for an empty tensor. ``scratch``: a dict the
    caller keeps between calls, holding a reused work buffer (a large temporary allocated
    and freed every call fragments glibc's heap and adds page faults to CPU training).
    """
    return _stats_of([tensor], sample, bins, scratch)[0]


def _stats_of(tensors: list[Any], sample: int, bins: int,
              scratch: dict | None = None) -> list[dict[str, Any] | None]:
    """`activation_stats` of several tensors: their reductions back to back, one crossing
    to Python per device, and one histogram pass over all the CPU ones."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN are counted, not warned
        reduced = [_reductions(t, scratch) for t in tensors]
    # CPU float tensors arrive as Python floats already (numpy); the others as a tensor
    # of their five reductions each, crossed together.
    present = [r[1] for r in reduced if r is not None and not isinstance(r[1], list)]
    if len({v.device for v in present}) == 1:
        crossed = iter(torch.stack([v.double() for v in present]).tolist())
    else:
        crossed = iter([v.tolist() for v in present])
    hists: list = []
    out = [None if r is None else
           _assemble(r[0], r[1] if isinstance(r[1], list) else next(crossed), sample, bins,
                     hists)
           for r in reduced]
    _fill_hists(hists, bins)
    return out


def _reductions(tensor: Any, scratch: dict | None = None) -> tuple[Any, Any] | None:
    """(flat float view, [sum, sum of squares, min, max, non-zeros]) of `tensor`.

    CPU float32 / float64 tensors are reduced in numpy and give Python floats: a numpy
    call costs ~1 us against ~4-8 us for a torch op, and the non-zero count is ~2x
    faster, which is most of a watched step's cost on a small network. Others are
    reduced on their device into one tensor, left there: the caller crosses one or many
    of them to Python at once.
    """
    x = tensor.detach()
    if x.dtype not in _FAST:
        x = x.float()  # half / bf16 / int: reduce in float32
    n = x.numel()
    if n == 0:
        return None
    flat = x.reshape(-1)  # a view when contiguous (the usual case)
    if flat.device.type == "cpu" and type(flat) is torch.Tensor:
        try:
            return flat, _numpy_reductions(flat, n, scratch)
        except (RuntimeError, TypeError):  # e.g. a conjugate / negative view: torch below
            pass
    total = flat.sum()
    sq = torch.dot(flat, flat)  # sum of squares: norm, and std together with the sum
    mn, mx = torch.aminmax(flat)
    # Non-zeros as the sum of (x != 0) written as floats into a reused buffer: ~2x faster
    # than count_nonzero (whose branchy kernel mispredicts on half-zero ReLU outputs).
    if scratch is not None and n <= _SCRATCH_MAX:
        buf = _scratch(scratch, (x.device, x.dtype), n,
                       lambda: torch.empty(n, device=x.device, dtype=x.dtype))
        nnz = torch.ne(flat, 0, out=buf).sum()
    else:
        nnz = torch.count_nonzero(flat).to(x.dtype)
    return flat, torch.stack((total, sq, mn, mx, nnz))


def _numpy_reductions(flat: Any, n: int, scratch: dict | None) -> list[float]:
    """[sum, sum of squares, min, max, non-zeros] of a flat CPU float tensor, via numpy.

    The sum stays torch's (cascade summation: more accurate than numpy's float32 sum and
    faster); the rest reads the same memory through a zero-copy numpy view.
    """
    a = flat.numpy()
    mask = (_scratch(scratch, "np_bool", n, lambda: np.empty(n, dtype=bool))
            if scratch is not None and n <= _SCRATCH_MAX else np.empty(n, dtype=bool))
    np.not_equal(a, 0, out=mask)  # into bools, then counted: ~4x faster than on floats
    return [flat.sum().item(), float(np.dot(a, a)), float(a.min()), float(a.max()),
            float(np.count_nonzero(mask))]


def _scratch(scratch: dict, key: Any, n: int, make: Callable[[], Any]) -> Any:
    """The first `n` elements of the work buffer `scratch[key]`, (re)made by `make()`
    when missing or too small. Reused: a large temporary allocated and freed every call
    fragments glibc's heap and adds page faults to CPU training."""
    buf = scratch.get(key)
    if buf is None or len(buf) < n:
        buf = scratch[key] = make()
    return buf[:n]


def _assemble(flat: Any, values: list[float], sample: int, bins: int,
              hists: list) -> dict[str, Any]:
    """The statistics of `flat` from its `_reductions` values (rare paths read it again).

    The histogram's counts are left for `_fill_hists`: ``(picked, lo, hi, hist dict)`` is
    appended to `hists`.
    """
    n = flat.numel()
    total_v, sq_v, min_v, max_v, nnz_v = values
    stride = -(-n // sample)
    picked = flat[::stride] if stride > 1 else flat
    nan_c = inf_c = 0.0
    mean_v = total_v / n
    if not (math.isfinite(total_v) and math.isfinite(sq_v)):
        # Rare path: a non-finite sum means NaN / inf may be present. Count them, and
        # take the histogram over the finite values only.
        nan_c, inf_c, nnz_v = (float(v) for v in torch.stack(
            (torch.isnan(flat).sum(), torch.isinf(flat).sum(),
             torch.count_nonzero(flat))).tolist())
        centered = math.nan
        finite = flat[torch.isfinite(flat)]
        lo, hi = ((-1.0, 1.0) if finite.numel() == 0 else
                  tuple(float(v) for v in torch.stack(torch.aminmax(finite)).tolist()))
        picked = picked[torch.isfinite(picked)]
    else:
        lo, hi = min_v, max_v
        centered = sq_v - total_v * mean_v  # sum((x - mean)^2), from one pass
        if centered < 1e-3 * sq_v:
            # |mean| >> std: the subtraction lost digits (float32 sums); redo it in two
            # passes. Rare for activations, so it costs a second crossing only then.
            centered = torch.linalg.vector_norm(flat - mean_v).item() ** 2
    if lo == hi:  # what torch.histc does with a degenerate range
        lo, hi = lo - 1.0, hi + 1.0
    std_v = math.sqrt(max(centered, 0.0) / (n - 1)) if n > 1 else 0.0
    if centered != centered:
        std_v = math.nan
    norm_v = math.sqrt(sq_v) if sq_v == sq_v and sq_v >= 0 else math.nan
    # Built here from floats and ints: small ones skip `fw.log`'s value checks (Checked).
    hist: dict[str, Any] = (Checked if bins <= _CHECKED_BINS else dict)(min=lo, max=hi)
    hists.append((picked, lo, hi, hist))
    return {
        "mean": mean_v, "std": std_v, "min": min_v, "max": max_v, "norm": norm_v,
        "zeros": (n - nnz_v) / n, "nan": nan_c, "inf": inf_c, "hist": hist,
    }


def _fill_hists(hists: list, bins: int) -> None:
    """The counts of `_assemble` histograms: CPU ones binned in numpy, all in one pass.

    (A histogram of a few thousand values is ~1 us per numpy call against tens of
    microseconds for `torch.histc` on a small tensor.) A value at hi goes in the last bin.
    """
    cpu = []
    for picked, lo, hi, hist in hists:
        if picked.numel() == 0:
            hist["counts"] = [0] * bins
        elif picked.device.type == "cpu":
            cpu.append((picked, lo, hi, hist))
        else:
            hist["counts"] = [int(c) for c in torch.histc(picked, bins, lo, hi).tolist()]
    if not cpu:
        return
    sizes = tuple(h[0].numel() for h in cpu)
    values = np.concatenate([h[0].numpy() for h in cpu])  # a new array: changed in place
    values -= np.repeat(np.array([h[1] for h in cpu], dtype=values.dtype), sizes)
    values *= np.repeat(np.array([bins / (h[2] - h[1]) for h in cpu], dtype=values.dtype),
                        sizes)
    idx = values.astype(np.intp)  # >= 0: lo is each tensor's minimum
    np.minimum(idx, bins - 1, out=idx)
    idx += _bin_offsets(sizes, bins)
    counts = np.bincount(idx, minlength=len(cpu) * bins).tolist()
    for i, (_, _, _, hist) in enumerate(cpu):
        hist["counts"] = counts[i * bins:(i + 1) * bins]


@functools.lru_cache(maxsize=64)
def _bin_offsets(sizes: tuple[int, ...], bins: int) -> Any:
    """Each sample's first bin in `_fill_hists`'s joint bincount (the same every step)."""
    offsets = np.repeat(np.arange(len(sizes)) * bins, sizes)
    offsets.flags.writeable = False  # shared between calls
    return offsets


def _select(model: Any, modules: Any) -> list[tuple[str, Any]]:
    named = list(model.named_modules())
    if modules == "leaves":
        return [(p, m) for p, m in named if not any(True for _ in m.children())]
    if modules == "all":
        return named
    if callable(modules):
        return [(p, m) for p, m in named if modules(p, m)]
    wanted = set(modules)
    return [(p, m) for p, m in named if p in wanted]


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
    change slowly, and cost a few ops per parameter: they are recorded on watched steps
    at most once every ``param_every`` steps.

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
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        # Weak: the registry maps model -> watcher, so a strong reference back would keep
        # a model that was dropped without `unwatch` alive forever.
        self._model = weakref.ref(model)
        self.every = int(every)
        self.what = what
        self.sink = sink
        self.should_record = should_record
        self.sample, self.bins, self.max_calls = int(sample), int(bins), int(max_calls)
        self.param_every = max(1, int(param_every))
        self._last_pnorm_step: int | None = None
        self._want_pnorm = False
        self.records: list[tuple[int, dict[str, Any]]] = []
        self.errors: list[str] = []  # statistics that failed (first 20), never raised
        self.closed = False
        # (path, module) pairs; the root is looked up through the weak reference.
        self._targets = [(p, None if m is model else m)
                         for p, m in (_select(model, modules) if "activations" in what else [])]
        self._params = [(n, p) for n, p in model.named_parameters()]
        self._grad_keys = [(n, f"grad/{n}/norm") for n, _ in self._params]
        self._handles: list[Any] = []
        # (module hook dict, handle id, hook) of the registered hooks, for `_attach`.
        self._parked: list[tuple[Any, int, Callable[..., None]]] = []
        self._hook_fns: dict[str, Callable[..., None]] = {}
        self._attached = False
        self._active: int | None = None  # the watched step being collected
        self._acts: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, int] = {}
        self._pass_done = False
        self._grads: dict[str, Any] = {}
        self._samples: _Samples | None = None
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

    # -- driving ---------------------------------------------------------------------
    def on_step(self, step: int) -> None:
        """Start step `step`: emit the previous watched step, attach hooks if watched."""
        self._finish()
        if self.closed:
            return
        step = int(step)
        active = self.should_record(step) if self.should_record else step % self.every == 0
        if active:
            self._begin(step)
        elif self._attached:
            self._detach()

    step = on_step
    set_step = on_step

    def flush(self) -> None:
        """Emit the statistics collected for the current watched step now."""
        self._finish()

    def pause(self) -> None:
        """Flush and remove the hooks until the next watched ``on_step`` (e.g. for eval)."""
        self._finish()
        self._detach()

    def close(self) -> None:
        """Flush, remove every hook and forget the model (what `unwatch` does)."""
        if self.closed:
            return
        try:
            self._finish()
        finally:
            self.closed = True
            self._unhook()
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

    # -- hooks -------------------------------------------------------------------------
    def _attach(self) -> None:
        if self._attached:
            return
        model = self.model
        if model is None:
            return
        if self._parked:
            # Hooks registered by an earlier watched step are put back into the modules'
            # hook dicts under their own handle ids: what `register_forward_hook` does,
            # without making a handle each time (a tenth of a watched step's cost).
            for hooks, hook_id, fn in self._parked:
                hooks[hook_id] = fn
            self._attached = True
            return
        add = self._handles.append
        for path, module in self._targets:
            hook = self._hook_fns.get(path)
            if hook is None:  # made once: a watched step re-attaches them all
                hook = self._hook_fns[path] = self._act_hook(path)
            add((module or model).register_forward_hook(hook))
        # Registered last on the root so that the root's own statistics come first. It
        # also hooks the output's gradient, which is how the end of backward is found.
        add(model.register_forward_hook(self._end_pass))
        self._attached = True
        try:
            parked = [(h.hooks_dict_ref(), h.id) for h in self._handles]
            self._parked = [(hooks, hook_id, hooks[hook_id]) for hooks, hook_id in parked]
        except (AttributeError, KeyError, TypeError):  # handles changed shape: re-register
            self._parked = []

    def _detach(self) -> None:
        if self._parked:
            if self._attached:
                for hooks, hook_id, _ in self._parked:
                    hooks.pop(hook_id, None)
        else:
            for h in self._handles:
                h.remove()
            self._handles.clear()
        self._attached = False

    def _unhook(self) -> None:
        """Remove every hook for good (close)."""
        self._detach()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._parked = []

    def _end_pass(self, module: Any, args: Any, output: Any) -> None:
        self._pass_done = True
        self._reduce_deferred()
        if not self._want_grads or not torch.is_grad_enabled():
            return
        # Gradient (and weight) norms are taken once backward has finished, over all
        # parameters at once (`_norms`): a gradient hook on the model's output queues that
        # on the autograd engine. (A hook per parameter cost ~10 us each, 14 of them
        # a third of a watched step of the demo's MLP.) Every pass of the step hooks its
        # output, so with gradient accumulation the last backward wins: the accumulated
        # gradient the optimizer sees.
        found: list[Any] = []
        _flat(output, found)
        for t in found:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(self._output_grad)

    def _output_grad(self, grad: Any) -> None:
        if self._queued or self._active is None:
            return
        try:
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)
            self._queued = True
        except Exception as exc:  # a torch without the engine callback: no grad norms
            self._note_error("gradient norms", exc)

    def _backward_done(self) -> None:
        """At the end of backward: the norms of all gradients (and weights), see `_norms`."""
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
                self._grads = dict(zip(names, _norms(grads)))
            if self._want_pnorm:
                self._pnorm = dict(zip(names, _norms([p.detach() for p in params])))
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
                     else _first_float(output))
                if t is None:
                    return
                version = _version_of(t) if t.numel() <= _DEFER_MAX else None
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
            for (key, _), stats in zip(live, _stats_of([t for _, t in live], self.sample,
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
        last = self._last_pnorm_step
        # Weight norms and update ratios change slowly and cost a few ops per parameter
        # (a norm is a full pass over the weights, as costly as all gradient norms):
        # record them at most once per `param_every` steps.
        self._want_pnorm = "parameters" in self.what and (
            last is None or step - last >= self.param_every or step < last)
        if self._want_pnorm:
            self._last_pnorm_step = step
            # A sample (<= `sample` entries) is enough for |dw|/|w| and avoids copying the
            # whole model every watched step.
            if self._samples is None or not self._samples.valid():
                self._samples = _Samples(self._params, self.sample)
            self._samples.snapshot()
        self._attach()

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
        samples = self._samples
        ratio_keys: list[str] = []
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
            values = _to_floats(tensors)
            for key, value in zip(names, values):
                stats[key] = value
            if ratio_keys:
                k = len(ratio_keys)
                nums, dens = values[len(names):len(names) + k], values[len(names) + k:]
                for key, num, den in zip(ratio_keys, nums, dens):
                    stats[key] = num / den if den else (0.0 if num == 0 else math.inf)
        self._acts, self._grads, self._pnorm = {}, {}, {}
        if not stats:
            return
        if self.sink is None:
            self.records.append((step, stats))
        else:
            self.sink(stats, step)


class _Samples:
    """Fixed samples of every parameter, for |dw|/|w| between two moments.

    The sample views are built once and reused while the parameters keep their storage
    (checked by data pointer), so a snapshot is one small copy per parameter and the ratios
    one subtraction and norm per parameter, all on the parameters' own devices.
    """

    def __init__(self, params: list[tuple[str, Any]], size: int) -> None:
        self.params = [(n, p) for n, p in params if p.numel()]
        self.ptrs = [(p.data_ptr(), p.shape) for _, p in self.params]
        self.views = [_param_sample(p, size) for _, p in self.params]
        self.ratio_keys = [f"param/{n}/update_ratio" for n, _ in self.params]
        self.snap: list[Any] | None = None
        self.snapped = False

    def valid(self) -> bool:
        return all(p.data_ptr() == ptr and p.shape == shape
                   for (_, p), (ptr, shape) in zip(self.params, self.ptrs))

    def snapshot(self) -> None:
        with torch.no_grad():
            if self.snap is None:
                self.snap = [v.clone() for v in self.views]
            else:  # reuse the buffers: no allocations between the optimizer's temporaries
                try:
                    torch._foreach_copy_(self.snap, self.views)  # one dispatch for all
                except (AttributeError, RuntimeError, TypeError):  # private API moved
                    for buf, v in zip(self.snap, self.views):
                        buf.copy_(v)
        self.snapped = True

    def norms(self) -> tuple[list[Any], list[Any]] | None:
        """(|now - snapshot|, |snapshot|) per parameter as 0-d tensors; None if stale.

        The division happens in Python after the single crossing, saving one op each.
        """
        if self.snap is None or not self.snapped or not self.valid():
            return None
        with torch.no_grad():
            # In place in the snapshot buffers (no new allocations); the
            # snapshot is spent afterwards. foreach: one dispatch for all parameters.
            try:
                den = list(torch._foreach_norm(self.snap))
                torch._foreach_sub_(self.snap, self.views)
                return list(torch._foreach_norm(self.snap)), den
            except (AttributeError, RuntimeError, TypeError):  # private API moved
                den = [torch.linalg.vector_norm(s) for s in self.snap]
                for s, v in zip(self.snap, self.views):
                    s.sub_(v)
                return [torch.linalg.vector_norm(s) for s in self.snap], den


def _norms(tensors: list[Any]) -> list[Any]:
    """L2 norms: Python floats for CPU float tensors, else 0-d tensors on their devices.

    On the CPU a numpy dot per tensor (~1 us of call overhead each) beats one
    `_foreach_norm` plus the stacking and crossing its results need later. Elsewhere one
    `_foreach_norm` when it can; half / bf16 / integer tensors get their norm in float32
    (a half norm overflows).
    """
    if not tensors:
        return []
    if all(t.device.type == "cpu" and t.dtype in _FAST and type(t) is torch.Tensor
           for t in tensors):
        try:
            out = []
            with np.errstate(over="ignore"):
                for t in tensors:
                    a = t.numpy().reshape(-1)
                    sq = float(np.dot(a, a))
                    # A float32 sum of squares overflows long before the norm does (and
                    # `_foreach_norm` returns inf then): redo those in float64.
                    out.append(math.sqrt(sq) if sq != math.inf else
                               float(torch.linalg.vector_norm(t, dtype=torch.float64)))
            return out
        except (RuntimeError, TypeError):  # e.g. a conjugate view: torch below
            pass
    if all(t.dtype in _FAST for t in tensors):
        try:
            return list(torch._foreach_norm(tensors))
        except (AttributeError, RuntimeError, TypeError):  # private API moved
            pass
    return [torch.linalg.vector_norm(t, dtype=t.dtype if t.dtype in _FAST else torch.float32)
            for t in tensors]


def _param_sample(p: Any, size: int) -> Any:
    """A view of <= `size` entries of `p`: all of it, or 4 evenly spaced contiguous blocks.

    Blocks rather than a plain stride: a stride touches `size` cache lines, 4 blocks only
    size/16 (with 4-byte floats), which makes the snapshot ~5x cheaper on a large model.
    """
    flat = p.detach().reshape(-1)
    n = flat.numel()
    if n <= size:
        return flat
    blocks = 4
    length = size // blocks
    step = (n - length) // (blocks - 1)
    return flat.as_strided((blocks, length), (step, 1), flat.storage_offset())


def _to_floats(values: list[Any]) -> list[float]:
    """Python floats of many floats and 0-d tensors, in order: one `.tolist()` per device."""
    out = list(values)
    tensors = [(i, t) for i, t in enumerate(values) if not isinstance(t, float)]
    by_device: dict[Any, list[tuple[int, Any]]] = {}
    for i, t in tensors:
        by_device.setdefault(t.device, []).append((i, t))
    for group in by_device.values():
        same = len({t.dtype for _, t in group}) == 1
        vals = torch.stack([t if same else t.double() for _, t in group]).tolist()
        for (i, _), v in zip(group, vals):
            out[i] = v
    return out


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

