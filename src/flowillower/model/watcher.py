"""Per-module activation and per-parameter gradient / weight statistics during training.

Cost model (see docs/model.md and benchmarks/bench_model.py):

* Hooks are attached only for watched steps and removed otherwise: a module with no hooks
  takes PyTorch's fast call path, so unwatched steps cost nothing.
* Per module call, a handful of reductions (`sum`, `dot`, `aminmax`, a non-zero count,
  a 32-bin `histc` on a strided sample of <= 4,096 elements) are stacked
  into one tensor that crosses to Python with a single `.tolist()`; NaN / inf counts are
  computed only when a statistic is non-finite (a finite sum rules them out).
* Gradient norms are computed in a post-accumulate-grad hook and stay on the device until
  the step is flushed; parameter norms and update ratios likewise; all of them cross to
  Python in one `.tolist()` per device per step.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .graph import _flat
from .keys import ACT_STATS, act_prefix

__all__ = ["Watcher", "unwatch", "watcher_of", "activation_stats", "WHAT"]

WHAT = ("activations", "gradients", "parameters")
Sink = Callable[[dict[str, Any], int], None]

_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAST = (torch.float32, torch.float64)
_SCRATCH_MAX = 1 << 22  # elements; larger activations use a temporary instead


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
    element), ``norm`` the L2
    norm, ``zeros`` the fraction of exact zeros, ``nan`` / ``inf`` counts. ``hist`` is
    ``{"min", "max", "counts"}``: a ``bins``-bin histogram over the range of a strided
    sample of at most ``sample`` elements (non-finite sample values counted as 0).
    Returns None for an empty tensor. ``scratch``: a dict the caller keeps between calls,
    holding a reused work buffer (see `_norm_into` for why reuse matters).
    """
    x = tensor.detach()
    if x.dtype not in _FAST:
        x = x.float()  # half / bf16 / int: reduce in float32
    n = x.numel()
    if n == 0:
        return None
    flat = x.reshape(-1)  # a view when contiguous (the usual case)
    total = flat.sum()
    sq = torch.dot(flat, flat)  # sum of squares: norm, and std together with the sum
    mn, mx = torch.aminmax(flat)
    # |x|.sign().sum() counts non-zeros ~10x faster than count_nonzero on ReLU outputs
    # (whose branchy kernel mispredicts on half-zero data); NaN makes it NaN (rare path).
    if scratch is not None and n <= _SCRATCH_MAX:
        key = (x.device, x.dtype)
        buf = scratch.get(key)
        if buf is None or buf.numel() < n:
            buf = scratch[key] = torch.empty(n, device=x.device, dtype=x.dtype)
        absx = torch.abs(flat, out=buf[:n])
    else:
        absx = flat.abs()
    nnz = absx.sign_().sum()
    stride = -(-n // sample)
    s = flat[::stride] if stride > 1 else flat
    # histc rejects a non-finite range; NaN / inf are counted separately anyway.
    s = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    smin, smax = torch.aminmax(s)
    hist = torch.histc(s, bins)
    vals = torch.cat((torch.stack((total, sq, mn, mx, nnz, smin, smax)),
                      hist)).tolist()  # the one crossing to Python
    total_v, sq_v, min_v, max_v, nnz_v, lo, hi = vals[:7]
    if lo == hi:  # histc widens a degenerate range by 1 on each side
        lo, hi = lo - 1.0, hi + 1.0
    nan_c = inf_c = 0.0
    mean_v = total_v / n
    if not (math.isfinite(total_v) and math.isfinite(sq_v)):
        # Rare path (a second crossing): a non-finite sum means NaN / inf may be present.
        nan_c, inf_c, nnz_v = (float(v) for v in torch.stack(
            (torch.isnan(flat).sum(), torch.isinf(flat).sum(),
             torch.count_nonzero(flat))).tolist())
        centered = math.nan
    else:
        centered = sq_v - total_v * mean_v  # sum((x - mean)^2), from one pass
        if centered < 1e-3 * sq_v:
            # |mean| >> std: the subtraction lost digits (float32 sums); redo it in two
            # passes. Rare for activations, so it costs a second crossing only then.
            centered = torch.linalg.vector_norm(flat - mean_v).item() ** 2
    std_v = math.sqrt(max(centered, 0.0) / (n - 1)) if n > 1 else 0.0
    if centered != centered:
        std_v = math.nan
    norm_v = math.sqrt(sq_v) if sq_v == sq_v and sq_v >= 0 else math.nan
    return {
        "mean": mean_v, "std": std_v, "min": min_v, "max": max_v, "norm": norm_v,
        "zeros": (n - nnz_v) / n, "nan": nan_c, "inf": inf_c,
        "hist": {"min": lo, "max": hi, "counts": [int(c) for c in vals[7:]]},
    }


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
    when the gradient arrives (before the update); being a full pass over the weights
    it is recorded on watched steps at most once every ``param_every`` steps.

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
        self._handles: list[Any] = []
        self._attached = False
        self._active: int | None = None  # the watched step being collected
        self._acts: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, int] = {}
        self._pass_done = False
        self._grads: dict[str, Any] = {}
        self._samples: _Samples | None = None
        self._pnorm: dict[str, Any] = {}
        self._gbuf: dict[str, Any] = {}  # reused 0-d result tensors, see _norm_into
        self._scratch: dict[Any, Any] = {}  # reused work buffers of activation_stats
        self._pbuf: dict[str, Any] = {}
        self._on_close: list[Callable[[], None]] = []
        self._key_cache: dict[str, list[tuple[str, str]]] = {}
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
            self._detach()
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
        add = self._handles.append
        for path, module in self._targets:
            add((module or model).register_forward_hook(self._act_hook(path)))
        # Registered last on the root so that the root's own statistics come first.
        add(model.register_forward_hook(self._end_pass))
        if (("gradients" in self.what or "parameters" in self.what)
                and hasattr(torch.Tensor, "register_post_accumulate_grad_hook")):
            for name, p in self._params:
                if p.requires_grad:
                    add(p.register_post_accumulate_grad_hook(self._grad_hook(name)))
        self._attached = True

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._attached = False

    def _end_pass(self, module: Any, args: Any, output: Any) -> None:
        self._pass_done = True

    def _act_hook(self, path: str) -> Callable[..., None]:
        calls = self._calls

        def hook(module: Any, args: Any, output: Any) -> None:
            if self._pass_done or self._active is None:
                return
            k = calls.get(path, 0)
            calls[path] = k + 1
            if k >= self.max_calls:
                return
            try:
                t = _first_float(output)
                stats = (activation_stats(t, self.sample, self.bins, self._scratch)
                         if t is not None else None)
            except Exception as exc:  # statistics must never break the user's training
                self._note_error(path, exc)
                return
            if stats is not None:
                self._acts[act_prefix(path, k)] = stats
        return hook

    def _note_error(self, where: str, exc: BaseException) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{where or '(root)'}: {type(exc).__name__}: {exc}")

    def _grad_hook(self, name: str) -> Callable[[Any], None]:
        grads = "gradients" in self.what
        params = "parameters" in self.what

        def hook(p: Any) -> None:
            if self._active is None or p.grad is None or p.grad.is_sparse:
                return
            # Norms stay on the device until the step is flushed. A later micro-batch
            # overwrites them with the accumulated gradient, which the optimizer sees.
            try:
                if grads:
                    self._grads[name] = _norm_into(self._gbuf, name, p.grad.detach())
                if params and self._want_pnorm:
                    # Here, not at step start: backward has just read this weight, so it
                    # is likely still in cache (measurably cheaper on CPU, 10M model).
                    self._pnorm[name] = _norm_into(self._pbuf, name, p.detach())
            except Exception as exc:  # e.g. an exotic tensor subclass: skip, don't break
                self._note_error(name, exc)
        return hook

    # -- steps ---------------------------------------------------------------------------
    def _begin(self, step: int) -> None:
        self._active = step
        self._acts = {}
        self._calls.clear()
        self._pass_done = False
        self._grads = {}
        self._pnorm = {}
        last = self._last_pnorm_step
        # A parameter norm is a full pass over the weights (as costly as the gradient
        # norms) and changes slowly: record it at most once per `param_every` steps.
        self._want_pnorm = "parameters" in self.what and (
            last is None or step - last >= self.param_every or step < last)
        if self._want_pnorm:
            self._last_pnorm_step = step
        if "parameters" in self.what:
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
        self._active = None
        stats: dict[str, Any] = {}
        keys = self._key_cache
        for prefix, st in self._acts.items():
            names_ = keys.get(prefix)
            if names_ is None:
                names_ = keys[prefix] = [(f"{prefix}/{stat}", stat) for stat in ACT_STATS]
            for key, stat in names_:
                stats[key] = st[stat]
        names: list[str] = []
        tensors: list[Any] = []
        if "gradients" in self.what:
            for name, _ in self._params:
                g = self._grads.get(name)
                if g is not None:
                    names.append(f"grad/{name}/norm")
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
            else:  # reuse the buffers (see _norm_into)
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
            # In place in the snapshot buffers (no new allocations, see _norm_into); the
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


