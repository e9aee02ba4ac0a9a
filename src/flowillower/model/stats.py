"""The statistics maths of `Watcher`: activation, gradient and weight statistics of tensors.

The one job: turn tensors into numbers, fast. No hooks and no scheduling here (those are
`hooks.py` and `schedule.py`; `watcher.py` ties them together).

* Per tensor, five reductions (sum, sum of squares, min, max, non-zeros); NaN / inf
  counts only when the sum is non-finite (a finite sum rules them out). CPU float tensors
  are reduced in numpy on a zero-copy view (a numpy call costs a fraction of a torch op)
  and give Python floats; tensors on other devices are reduced there and cross in one
  `.tolist()`. Histograms are binned in numpy on the CPU.
* Gradient and weight norms: a numpy dot per CPU parameter, one `_foreach_norm`
  elsewhere, whose results stay on the device until `to_floats` crosses them at once.
* `WeightSamples`: fixed samples of every parameter for the update ratio |dw| / |w|.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..values import Checked
from .nested import flat_tensors

__all__ = ["WeightSamples", "activation_stats", "first_float", "numpy_reductions",
           "stats_of", "tensor_norms", "to_floats", "version_of"]

_FAST = (torch.float32, torch.float64)
_SCRATCH_MAX = 1 << 22  # elements; larger activations use a temporary instead
_CHECKED_BINS = 1024  # histograms up to this many bins are logged without re-validation


def version_of(tensor: Any) -> int | None:
    """The tensor's in-place version counter; None where it has none (inference mode)."""
    try:
        return tensor._version
    except (RuntimeError, AttributeError):
        return None


def first_float(output: Any) -> Any:
    """The tensor whose statistics describe a module's output (first floating tensor)."""
    if isinstance(output, torch.Tensor):
        found = [output]
    else:
        found = []
        flat_tensors(output, found)
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
    return stats_of([tensor], sample, bins, scratch)[0]


def stats_of(tensors: list[Any], sample: int, bins: int,
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
            return flat, numpy_reductions(flat, n, scratch)
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


def numpy_reductions(flat: Any, n: int, scratch: dict | None) -> list[float]:
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


class WeightSamples:
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
        """Whether every parameter still has the storage and shape the views were made of."""
        return all(p.data_ptr() == ptr and p.shape == shape
                   for (_, p), (ptr, shape) in zip(self.params, self.ptrs))

    def snapshot(self) -> None:
        """Copy the samples now (the "before" of the next `norms`)."""
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


def tensor_norms(tensors: list[Any]) -> list[Any]:
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


def to_floats(values: list[Any]) -> list[float]:
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
