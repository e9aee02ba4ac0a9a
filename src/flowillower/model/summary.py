"""A readable, torchinfo-like table of a module tree (pure Python, no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_summary", "format_shape"]


def format_shape(shapes: list | None) -> str:
    """`[[2, 16]]` -> `"[2, 16]"`; several outputs -> `"[2, 16], [2] ..."`."""
    if not shapes:
        return "--"
    text = ", ".join(str(list(s)) for s in shapes[:2])
    return text + (" ..." if len(shapes) > 2 else "")


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_summary(tree: Mapping[str, Any], graph: Mapping[str, Any] | None = None, *,
                   max_depth: int | None = None, width: int = 40) -> str:
    """Table of layers: path (indented by depth), type, output shape, params, trainable.

    Output shapes come from the graph's module calls (first call; ``x2`` marks a module
    called twice); without a graph (no example input) they show as ``--``. Modules deeper
    than ``max_depth`` are left out (their parameters still count in the totals).
    """
    shapes: dict[str, list] = {}
    calls: dict[str, int] = {}
    if graph:
        for n in graph.get("nodes", []):
            if n.get("kind") == "module":
                path = n.get("path") or ""
                calls[path] = calls.get(path, 0) + 1
                if n.get("call", 0) == 0:
                    shapes[path] = n.get("out_shapes") or []
    rows = [("Layer (type)", "Output shape", "Params", "Trainable")]
    for m in tree.get("modules", []):
        depth = m.get("depth", 0)
        if max_depth is not None and depth > max_depth:
            continue
        path = m["path"]
        label = path.rsplit(".", 1)[-1] if path else "(root)"
        name = f"{'  ' * depth}{label} ({m['type']})"
        if len(name) > width:
            name = name[: width - 3] + "..."
        n_calls = calls.get(path, 0)
        shape = format_shape(shapes.get(path)) if path in shapes else "--"
        if n_calls > 1:
            shape += f" x{n_calls}"
        params = m.get("params", 0)
        trainable = m.get("trainable", 0)
        if params == 0:
            flag = "--"
        elif trainable == params:
            flag = "yes"
        elif trainable == 0:
            flag = "no"
        else:
            flag = "partial"
        rows.append((name, shape, f"{params:,}", flag))
    cols = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "-" * (sum(cols) + 6)

    def line(r: tuple[str, ...]) -> str:
        return f"{r[0]:<{cols[0]}}  {r[1]:<{cols[1]}}  {r[2]:>{cols[2]}}  {r[3]}".rstrip()

    out = [rule, line(rows[0]), rule.replace("-", "=")]
    out += [line(r) for r in rows[1:]]
    total = tree.get("params", 0)
    trainable = tree.get("trainable", 0)
    out += [
        rule,
        f"Total params: {total:,} ({_human(total)})",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Params size: {_bytes(tree.get('param_bytes', 0))}"
        + (f"  dtypes: {', '.join(tree['dtypes'])}" if tree.get("dtypes") else "")
        + (f"  devices: {', '.join(tree['devices'])}" if tree.get("devices") else ""),
    ]
    if tree.get("buffers"):
        out.append(f"Buffers: {tree['buffers']:,} elements ({_bytes(tree.get('buffer_bytes', 0))})")
    if graph and graph.get("probed"):
        n_ops = sum(1 for n in graph.get("nodes", []) if n.get("kind") == "op")
        out.append(f"Graph: {len(graph.get('nodes', []))} nodes ({n_ops} ops), "
                   f"{len(graph.get('edges', []))} edges")
    if graph and graph.get("error"):
        where = f" in {graph['error_path'] or '(root)'}" if graph.get("error_path") is not None else ""
        out.append(f"Probe failed{where}: {graph['error']}")
    out.append(rule)
    return "\n".join(out)
