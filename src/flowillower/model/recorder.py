"""Record the nodes and edges of one probe forward pass (the graph probe's recorder).

The one job: a `TorchFunctionMode` plus forward pre/post hook targets that file every
module call and every torch function / tensor method under the innermost active module
call, connecting them by the tensors that flow between them. Tensors are tracked by
`id()` and kept alive until the probe ends, so a freed tensor's id can't be reused.
`graph.capture_graph` drives it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .keys import act_series, param_series
from .nested import flat_tensors, op_name, shapes
from .tree import short_dtype

__all__ = ["GraphRecorder", "bind_hook", "format_error"]

_ERROR_MAX = 2000

class GraphRecorder(TorchFunctionMode):
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
            "in_shapes": shapes(ins), "out_shapes": shapes(outs),
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
            flat_tensors(out, outs)
            name, mutates = op_name(func)
            if not outs and mutates and args and isinstance(args[0], torch.Tensor):
                outs = [args[0]]  # x[i] = v, x += 1: the mutated tensor is the output
            if not outs:
                return out  # size(), dim(), .dtype, .grad_fn: metadata, not data flow
            ins: list = []
            flat_tensors(args, ins)
            if kwargs:
                flat_tensors(kwargs, ins)
            self.add_op(name, ins, outs)
        except Exception as exc:  # recording must never break the model's forward
            self.internal_error = self.internal_error or format_error(exc)
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
            flat_tensors(args, ins)
            flat_tensors(kwargs, ins)
            node = {
                "id": nid, "kind": "module", "path": path, "call": k,
                "type": type(module).__name__, "params": self.params.get(path, 0),
                "parent": parent["path"] if parent else None,
                "group": parent["id"] if parent else None,
                "in_shapes": shapes(ins), "out_shapes": [], "dtype": None,
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
            flat_tensors(output, outs)
            node["out_shapes"] = shapes(outs)
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


def format_error(exc: BaseException) -> str:
    """`Type: message` of an exception, cut to a bounded length for the stored graph."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 3] + "..."


def bind_hook(method: Any, path: str) -> Any:
    """A module hook calling `method(path, ...)` that records, never raises, any error."""
    rec = method.__self__

    def hook(*a: Any) -> None:
        try:
            method(path, *a)
        except Exception as exc:  # recording must never break the model's forward
            rec.busy = False
            rec.internal_error = rec.internal_error or format_error(exc)
    return hook
