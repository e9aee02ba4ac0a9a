"""Series names shared by the graph (node -> series links) and the Watcher (no torch here)."""

from __future__ import annotations

__all__ = [
    "ACT_STATS", "PARAM_STATS", "ROOT_NAME", "act_prefix", "act_series", "param_series",
]

# Per-module activation statistics, in the order the Watcher emits them.
ACT_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "norm", "zeros", "nan", "inf", "hist")
# Per-parameter statistics: (prefix, stat) pairs -> "<prefix>/<param name>/<stat>".
PARAM_STATS: tuple[tuple[str, str], ...] = (
    ("grad", "norm"), ("param", "norm"), ("param", "update_ratio"),
)
# The root module has the empty path ""; its series use this name instead.
ROOT_NAME = "(root)"


def act_prefix(path: str, call: int = 0) -> str:
    """`"act/<path>"` for the first call of a module in a step, `"act/<path>#<k>"` after."""
    name = path or ROOT_NAME
    return f"act/{name}" if call == 0 else f"act/{name}#{call}"


def act_series(path: str, call: int = 0) -> list[str]:
    """All activation series names of one module call."""
    prefix = act_prefix(path, call)
    return [f"{prefix}/{s}" for s in ACT_STATS]


def param_series(name: str, trainable: bool = True) -> list[str]:
    """All series names of one parameter (no gradient series for frozen ones)."""
    return [f"{kind}/{name}/{stat}" for kind, stat in PARAM_STATS
            if trainable or kind != "grad"]
