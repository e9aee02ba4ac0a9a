"""`flowillower ls --group-by NAME`: how many runs share each value of NAME.

NAME is resolved like a filter's names, against the runs being grouped (`queries.names`):
a run field (author, host, origin, project, status, ...), an arg or a metric's last value,
with the same "did you mean" answer when it names nothing. `day`, `week` and `month`
(also spelled `created.day`, ...) group by the local date the runs started, unless the
runs have an arg or metric of that name. A list value (tags) counts the run once per item.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

import click

from ..queries.filters import FilterNameError
from ..queries.names import MISSING, Vocabulary, resolve_name
from .common import STATUS_STYLE, fmt_time, fmt_value, print_json, print_table

Row = dict[str, Any]
PERIODS = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m"}
_STATUS_ORDER = ("success", "running", "failed", "killed", "lost")


def _period(fmt: str) -> Callable[[Row], Any]:
    def value(row: Row) -> Any:
        created = row.get("created")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            return None
        try:
            return dt.datetime.fromtimestamp(created).strftime(fmt)
        except (OverflowError, OSError, ValueError):
            return None

    return value


def group_value(rows: list[Row], name: str) -> tuple[str, Callable[[Row], Any]]:
    """How `name` reads a row for grouping, and one line saying how it resolved.
    Raises `FilterNameError` for a name the runs don't have (or have two ways)."""
    base, _, period = name.rpartition(".")
    if base == "created" and period in PERIODS:
        return f"`{name}` → start {period} (local time)", _period(PERIODS[period])
    vocab = Vocabulary.from_rows(rows)
    if name in PERIODS and name not in vocab.args and name not in vocab.metrics:
        return f"`{name}` → start {name} (local time)", _period(PERIODS[name])
    use = resolve_name(name, vocab)
    if not use.ok:
        raise FilterNameError(use.describe(), [use])
    return use.describe(), use.getter()


def _keys(value: Any) -> list[Any]:
    """The group(s) a value counts in: each item of a list, text for other objects."""
    if value is MISSING or value is None:
        return [None]
    if isinstance(value, list):
        return [k for item in value for k in _keys(item)] or [None]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True, default=str)]
    if isinstance(value, float) and math.isnan(value):
        return ["NaN"]
    return [value]


def count_groups(rows: list[Row], value: Callable[[Row], Any]) -> list[dict[str, Any]]:
    """One entry per value: runs, runs per status, first and last start; largest first."""
    groups: dict[Any, dict[str, Any]] = {}
    for row in rows:
        created = row.get("created")
        for key in _keys(value(row)):
            group = groups.setdefault((type(key).__name__, key), {
                "value": key, "runs": 0, "statuses": {}, "first": None, "last": None})
            group["runs"] += 1
            status = row.get("status") or "?"
            group["statuses"][status] = group["statuses"].get(status, 0) + 1
            if isinstance(created, (int, float)):
                group["first"] = created if group["first"] is None else min(group["first"],
                                                                            created)
                group["last"] = created if group["last"] is None else max(group["last"],
                                                                          created)
    return sorted(groups.values(), key=lambda g: (-g["runs"], g["value"] is None,
                                                  str(g["value"])))


def print_groups(rows: list[Row], name: str, limit: int, as_json: bool) -> None:
    """`ls --group-by NAME`: the groups of `rows` (already filtered), `limit` of them."""
    described, value = group_value(rows, name)
    click.echo(f"group: {described}", err=True)
    groups = count_groups(rows, value)
    shown = groups[:max(limit, 0)]
    if as_json:
        print_json(shown)
        return
    if not shown:
        click.echo("no runs")
        return
    seen = {s for g in shown for s in g["statuses"]}
    statuses = [s for s in _STATUS_ORDER if s in seen] + sorted(seen - set(_STATUS_ORDER))
    headers = [name, "runs", *statuses, "first start", "last start"]
    table = [["-" if g["value"] is None else fmt_value(g["value"]), g["runs"],
              *[g["statuses"].get(s, "") for s in statuses],
              fmt_time(g["first"]), fmt_time(g["last"])] for g in shown]
    styles = {2 + i: (lambda s, st=st: STATUS_STYLE.get(st, "white"))
              for i, st in enumerate(statuses)}
    print_table(headers, table, styles=styles)
    if len(groups) > len(shown):
        click.echo(f"({len(groups) - len(shown)} more group(s); raise --limit)")
