"""The runs table's columns and cells: which columns exist, how a cell reads a row,
how values sort, which metrics are better low and which are watch statistics.

Pure functions over index rows (dicts), shared by the server's table queries
(`store_view.py`) and the JSON API; the static export's `local.js` mirrors them.
"""

from __future__ import annotations

import math
import re
from typing import Any

Row = dict[str, Any]

RUN_FIELDS = ("name", "status", "created", "duration", "tags", "notes", "id", "author",
              "host", "origin", "git_branch", "project")
# Field columns a fresh table shows; the user picks others from the column menu.
DEFAULT_FIELDS = ("status", "name", "created", "duration", "tags", "notes")
# Who made a run, where, and where it came from: hidden like the other details while
# they tell no run apart, shown once they do (two authors or hosts, a pulled run).
WHO_FIELDS = ("author", "host")
STAT_PREFIXES = ("last", "best", "min", "max", "count")
# Statistic series of `fw.watch` are many per run: listed, but hidden by default.
_WATCH_PREFIXES = ("act/", "grad/", "param/")
_LOWER_IS_BETTER = re.compile(r"loss|err|ppl|perplex|mse|mae|nll|wer|cer|latency|time|"
                              r"regret|dist|div", re.I)


def lower_is_better(metric: str) -> bool:
    """Whether a metric's best value is its minimum (losses, errors) or maximum."""
    return bool(_LOWER_IS_BETTER.search(metric))


def metric_best(stats: dict[str, Any], name: str) -> Any:
    """A metric's best value: its minimum or maximum (see `lower_is_better`)."""
    return stats.get("min") if lower_is_better(name) else stats.get("max")


def cell(row: Row, key: str) -> Any:
    """The value of a table column (`name`, `arg:lr`, `last:loss`, `best:acc`...)."""
    if key in RUN_FIELDS or key == "hidden":
        return row.get(key)
    kind, _, name = key.partition(":")
    if kind == "arg":
        return row["args"].get(name)
    stats = row["metrics"].get(name)
    if stats is None or kind not in STAT_PREFIXES:
        return None
    if kind == "best":
        return metric_best(stats, name)
    return stats.get(kind)


def sort_key(value: Any) -> tuple:
    """Total order over mixed values: numbers < strings < others; missing sorts last."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (0, value, "") if not math.isnan(value) else (2, 0, "")
    if isinstance(value, str):
        return (1, 0, value.lower())
    return (2, 0, str(value))


def hashable(value: Any) -> Any:
    """A set-able stand-in for a value (lists, dicts and NaN compare by their text)."""
    if isinstance(value, (list, dict)):
        return repr(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def is_chartable(stats: dict[str, Any]) -> bool:
    """Whether a metric's values are numbers (a chart and table column)."""
    return stats.get("kind") in ("float", "int")


def is_watch(name: str, stats: dict[str, Any] | None = None) -> bool:
    """Per-module statistics of `fw.watch` (role "watch", or their key prefixes)."""
    return bool(stats and stats.get("role") == "watch") or name.startswith(_WATCH_PREFIXES)


def _telling_fields(rows: list[Row]) -> set[str]:
    """Of author, host and origin, the ones worth a column by default for `rows`."""
    out = {f for f in WHO_FIELDS if len({r.get(f) for r in rows}) > 1}
    return out | ({"origin"} if any(r.get("origin") for r in rows) else set())


def table_columns(rows: list[Row]) -> list[dict[str, Any]]:
    """Every column of `rows`, with the ones constant across them flagged (to fold)."""
    arg_vals: dict[str, set] = {}
    arg_count: dict[str, int] = {}
    metric_last: dict[str, set] = {}
    metric_count: dict[str, int] = {}
    replayed: set[str] = set()
    watch: set[str] = set()
    for r in rows:
        for name, value in r["args"].items():
            vals = arg_vals.setdefault(name, set())
            if len(vals) < 2:
                vals.add(hashable(value))
            arg_count[name] = arg_count.get(name, 0) + 1
        for name, stats in r["metrics"].items():
            if not is_chartable(stats):
                continue
            vals = metric_last.setdefault(name, set())
            if len(vals) < 2:
                vals.add(hashable(stats.get("last")))
            metric_count[name] = metric_count.get(name, 0) + 1
            if stats.get("replayed"):
                replayed.add(name)
            if is_watch(name, stats):
                watch.add(name)
    n = len(rows)
    cols: list[dict[str, Any]] = []
    telling = _telling_fields(rows)
    for f in RUN_FIELDS:
        cols.append({"key": f, "label": f.replace("git_", ""), "group": "run",
                     "constant": False, "visible": f in DEFAULT_FIELDS or f in telling})
    for name in sorted(arg_vals):
        constant = n > 1 and len(arg_vals[name]) == 1 and arg_count[name] == n
        col = {"key": f"arg:{name}", "label": name, "group": "args",
               "constant": constant, "count": arg_count[name], "visible": True}
        if constant:
            col["value"] = next(r["args"][name] for r in rows if name in r["args"])
        cols.append(col)
    metric_names = sorted(metric_count, key=lambda m: (m in watch, -metric_count[m], m))
    shown = 0
    for name in metric_names:
        visible = name not in watch and shown < 12
        shown += visible
        constant = n > 1 and len(metric_last[name]) == 1 and metric_count[name] == n
        for stat in ("last", "best"):
            col = {"key": f"{stat}:{name}", "label": f"{name} ({stat})",
                   "group": "metrics", "metric": name, "stat": stat,
                   "constant": constant and stat == "last", "visible": visible,
                   "count": metric_count[name], "replayed": name in replayed,
                   "goal": "min" if lower_is_better(name) else "max",
                   "watch": name in watch}
            if col["constant"]:  # the folded "same in every run" line shows it
                col["value"] = next(r["metrics"][name].get("last") for r in rows
                                    if name in r["metrics"])
            cols.append(col)
    return cols
