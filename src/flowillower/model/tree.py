"""Static module tree of a PyTorch model: names, types, parameters, buffers.

`module_tree(model)` walks `model.named_modules()` once and returns a JSON-ready dict. It
runs no forward pass, so it works for any model, including ones that fail to run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["module_tree", "short_dtype", "TREE_FORMAT"]

TREE_FORMAT = "flowillower.tree/1"
_EXTRA_MAX = 160  # extra_repr can be long (e.g. custom modules); keep the JSON small


def short_dtype(dtype: Any) -> str:
    """`torch.float32` -> `"float32"` (the form used everywhere in the JSON)."""
    text = str(dtype)
    return text[6:] if text.startswith("torch.") else text


def _tensor_info(name: str, tensor: Any) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(tensor.shape),
        "numel": int(tensor.numel()),
        "dtype": short_dtype(tensor.dtype),
        "device": str(tensor.device),
    }


def module_tree(model: Any) -> dict[str, Any]:
    """Describe `model`'s module hierarchy without running it.

    Returns ``{"format", "root", "params", "trainable", "frozen", "param_bytes",
    "buffers", "buffer_bytes", "dtypes", "devices", "modules": [...]}``. ``modules`` is in
    pre-order (``named_modules()`` order, root first with path ``""``); each entry has
    ``path``, ``type``, ``depth``, ``children`` (full paths), ``params`` / ``trainable``
    (counts over the module and its descendants, each shared parameter counted once),
    ``own_params``, ``parameters`` and ``buffers`` (name, shape, numel, dtype, device;
    parameters add ``trainable`` and ``tied`` -- the first name of a parameter object that
    appears under several names), and ``extra`` (``extra_repr()``, truncated).
    """
    first_name: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first_name.setdefault(id(p), name)

    entries: list[dict[str, Any]] = []
    # Per-module sets of parameter ids below it: tied weights count once per subtree.
    below: dict[str, dict[int, tuple[int, bool]]] = {}
    order: list[tuple[str, Any]] = list(model.named_modules())
    known = {id(m) for _, m in order}
    paths = {p for p, _ in order}
    dtypes: set[str] = set()
    devices: set[str] = set()
    for path, module in order:
        params = []
        own: dict[int, tuple[int, bool]] = {}
        for pname, p in module.named_parameters(recurse=False, remove_duplicate=False):
            full = f"{path}.{pname}" if path else pname
            info = _tensor_info(pname, p)
            info["trainable"] = bool(p.requires_grad)
            canonical = first_name.get(id(p), full)
            if canonical != full:
                info["tied"] = canonical
            params.append(info)
            own[id(p)] = (int(p.numel()), bool(p.requires_grad))
            dtypes.add(info["dtype"])
            devices.add(info["device"])
        buffers = []
        for bname, b in module.named_buffers(recurse=False, remove_duplicate=False):
            info = _tensor_info(bname, b)
            info["persistent"] = bname not in getattr(module, "_non_persistent_buffers_set", ())
            buffers.append(info)
            devices.add(info["device"])
        below[path] = own
        try:
            extra = module.extra_repr()
        except Exception:  # a user's extra_repr must never break logging
            extra = ""
        if len(extra) > _EXTRA_MAX:
            extra = extra[: _EXTRA_MAX - 3] + "..."
        entries.append({
            "path": path,
            "type": type(module).__name__,
            "depth": 0 if not path else path.count(".") + 1,
            # A module registered under two names is listed once, under its first name.
            "children": [cp for cp in (f"{path}.{c}" if path else c
                                       for c, m in module.named_children()
                                       if id(m) in known)
                         if cp in paths],
            "params": 0,
            "trainable": 0,
            "own_params": sum(n for n, _ in own.values()),
            "parameters": params,
            "buffers": buffers,
            "extra": extra,
        })

    # Aggregate bottom-up: children come after their parent in pre-order.
    by_path = {e["path"]: e for e in entries}
    for entry in reversed(entries):
        ids = below[entry["path"]]
        for child in entry["children"]:
            ids.update(below.get(child, {}))
        entry["params"] = sum(n for n, _ in ids.values())
        entry["trainable"] = sum(n for n, t in ids.values() if t)
    root_ids = below.get("", {})
    if "" not in by_path:  # pragma: no cover - named_modules always yields the root
        root_ids = {}
    total = sum(n for n, _ in root_ids.values())
    trainable = sum(n for n, t in root_ids.values() if t)
    param_bytes = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            param_bytes += p.numel() * p.element_size()
    buffer_count = 0
    buffer_bytes = 0
    for b in model.buffers():
        buffer_count += b.numel()
        buffer_bytes += b.numel() * b.element_size()
    return {
        "format": TREE_FORMAT,
        "root": type(model).__name__,
        "params": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "param_bytes": int(param_bytes),
        "buffers": int(buffer_count),
        "buffer_bytes": int(buffer_bytes),
        "dtypes": sorted(dtypes),
        "devices": sorted(devices),
        "modules": entries,
    }
