"""Data-flow graph of a PyTorch model from one probe forward pass.

Why a probe and not torch.fx / jit.trace / torch.export: those fail on an ordinary Python
`if`, on Hugging Face models, or silently bake in one branch (see docs/model.md). A real
forward pass with

* forward pre/post hooks on every module (module calls, keyed by path and call index), and
* a `TorchFunctionMode` that files every torch function / tensor method under the
  innermost active module call (residual adds, `cat`, reshapes, attention arithmetic),

sees exactly what ran. Tensors are tracked by `id()`; every tracked tensor is kept alive
until the probe ends, so a freed tensor's id can't be reused by a new one (aliasing).

The stored graph is op level: edges connect *atomic* nodes (ops, inputs, outputs) and
every atomic node names the module call it ran in (`group`). Module calls are compound
nodes. `collapse()` derives the module-level view (the default) or any depth from it.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import threading
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name

from .keys import act_series, param_series
from .tree import module_tree, short_dtype
from .view import collapse, module_view, op_view

__all__ = ["GRAPH_FORMAT", "capture_graph", "collapse", "module_view", "op_view"]

GRAPH_FORMAT = "flowillower.graph/1"
_MAX_SHAPES = 8  # shapes kept per node side; a cat of 500 tensors doesn't need 500
_MAX_LEAVES = 256  # tensors collected from one nested argument / output structure
_MAX_DEPTH = 6  # nesting depth searched in tuples / dicts / dataclasses
_ERROR_MAX = 2000

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


def _op_name(func: Any) -> tuple[str, bool]:
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


def _flat(obj: Any, out: list, depth: int = 0) -> None:
    """Append every tensor in a nested tuple / list / dict / dataclass structure to `out`."""
    if isinstance(obj, _Tensor):
        out.append(obj)
        return
    if depth > _MAX_DEPTH or len(out) >= _MAX_LEAVES or obj is None:
        return
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _flat(v, out, depth + 1)
    elif isinstance(obj, Mapping):  # dict, OrderedDict, HF ModelOutput / BatchEncoding
        for v in obj.values():
            _flat(v, out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _flat(getattr(obj, f.name, None), out, depth + 1)


def _named(obj: Any, name: str, out: list, depth: int = 0) -> None:
    """Like `_flat` but with dotted names (`logits`, `0`, `past.1.0`) for inputs/outputs."""
    if isinstance(obj, _Tensor):
        out.append((name, obj))
        return
    if depth > _MAX_DEPTH or len(out) >= _MAX_LEAVES or obj is None:
        return
    join = (lambda k: f"{name}.{k}") if name else str
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _named(v, join(i), out, depth + 1)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _named(v, join(k), out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _named(getattr(obj, f.name, None), join(f.name), out, depth + 1)


def _shapes(tensors: list) -> list[list[int]]:
    return [list(t.shape) for t in tensors[:_MAX_SHAPES]]


def _split_input(example_input: Any, kwargs: Mapping[str, Any] | None
                 ) -> tuple[tuple, dict[str, Any]]:
    """tuple -> positional args; Mapping -> keyword args; anything else -> one argument."""
    kw = dict(kwargs or {})
    if example_input is None:
        return (), kw
    if isinstance(example_input, tuple):
        return example_input, kw
    if isinstance(example_input, Mapping) and not isinstance(example_input, _Tensor):
        return (), {**{str(k): v for k, v in example_input.items()}, **kw}
    return (example_input,), kw


def _input_names(model: Any, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """Pair each forward argument with its parameter name where the signature allows."""
    try:
        bound = inspect.signature(model.forward).bind_partial(*args, **kwargs)
        pairs = list(bound.arguments.items())
    except (TypeError, ValueError):
        pairs = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    return pairs


class _Recorder(TorchFunctionMode):
    """Collects nodes and edges during the probe. Not reusable across probes."""

    def __init__(self, tree: dict[str, Any], max_nodes: int) -> None:
        super().__init__()
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self._edge_keys: set[tuple] = set()
        self.producer: dict[int, str] = {}  # id(tensor) -> atomic node id
        self.keep: list[Any] = []  # keeps tracked tensors alive: ids must not alias
        self.group_of: dict[str, str | None] = {}  # node id -> enclosing module call id
        self.stack: list[dict[str, Any]] = []  # module calls in progress, innermost last
        self.calls: dict[str, int] = {}
        self.n_ops = 0
        self.max_nodes = max_nodes
        self.truncated = False
        self.busy = False  # set while our own hook code runs: don't record its tensor calls
        self.recording = False
        self.internal_error: str | None = None
        info = {m["path"]: m for m in tree["modules"]}
        self.params = {p: m["params"] for p, m in info.items()}
        self.series: dict[str, list[str]] = {}
        for path, m in info.items():
            names: list[str] = []
            for p in m["parameters"]:
                if "tied" not in p:  # series are named after a parameter's first name
                    full = f"{path}.{p['name']}" if path else p["name"]
                    names += param_series(full, p["trainable"])
            self.series[path] = names
        self.leaves = {p for p, m in info.items() if not m["children"]}

    # -- nodes and edges -------------------------------------------------------------
    def _edge(self, tensor: Any, dst: str) -> None:
        src = self.producer.get(id(tensor))
        if src is None or src == dst:
            return
        shape = tuple(tensor.shape)
        dtype = short_dtype(tensor.dtype)
        key = (src, dst, shape, dtype)
        if key not in self._edge_keys:
            self._edge_keys.add(key)
            self.edges.append({"src": src, "dst": dst, "shape": list(shape), "dtype": dtype})

    def _produce(self, tensor: Any, nid: str) -> None:
        self.producer[id(tensor)] = nid
        self.keep.append(tensor)

    def _full(self) -> bool:
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
            return True
        return False

    def add_op(self, name: str, ins: list, outs: list) -> str | None:
        if self._full():
            return None
        group = self.stack[-1] if self.stack else None
        if group is not None and group["id"] is None:
            return None
        nid = f"o{self.n_ops}"
        self.n_ops += 1
        self.nodes.append({
            "id": nid, "kind": "op", "path": None, "call": None, "type": name, "params": 0,
            "parent": group["path"] if group else None,
            "group": group["id"] if group else None,
            "in_shapes": _shapes(ins), "out_shapes": _shapes(outs),
            "dtype": short_dtype(outs[0].dtype) if outs else None, "series": [],
        })
        self.group_of[nid] = group["id"] if group else None
        for t in ins:
            self._edge(t, nid)
        for t in outs:
            self._produce(t, nid)
        return nid

    def _inside(self, nid: str, call_id: str) -> bool:
        g = self.group_of.get(nid)
        while g is not None:
            if g == call_id:
                return True
            g = self.group_of.get(g)
        return False

    # -- TorchFunctionMode -------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.busy or not self.recording:
            return out
        # Inside this handler the mode is off, so `.shape` etc. below aren't re-intercepted.
        try:
            outs: list = []
            _flat(out, outs)
            name, mutates = _op_name(func)
            if not outs and mutates and args and isinstance(args[0], _Tensor):
                outs = [args[0]]  # x[i] = v, x += 1: the mutated tensor is the output
            if not outs:
                return out  # size(), dim(), .dtype, .grad_fn: metadata, not data flow
            ins: list = []
            _flat(args, ins)
            if kwargs:
                _flat(kwargs, ins)
            self.add_op(name, ins, outs)
        except Exception as exc:  # recording must never break the model's forward
            self.internal_error = self.internal_error or _format_error(exc)
        return out

    # -- module hooks ------------------------------------------------------------------
    def pre_hook(self, path: str, module: Any, args: tuple, kwargs: dict) -> None:
        if not self.recording:
            return
        self.busy = True
        try:
            if self._full():  # keep the stack balanced for post_hook, record nothing
                self.stack.append({"id": None, "path": path})
                return
            k = self.calls.get(path, 0)
            self.calls[path] = k + 1
            parent = self.stack[-1] if self.stack else None
            nid = f"m:{path}:{k}"
            ins: list = []
            _flat(args, ins)
            _flat(kwargs, ins)
            node = {
                "id": nid, "kind": "module", "path": path, "call": k,
                "type": type(module).__name__, "params": self.params.get(path, 0),
                "parent": parent["path"] if parent else None,
                "group": parent["id"] if parent else None,
                "in_shapes": _shapes(ins), "out_shapes": [], "dtype": None,
                "series": (act_series(path, k) if path in self.leaves else [])
                + self.series.get(path, []),
            }
            self.nodes.append(node)
            self.group_of[nid] = node["group"]
            self.stack.append(node)
        finally:
            self.busy = False

    def post_hook(self, path: str, module: Any, args: tuple, kwargs: dict, output: Any
                  ) -> None:
        if not self.recording:
            return
        self.busy = True
        try:
            node = None
            while self.stack:  # pop to this call (robust if a nested hook was skipped)
                top = self.stack.pop()
                if top["path"] == path:
                    node = top
                    break
            if node is None or node["id"] is None:
                return
            outs: list = []
            _flat(output, outs)
            node["out_shapes"] = _shapes(outs)
            node["dtype"] = short_dtype(outs[0].dtype) if outs else None
            for t in outs:
                src = self.producer.get(id(t))
                if src is not None and self._inside(src, node["id"]):
                    continue
                # The module returned a tensor it did not compute (nn.Identity, returning
                # an input, a parameter or a buffer): add a pass-through op inside the call
                # so the call is on the data path.
                self.stack.append(node)
                try:
                    self.add_op("identity" if src is not None else "tensor", [t], [t])
                finally:
                    self.stack.pop()
        finally:
            self.busy = False

    def add_io(self, kind: str, name: str, tensor: Any) -> None:
        nid = f"{'in' if kind == 'input' else 'out'}:{name}"
        shape = [list(tensor.shape)]
        self.nodes.append({
            "id": nid, "kind": kind, "path": None, "call": None, "name": name,
            "type": "Tensor", "params": 0, "parent": None, "group": None,
            "in_shapes": [] if kind == "input" else shape,
            "out_shapes": shape if kind == "input" else [],
            "dtype": short_dtype(tensor.dtype), "series": [],
        })
        self.group_of[nid] = None
        if kind == "input":
            self._produce(tensor, nid)
        else:
            self._edge(tensor, nid)


def _format_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 3] + "..."


def _export_summary(model: Any, args: tuple, kwargs: dict, timeout: float,
                    max_nodes: int) -> dict[str, Any]:
    """Try `torch.export.export` in a worker thread; never raises, never waits > timeout."""
    box: dict[str, Any] = {}

    def work() -> None:
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                program = torch.export.export(model, args, kwargs=kwargs or None)
            nodes = []
            for n in program.graph.nodes:
                if n.op not in ("placeholder", "call_function", "output"):
                    continue
                val = n.meta.get("val")
                entry: dict[str, Any] = {
                    "name": n.name, "op": n.op,
                    "target": n.target if isinstance(n.target, str) else str(n.target),
                    "args": [a.name for a in n.all_input_nodes],
                }
                if isinstance(val, _Tensor):
                    entry["shape"] = list(val.shape)
                    entry["dtype"] = short_dtype(val.dtype)
                nodes.append(entry)
                if len(nodes) >= max_nodes:
                    box["truncated"] = True
                    break
            box.update(ok=True, nodes=nodes)
        except BaseException as exc:  # export fails in many ways; record why
            box.update(ok=False, reason=_format_error(exc))
        box["seconds"] = round(time.perf_counter() - t0, 3)

    thread = threading.Thread(target=work, name="flowillower-export", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # torch.export can't be interrupted; the daemon thread finishes in the background.
        return {"ok": False, "reason": f"timed out after {timeout:g} s", "seconds": timeout}
    return box


def capture_graph(model: Any, example_input: Any = None, *,
                  kwargs: Mapping[str, Any] | None = None, export: bool = False,
                  export_timeout: float = 30.0, max_nodes: int = 20000) -> dict[str, Any]:
    """Record `model`'s data-flow graph with one probe forward pass (format in docs/model.md).

    ``example_input``: a tuple is passed as positional arguments, a mapping as keyword
    arguments, anything else as the single argument; ``kwargs`` adds keyword arguments.
    With ``example_input=None`` and no ``kwargs`` no probe runs (tree and hierarchy only).
    The probe runs under ``torch.no_grad()`` in eval mode; every module's training flag is
    restored afterwards. An exception inside the model is caught and stored in ``"error"``
    (with the partial graph up to that point). ``export=True`` also tries
    ``torch.export.export`` for at most ``export_timeout`` seconds. At most ``max_nodes``
    nodes are recorded (``"truncated": true`` beyond that).
    """
    t0 = time.perf_counter()
    tree = module_tree(model)
    graph: dict[str, Any] = {
        "format": GRAPH_FORMAT,
        "root": type(model).__name__,
        "nodes": [],
        "edges": [],
        "hierarchy": {m["path"]: m["children"] for m in tree["modules"]},
        "tree": tree,
        "probed": False,
        "truncated": False,
        "error": None,
        "error_path": None,
        "export": None,
        "seconds": 0.0,
    }
    args, kw = _split_input(example_input, kwargs)
    if not args and not kw:
        graph["seconds"] = round(time.perf_counter() - t0, 4)
        return graph

    rec = _Recorder(tree, max_nodes)
    modes = [(m, m.training) for m in model.modules()]
    handles = []
    # The probe allocates thousands of small dicts: with torch loaded a full collection
    # takes ~0.1 s, so pause the cyclic GC (the recorder creates no cycles) while probing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(
                _bind(rec.pre_hook, path), with_kwargs=True))
            handles.append(module.register_forward_hook(
                _bind(rec.post_hook, path), with_kwargs=True))
        model.eval()  # no dropout, no batch-norm statistic updates from the probe
        for name, value in _input_names(model, args, kw):
            leaves: list = []
            _named(value, name, leaves)
            for leaf_name, tensor in leaves:
                rec.add_io("input", leaf_name, tensor)
        graph["probed"] = True
        output = None
        try:
            with torch.no_grad(), rec:
                rec.recording = True
                try:
                    output = model(*args, **kw)
                finally:
                    rec.recording = False
        except Exception as exc:
            graph["error"] = _format_error(exc)
            graph["error_path"] = rec.stack[-1]["path"] if rec.stack else None
        if graph["error"] is None:
            leaves = []
            _named(output, "", leaves)
            for leaf_name, tensor in leaves:
                rec.add_io("output", leaf_name or "output", tensor)
        if export:
            graph["export"] = _export_summary(model, args, kw, export_timeout, max_nodes)
    finally:
        for h in handles:
            h.remove()
        for module, training in modes:
            module.training = training
        if gc_was_enabled:
            gc.enable()
    graph["nodes"] = rec.nodes
    graph["edges"] = rec.edges
    graph["truncated"] = rec.truncated
    if rec.internal_error:
        graph["internal_error"] = rec.internal_error
    rec.keep.clear()
    graph["seconds"] = round(time.perf_counter() - t0, 4)
    return graph


def _bind(method: Any, path: str) -> Any:
    rec = method.__self__

    def hook(*a: Any) -> None:
        try:
            method(path, *a)
        except Exception as exc:  # recording must never break the model's forward
            rec.busy = False
            rec.internal_error = rec.internal_error or _format_error(exc)
    return hook
