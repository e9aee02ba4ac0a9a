"""Capture a PyTorch model's data-flow graph with one probe forward pass.

The one job: run the probe (hooks on every module, `recorder.GraphRecorder` as the torch
function mode, eval mode and no_grad, the training flags restored after) and assemble the
stored graph dict; optionally summarise `torch.export` in a bounded worker thread.

Why a probe and not torch.fx / jit.trace / torch.export: those fail on an ordinary Python
`if`, on Hugging Face models, or silently bake in one branch (see docs/model.md). A real
forward pass with forward pre/post hooks on every module (module calls, keyed by path and
call index) and a `TorchFunctionMode` that files every torch function / tensor method
under the innermost active module call sees exactly what ran.

The stored graph is op level: edges connect *atomic* nodes (ops, inputs, outputs) and
every atomic node names the module call it ran in (`group`). Module calls are compound
nodes. `collapse()` derives the module-level view (the default) or any depth from it.
"""

from __future__ import annotations

import gc
import inspect
import threading
import time
from collections.abc import Mapping
from typing import Any

import torch

from .nested import named_tensors
from .recorder import GraphRecorder, bind_hook, format_error
from .tree import module_tree, short_dtype
from .view import collapse, module_view, op_view

__all__ = ["GRAPH_FORMAT", "capture_graph", "collapse", "module_view", "op_view"]

GRAPH_FORMAT = "flowillower.graph/1"


def _split_input(example_input: Any, kwargs: Mapping[str, Any] | None
                 ) -> tuple[tuple, dict[str, Any]]:
    """tuple -> positional args; Mapping -> keyword args; anything else -> one argument."""
    kw = dict(kwargs or {})
    if example_input is None:
        return (), kw
    if isinstance(example_input, tuple):
        return example_input, kw
    if isinstance(example_input, Mapping) and not isinstance(example_input, torch.Tensor):
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
                if isinstance(val, torch.Tensor):
                    entry["shape"] = list(val.shape)
                    entry["dtype"] = short_dtype(val.dtype)
                nodes.append(entry)
                if len(nodes) >= max_nodes:
                    box["truncated"] = True
                    break
            box.update(ok=True, nodes=nodes)
        except BaseException as exc:  # export fails in many ways; record why
            box.update(ok=False, reason=format_error(exc))
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

    rec = GraphRecorder(tree, max_nodes)
    modes = [(m, m.training) for m in model.modules()]
    handles = []
    # The probe allocates thousands of small dicts: with torch loaded a full collection
    # takes ~0.1 s, so pause the cyclic GC (the recorder creates no cycles) while probing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(
                bind_hook(rec.pre_hook, path), with_kwargs=True))
            handles.append(module.register_forward_hook(
                bind_hook(rec.post_hook, path), with_kwargs=True))
        model.eval()  # no dropout, no batch-norm statistic updates from the probe
        for name, value in _input_names(model, args, kw):
            leaves: list = []
            named_tensors(value, name, leaves)
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
            graph["error"] = format_error(exc)
            graph["error_path"] = rec.stack[-1]["path"] if rec.stack else None
        if graph["error"] is None:
            leaves = []
            named_tensors(output, "", leaves)
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
