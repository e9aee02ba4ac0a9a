"""Walk a forward pass's nested arguments and outputs, and give torch ops short names.

The one job: turn what a module or torch function was called with or returned (tensors in
tuples, lists, dicts, dataclasses, Hugging Face outputs) into flat lists of tensors, and a
torch function into its short op name. Used by the graph probe and by the watcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import resolve_name

__all__ = ["flat_tensors", "named_tensors", "op_name", "shapes"]

_MAX_SHAPES = 8  # shapes kept per node side; a cat of 500 tensors doesn't need 500
_MAX_LEAVES = 256  # tensors collected from one nested argument / output structure
_MAX_DEPTH = 6  # nesting depth searched in tuples / dicts / dataclasses

_Tensor = torch.Tensor
_name_cache: dict[Any, tuple[str, bool]] = {}
_DUNDER_NAMES = {
    "getitem": "getitem", "setitem": "setitem", "radd": "add", "rsub": "rsub",
    "rmul": "mul", "rtruediv": "rdiv", "truediv": "div", "rmatmul": "matmul",
    "floordiv": "floor_divide", "rpow": "pow", "neg": "neg", "invert": "bitwise_not",
    "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
}
_STRIP = ("torch.Tensor.", "torch.nn.functional.", "torch._C._nn.", "torch._C._fft.",
          "torch._C._linalg.", "torch._C._special.", "torch._C.", "torch.")


def op_name(func: Any) -> tuple[str, bool]:
    """Short op name (`add`, `linear`, `T`) and whether it mutates its first argument."""
    hit = _name_cache.get(func)
    if hit is not None:
        return hit
    try:
        full = resolve_name(func) or getattr(func, "__qualname__", None) or repr(func)
    except Exception:
        full = repr(func)
    name = full
    for prefix in _STRIP:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.endswith(".__get__"):  # properties: `x.T`, `x.mT`, `x.real`
        name = name[: -len(".__get__")]
    mutates = False
    if name.startswith("__") and name.endswith("__"):
        core = name[2:-2]
        if core.startswith("i") and core[1:] in {"add", "sub", "mul", "truediv", "matmul",
                                                  "floordiv", "pow", "and", "or", "xor"}:
            mutates, core = True, core[1:] + "_"
        mutates = mutates or core == "setitem"
        name = _DUNDER_NAMES.get(core, core)
    elif name.endswith("_") and not name.endswith("__"):
        mutates = True  # add_, masked_fill_, copy_ ...
    _name_cache[func] = (name, mutates)
    return name, mutates


def flat_tensors(obj: Any, out: list, depth: int = 0) -> None:
    """Append every tensor in a nested tuple / list / dict / dataclass structure to `out`."""
    if isinstance(obj, _Tensor):
        out.append(obj)
        return
    if depth > _MAX_DEPTH or len(out) >= _MAX_LEAVES or obj is None:
        return
    if isinstance(obj, (list, tuple)):
        for v in obj:
            flat_tensors(v, out, depth + 1)
    elif isinstance(obj, Mapping):  # dict, OrderedDict, HF ModelOutput / BatchEncoding
        for v in obj.values():
            flat_tensors(v, out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            flat_tensors(getattr(obj, f.name, None), out, depth + 1)


def named_tensors(obj: Any, name: str, out: list, depth: int = 0) -> None:
    """Like `flat_tensors` but with dotted names (`logits`, `0`, `past.1.0`) for inputs/outputs."""
    if isinstance(obj, _Tensor):
        out.append((name, obj))
        return
    if depth > _MAX_DEPTH or len(out) >= _MAX_LEAVES or obj is None:
        return
    join = (lambda k: f"{name}.{k}") if name else str
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            named_tensors(v, join(i), out, depth + 1)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            named_tensors(v, join(k), out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            named_tensors(getattr(obj, f.name, None), join(f.name), out, depth + 1)


def shapes(tensors: list) -> list[list[int]]:
    """The shapes of the first few tensors (a cat of 500 tensors doesn't need 500)."""
    return [list(t.shape) for t in tensors[:_MAX_SHAPES]]
