"""Model structure, data-flow graph and training statistics (needs torch only when used).

Everything is re-exported lazily: ``import flowillower.model`` does not import torch;
``format_summary``, ``collapse`` and the views work on stored graphs without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .api import log_model, unwatch, watch
    from .graph import GRAPH_FORMAT, capture_graph
    from .stats import activation_stats
    from .summary import format_summary
    from .tree import module_tree
    from .view import collapse, module_view, op_view
    from .watcher import Watcher, watcher_of

_EXPORTS = {
    "module_tree": "tree",
    "capture_graph": "graph",
    "GRAPH_FORMAT": "graph",
    "Watcher": "watcher",
    "activation_stats": "stats",
    "unwatch": "api",
    "watcher_of": "watcher",
    "watch": "api",
    "log_model": "api",
    "format_summary": "summary",
    "collapse": "view",
    "module_view": "view",
    "op_view": "view",
}

__all__ = [
    "GRAPH_FORMAT", "Watcher", "activation_stats", "capture_graph", "collapse",
    "format_summary", "log_model", "module_tree", "module_view", "op_view", "unwatch",
    "watch", "watcher_of",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