def _norm_into(buffers: dict[str, Any], name: str, tensor: Any) -> Any:
    """`vector_norm(tensor)` written into a 0-d tensor reused from step to step.

    Why: results that live from backward until the next step, freshly allocated each
    step, sit between the optimizer's multi-MB temporaries in glibc's heap and fragment
    it, adding page faults to CPU training (see docs/model.md, "Cost"). Reused buffers
    leave the allocator's pattern closer to an unwatched step.
    """
    out = buffers.get(name)
    want = torch.float32 if tensor.dtype not in _FAST else tensor.dtype
    if out is None or out.device != tensor.device or out.dtype != want:
        out = buffers[name] = torch.empty((), device=tensor.device, dtype=want)
    return torch.linalg.vector_norm(tensor, dtype=want, out=out)


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


def _to_floats(tensors: list[Any]) -> list[float]:
    """Python floats of many 0-d tensors, in order: one `.tolist()` per device."""
    devices = {t.device for t in tensors}
    if len(devices) == 1:
        if len({t.dtype for t in tensors}) > 1:
            tensors = [t.double() for t in tensors]
        return torch.stack(tensors).tolist()
    out = [0.0] * len(tensors)
    for device in devices:
        idx = [i for i, t in enumerate(tensors) if t.device == device]
        vals = torch.stack([tensors[i].double() for i in idx]).tolist()
        for i, v in zip(idx, vals):
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

